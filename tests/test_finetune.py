"""Fine-tuning from a model file (--init) and one model for several levels of theory."""
from __future__ import annotations


import ase.io
import numpy as np
import pytest
import torch
import yaml
from ase.calculators.singlepoint import SinglePointCalculator
from typer.testing import CliRunner

import forcefit
from conftest import make_frames, train_and_kill_at_epoch
from forcefit.cli import app
from forcefit.config import ConfigError, build_config
from forcefit.data import batch_from_frames, read_frames
from forcefit.model_file import read_model_file
from forcefit.objectives.terms import SupervisedLoss
from forcefit.training.data_setup import prepare_data
from forcefit.training.run import _build_model, frame_needs

TINY_MODEL = {"options": {"features": 8, "num_layers": 1, "num_basis": 4}}
TINY_TRAINING = {"batch_size": 4, "progress": False, "threads": 1, "lr": 1e-2}
OFFSET = {1: -13.6, 6: -1029.0, 8: -2041.0}  # a DFT-like per-element offset: ~ −4200 eV per ethanol


def _write(path, images):
    ase.io.write(path, images, format="extxyz")
    return path


def _relabel(images, offset=None, force_scale=1.0, level=None):
    """The same geometries at 'another level': energies shifted per element, forces scaled."""
    out = []
    for atoms in images:
        a = atoms.copy()
        e = atoms.get_potential_energy() + sum((offset or {}).get(int(z), 0.0) for z in a.numbers)
        a.calc = SinglePointCalculator(a, energy=e, forces=atoms.get_forces() * force_scale)
        if level:
            a.info["level"] = level
        out.append(a)
    return out


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A small PaiNN trained a few epochs on 'cheap' labels (no offset)."""
    tmp = tmp_path_factory.mktemp("pre")
    path = _write(tmp / "cheap.xyz", make_frames(40, seed=11))
    result = forcefit.train({"data": {"train": str(path), "valid_fraction": 0.25}, "model": TINY_MODEL,
                             "training": {**TINY_TRAINING, "max_epochs": 4}, "out": str(tmp / "run"), "seed": 2})
    return result.model_path


def _accurate(tmp_path, n=16, seed=12):
    return _write(tmp_path / "accurate.xyz", _relabel(make_frames(n, seed=seed), OFFSET, force_scale=1.1))


def _first_loss(config: dict) -> float:
    """The supervised loss of the model a run starts from, on its training frames (what its first step sees)."""
    cfg = build_config(config)
    torch.manual_seed(cfg.seed)
    data = prepare_data(cfg, frame_needs(cfg))
    potential, _ = _build_model(cfg, data, (), torch.float32)
    batch = batch_from_frames(data.train, potential.cutoff)
    potential.eval()
    loss, _ = SupervisedLoss.from_training(cfg.training)(potential(batch), batch)
    return loss.item()


def test_energy_refit_starts_a_large_offset_level_from_a_sensible_loss(tmp_path, pretrained):
    data = {"train": str(_accurate(tmp_path)), "valid_fraction": 0.25}
    base = {"data": data, "model": TINY_MODEL, "training": TINY_TRAINING, "seed": 3}
    scratch = _first_loss(base)
    refit = _first_loss({**base, "finetune": {"init": str(pretrained)}})
    kept = _first_loss({**base, "finetune": {"init": str(pretrained), "reestimate_energy": False}})
    assert refit < 3 * scratch, (refit, scratch)
    assert kept > 100 * scratch  # the file's own E0s are ~4200 eV off: what the refit removes


def test_finetuning_starts_from_the_file_and_a_frozen_backbone_does_not_move(tmp_path, pretrained):
    data = {"train": str(_accurate(tmp_path)), "valid_fraction": 0.25}
    source = read_model_file(pretrained)["state_dict"]
    frozen = forcefit.train({"data": data, "model": TINY_MODEL, "training": {**TINY_TRAINING, "max_epochs": 2, "ema_decay": None},
                             "finetune": {"init": str(pretrained), "mode": "freeze-backbone"}, "out": str(tmp_path / "frozen")})
    state = read_model_file(frozen.model_path)["state_dict"]
    readout = [k for k in state if k.startswith("backbone.readout.")]
    body = [k for k in state if k.startswith("backbone.") and k not in readout]
    assert readout and body
    for key in body:
        assert torch.equal(state[key], source[key]), key
    assert any(not torch.equal(state[k], source[k]) for k in readout)
    # all weights: everything moves, but from the file's weights (one epoch at a small rate stays close to them)
    allw = forcefit.train({"data": data, "model": TINY_MODEL, "training": {**TINY_TRAINING, "max_epochs": 1, "lr": 1e-4, "ema_decay": None},
                           "finetune": {"init": str(pretrained)}, "out": str(tmp_path / "all")})
    moved = read_model_file(allw.model_path)["state_dict"]
    scratch = forcefit.train({"data": data, "model": TINY_MODEL, "training": {**TINY_TRAINING, "max_epochs": 1, "lr": 1e-4, "ema_decay": None},
                              "out": str(tmp_path / "scratch")})
    fresh = read_model_file(scratch.model_path)["state_dict"]
    key = "backbone.embedding.weight"
    assert (moved[key] - source[key]).abs().max() < 0.01 < (fresh[key] - source[key]).abs().max()


def test_readout_reinit_keeps_a_fresh_energy_readout_on_the_files_representation(tmp_path, pretrained, monkeypatch):
    """finetune.readout: reinit — the representation is the file's, the energy readout exactly a fresh initialisation."""
    from forcefit.training import finetune

    base = {"data": {"train": str(_accurate(tmp_path)), "valid_fraction": 0.25}, "model": TINY_MODEL, "training": TINY_TRAINING, "seed": 3}

    def build(readout: str) -> dict:
        cfg = build_config({**base, "finetune": {"init": str(pretrained), "readout": readout}})
        torch.manual_seed(cfg.seed)
        potential, _ = _build_model(cfg, prepare_data(cfg, frame_needs(cfg)), (), torch.float32)
        return {k: v.clone() for k, v in potential.backbone.state_dict().items()}

    kept, reinit = build("keep"), build("reinit")
    monkeypatch.setattr(finetune, "transfer_weights", lambda target, cfg: [])
    fresh = build("keep")  # the same model, seed and data, no weight carried over
    readout = [k for k in kept if k.startswith("readout.")]
    assert readout and len(readout) < len(kept)
    for key in kept:
        expected = fresh[key] if key in readout else kept[key]
        assert torch.equal(reinit[key], expected), key
    assert any(not torch.equal(kept[k], fresh[k]) for k in readout)  # so the comparison above can tell them apart
    with pytest.raises(ConfigError, match="readout"):
        build_config({**base, "finetune": {"init": str(pretrained), "readout": "reset"}})


def test_backbone_lr_puts_the_backbone_in_a_slower_group(tmp_path, pretrained):
    from forcefit.training.finetune import parameter_groups

    cfg = build_config({"data": {"train": str(_accurate(tmp_path)), "valid_fraction": 0.25}, "model": TINY_MODEL,
                        "training": TINY_TRAINING, "finetune": {"init": str(pretrained), "mode": "backbone-lr", "backbone_lr": 0.1}})
    data = prepare_data(cfg, frame_needs(cfg))
    potential, _ = _build_model(cfg, data, (), torch.float32)
    heads, body = parameter_groups(potential, cfg.finetune)
    assert body["lr_factor"] == 0.1 and heads["lr_factor"] == 1.0
    names = {id(p): n for n, p in potential.named_parameters()}
    assert all(names[id(p)].startswith("backbone.readout.") for p in heads["params"])
    assert len(heads["params"]) + len(body["params"]) == len(list(potential.parameters()))


def test_new_elements_get_new_embeddings_or_a_clear_refusal(tmp_path, pretrained):
    images = _relabel(make_frames(12, seed=13), OFFSET)
    for atoms in images:
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        atoms.numbers[-1] = 7  # one H becomes N: an element the file does not know
        atoms.calc = SinglePointCalculator(atoms, energy=e - 13.6 - 1486.0, forces=f)
    path = _write(tmp_path / "with_n.xyz", images)
    base = {"data": {"train": str(path), "valid_fraction": 0.25}, "model": TINY_MODEL, "training": {**TINY_TRAINING, "max_epochs": 1}}
    with pytest.raises(ConfigError, match=r"element\(s\) N that this model file does not know"):
        forcefit.train({**base, "finetune": {"init": str(pretrained), "new_species": "refuse"}, "out": str(tmp_path / "no")})
    result = forcefit.train({**base, "finetune": {"init": str(pretrained)}, "out": str(tmp_path / "yes"),
                             "training": {**TINY_TRAINING, "max_epochs": 1, "lr": 1e-6, "ema_decay": None}})
    model = forcefit.load(result.model_path).model
    assert model.species == [1, 6, 7, 8]
    source = read_model_file(pretrained)["state_dict"]["backbone.embedding.weight"]
    emb = model.backbone.embedding.weight.detach()
    torch.testing.assert_close(emb[[0, 1, 3]], source, atol=1e-4, rtol=0)  # H, C, O carried over (tiny lr)
    assert np.isfinite(result.metrics["forces_mae"])


def test_resume_of_a_finetuning_run_reproduces_the_uninterrupted_one(tmp_path, pretrained):
    data = {"train": str(_accurate(tmp_path, n=20)), "valid_fraction": 0.25}

    def config(name):
        return {"data": data, "model": TINY_MODEL, "training": {**TINY_TRAINING, "max_epochs": 4, "val_interval": 2},
                "finetune": {"init": str(pretrained), "mode": "backbone-lr"}, "out": str(tmp_path / name), "seed": 1}

    full = forcefit.train(config("full"))
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(config("killed")))
    proc = train_and_kill_at_epoch(cfg_path, 2)
    assert proc.returncode == -9, proc.stderr[-2000:]
    resumed = forcefit.train(cfg_path, resume=True)
    a, b = read_model_file(full.model_path)["state_dict"], read_model_file(resumed.model_path)["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def _mixed_levels(tmp_path):
    cheap = _relabel(make_frames(24, seed=14), level="gfn2")
    accurate = _relabel(make_frames(12, seed=15), OFFSET, force_scale=1.1, level="dft")
    return _write(tmp_path / "mixed.xyz", cheap + accurate), _write(tmp_path / "dft_test.xyz", _relabel(make_frames(8, seed=16), OFFSET, 1.1, "dft"))


def test_one_model_for_two_levels_shares_its_backbone_and_round_trips(tmp_path):
    mixed, test = _mixed_levels(tmp_path)
    cfg = {"data": {"train": str(mixed), "valid_fraction": 0.25}, "model": TINY_MODEL,
           "training": {**TINY_TRAINING, "max_epochs": 3}, "levels": {"heads": ["gfn2", "dft"], "predict": "dft"},
           "out": str(tmp_path / "multi")}
    result = forcefit.train(cfg)
    loaded = forcefit.load(result.model_path)
    model = loaded.model
    assert model.levels == ["gfn2", "dft"] and model.default_level == "dft" and loaded.metadata["default_level"] == "dft"
    # one backbone: every parameter once, the energy readout with one output per level
    assert model.backbone.readout[-1].weight.shape[0] == 2
    assert model.e0.shape == (2, 3) and abs(float(model.e0[1, 0] - model.e0[0, 0])) > 5  # per-level E0s
    frames = read_frames(test)
    batch = batch_from_frames(frames, model.cutoff)
    energies = {}
    for level in model.levels:
        b = dict(batch, level=torch.full_like(batch["level"], model.level_index(level)))
        energies[level] = model(b)["energy"].detach()
    torch.testing.assert_close(model(batch)["energy"].detach(), energies["dft"])  # the default level
    assert (energies["dft"] - energies["gfn2"]).abs().min() > 100  # the DFT head carries the offset
    # the calculator and evaluate answer for the level asked
    atoms = ase.io.read(test, 0)
    atoms.calc = forcefit.load(result.model_path, level="gfn2").calculator
    assert atoms.get_potential_energy() == pytest.approx(float(energies["gfn2"][0]), abs=1e-3)
    runner = CliRunner()
    out = {}
    for level in ("gfn2", "dft"):
        res = runner.invoke(app, ["eval", str(result.model_path), str(test), "--level", level, "--json", str(tmp_path / f"{level}.json")])
        assert res.exit_code == 0, res.output
        out[level] = __import__("json").loads((tmp_path / f"{level}.json").read_text())
    assert out["dft"]["energy_mae"] < 0.1 * out["gfn2"]["energy_mae"]
    res = runner.invoke(app, ["eval", str(result.model_path), str(test), "--level", "ccsd"])
    assert res.exit_code == 2 and "level 'ccsd' is not one of this model's levels (gfn2, dft)" in res.output


def test_a_frame_whose_level_has_no_head_is_named(tmp_path):
    mixed, _ = _mixed_levels(tmp_path)
    with pytest.raises(forcefit.data.DataError, match=r"mixed\.xyz, frame 0, field 'level': has level 'gfn2'.*\(dft, ccsd\)"):
        forcefit.train({"data": {"train": str(mixed), "valid_fraction": 0.25}, "model": TINY_MODEL, "training": TINY_TRAINING,
                        "levels": {"heads": ["dft", "ccsd"]}, "out": str(tmp_path / "x")})


def test_finetune_cli_flags(tmp_path, pretrained):
    data = _accurate(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--train", str(data), "--init", str(pretrained), "--finetune", "backbone-lr=0.2",
                              "--max-epochs", "1", "--out", str(tmp_path / "cli"), "--no-progress"])
    assert res.exit_code == 0, res.output
    saved = yaml.safe_load((tmp_path / "cli" / "config.yaml").read_text())
    assert saved["finetune"]["mode"] == "backbone-lr" and saved["finetune"]["backbone_lr"] == 0.2
    res = runner.invoke(app, ["train", "--train", str(data), "--finetune", "freeze-backbone", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "--finetune needs --init" in res.output
    res = runner.invoke(app, ["train", "--train", str(data), "--init", str(pretrained), "--finetune", "backbone-lr=fast",
                              "--out", str(tmp_path / "y")])
    assert res.exit_code == 2 and "must be a number" in res.output
    res = runner.invoke(app, ["train", "--train", str(data), "--init", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "z")])
    assert res.exit_code == 2 and "missing.pt: no such model file" in res.output


def test_format_3_model_files_still_load(tmp_path, pretrained):
    """Before levels, E0s and the shift were stored flat (one level)."""
    payload = torch.load(pretrained, weights_only=False)
    old = dict(payload, format_version=3)
    arch = dict(old["architecture"])
    arch["e0s"] = arch["e0s"]["default"]
    arch["shift"] = arch["shift"]["default"]
    for key in ("levels", "default_level"):
        arch.pop(key)
        old.pop(key)
    old["architecture"] = arch
    state = dict(old["state_dict"])
    state["e0"], state["shift"] = state["e0"][0], state["shift"][0]
    old["state_dict"] = state
    torch.save(old, tmp_path / "v3.pt")
    atoms = ase.io.read(pretrained.parent.parent / "cheap.xyz", 0)
    energies = []
    for path in (pretrained, tmp_path / "v3.pt"):
        atoms.calc = forcefit.load(path).calculator
        energies.append(atoms.get_potential_energy())
    assert energies[0] == pytest.approx(energies[1], abs=1e-9)


def test_a_multi_level_run_reads_every_head_from_a_campaign(tmp_path):
    """A campaign labelled at two levels trains both heads when the run names them (no --level)."""
    from forcefit.labeling.campaign import Campaign

    camp = Campaign(tmp_path / "c.db")
    images = make_frames(16, seed=17)
    camp.add([a.copy() for a in images])
    pytest.importorskip("tblite", reason="labelling the campaign needs tblite (install forcefit[label])")
    from forcefit.labeling import label

    label(camp, "gfn2", progress=False)
    label(camp, "gfn1", progress=False)
    cfg = build_config({"data": {"train": str(tmp_path / "c.db"), "valid_fraction": 0.25}, "levels": {"heads": ["gfn1", "gfn2"]}})
    data = prepare_data(cfg, frame_needs(cfg))
    assert sorted({f.level for f in data.train + data.valid}) == ["gfn1", "gfn2"] and len(data.train) + len(data.valid) == 32
    assert set(data.e0s) == {"gfn1", "gfn2"}
