"""Training end to end: resume after a real kill, DDP on CPU, model file round trip, CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from typer.testing import CliRunner

import forcefit
from conftest import train_and_kill_at_epoch
from forcefit.cli import app
from forcefit.model_file import ModelFileError, load_model, read_model_file

TINY = {"model": {"options": {"features": 8, "num_layers": 1, "num_basis": 4}},
        "training": {"batch_size": 4, "progress": False, "threads": 1, "lr": 1e-2}}


def _config(tmp_path, data, name, **training):
    cfg = {"data": {"train": str(data), "valid_fraction": 0.25}, "model": TINY["model"],
           "training": {**TINY["training"], **training}, "out": str(tmp_path / name), "seed": 1}
    return cfg


def _params(model_path):
    return read_model_file(model_path)["state_dict"]


def test_resume_after_kill_reproduces_uninterrupted_run(tmp_path, ethanol_xyz):
    # validating (and so checkpointing) every 2 epochs: the kill at the start of epoch 2 resumes from epoch 1's end
    full = forcefit.train(_config(tmp_path, ethanol_xyz, "full", max_epochs=4, val_interval=2))
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(tmp_path, ethanol_xyz, "killed", max_epochs=4, val_interval=2)))
    proc = train_and_kill_at_epoch(cfg_path, 2)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (tmp_path / "killed" / "checkpoints" / "last.ckpt").exists()
    assert not (tmp_path / "killed" / "model.pt").exists()
    with pytest.raises(forcefit.training.run.RunExistsError):
        forcefit.train(cfg_path)
    resumed = forcefit.train(cfg_path, resume=True)
    a, b = _params(full.model_path), _params(resumed.model_path)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    assert resumed.metrics["forces_mae"] == pytest.approx(full.metrics["forces_mae"], rel=1e-4)
    # the log keeps the epochs before the kill (Lightning's CSV logger deletes the file when it starts)
    import csv

    def logged(run):
        rows = list(csv.DictReader(open(run.out / "logs" / "metrics.csv")))
        return sorted({int(r["epoch"]) for r in rows}), sorted(int(r["epoch"]) for r in rows if r.get("val_loss"))

    assert logged(resumed) == logged(full) == ([0, 1, 2, 3], [1, 3])
    assert not (resumed.out / "logs" / "metrics.before_resume.csv").exists()


def test_last_checkpoint_follows_every_validation_even_when_the_best_stops_improving(tmp_path, ethanol_xyz, monkeypatch):
    """A run killed on a validation plateau resumes from its latest epoch, not from its best one."""
    import lightning as L

    from forcefit.training.module import ForceFieldModule

    def log_worsening_validation(self, name, value, *args, **kwargs):  # val_loss rises every epoch: epoch 0 stays best
        if name == "val_loss":
            value = torch.tensor(1.0 + self.current_epoch)
        return L.LightningModule.log(self, name, value, *args, **kwargs)

    monkeypatch.setattr(ForceFieldModule, "log", log_worsening_validation)
    result = forcefit.train(_config(tmp_path, ethanol_xyz, "plateau", max_epochs=3, val_interval=1))
    checkpoints = result.out / "checkpoints"
    last = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=False)
    best = torch.load(checkpoints / "best.ckpt", map_location="cpu", weights_only=False)
    assert (best["epoch"], last["epoch"]) == (0, 2)
    assert last["global_step"] > best["global_step"]
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]


def test_sparse_validation_still_validates_the_final_epoch(tmp_path, ethanol_xyz):
    import csv

    from forcefit.training.validation_schedule import validation_interval

    assert validation_interval("auto", 30) == 7 and validation_interval("auto", 950) == 1 and validation_interval(3, 10) == 3
    result = forcefit.train(_config(tmp_path, ethanol_xyz, "sparse", max_epochs=5))  # 30 frames: 'auto' → every 7
    rows = list(csv.DictReader(open(result.out / "logs" / "metrics.csv")))
    validated = sorted({int(r["epoch"]) for r in rows if r.get("val_loss")})
    assert validated == [4]  # only the final epoch, which the best checkpoint must see
    assert all(float(r["structures_per_s"]) > 0 for r in rows if r.get("structures_per_s"))
    every2 = forcefit.train(_config(tmp_path, ethanol_xyz, "every2", max_epochs=5, val_interval=2))
    rows = list(csv.DictReader(open(every2.out / "logs" / "metrics.csv")))
    assert sorted({int(r["epoch"]) for r in rows if r.get("val_loss")}) == [1, 3, 4]


def test_model_file_round_trip_and_clear_errors(tmp_path, ethanol_xyz):
    result = forcefit.train(_config(tmp_path, ethanol_xyz, "rt", max_epochs=1), dens={})
    loaded = forcefit.load(result.model_path)
    meta = loaded.metadata
    assert meta["species"] == [1, 6, 8] and meta["cutoff"] == 5.0 and meta["units"]["energy"] == "eV"
    assert "noise" not in dict(loaded.model.backbone.vector_heads) and not len(loaded.model.aux_heads)  # DeNS head dropped at export
    from ase.io import read

    atoms = read(ethanol_xyz, 0)
    atoms.calc = loaded.calculator
    e = atoms.get_potential_energy()
    again = forcefit.load(result.model_path)
    atoms.calc = again.calculator
    assert atoms.get_potential_energy() == pytest.approx(e, abs=1e-6)

    payload = torch.load(result.model_path, weights_only=False)
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(ModelFileError, match="format 99.*upgrade forcefit"):
        load_model(tmp_path / "future.pt")
    with pytest.raises(ModelFileError, match="training checkpoint"):
        load_model(tmp_path / "rt" / "checkpoints" / "last.ckpt")


def test_ddp_two_processes_on_cpu(tmp_path, ethanol_xyz):
    cfg = _config(tmp_path, ethanol_xyz, "ddp", max_epochs=2, strategy="ddp", devices=2, device="cpu")
    cfg_path = tmp_path / "ddp.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533", "-m", "forcefit.cli",
           "train", "--config", str(cfg_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (tmp_path / "ddp" / "model.pt").exists()
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["n_frames"] == 10


def test_cli_end_to_end(tmp_path, ethanol_xyz):
    runner = CliRunner()
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump({k: v for k, v in TINY.items()}))
    out = tmp_path / "cli"
    r = runner.invoke(app, ["train", "--train", str(ethanol_xyz), "--config", str(cfg_path), "--max-epochs", "2",
                            "--out", str(out), "--test", str(ethanol_xyz), "--seed", "3"])
    assert r.exit_code == 0, r.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["training"]["max_epochs"] == 2 and saved["model"]["options"]["features"] == 8 and saved["seed"] == 3
    for name in ("model.pt", "metrics.json", "parity.png", "learning_curve.png"):
        assert (out / name).stat().st_size > 0, name
    r = runner.invoke(app, ["eval", str(out / "model.pt"), str(ethanol_xyz), "--json", str(tmp_path / "m.json"), "--plot", str(tmp_path / "p.png")])
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    for key in ("n_frames", "energy_mae", "energy_mae_per_atom", "energy_rmse", "forces_mae", "forces_rmse"):
        assert key in metrics and key in metrics["by_config_type"]["md"]
    assert metrics["n_frames"] == 40 and set(metrics["by_config_type"]) == {"md", "rattled"}
    assert (tmp_path / "p.png").stat().st_size > 0
    # resume with a larger epoch budget continues the same run
    cfg_path.write_text(yaml.safe_dump({**TINY, "out": str(out)}))
    r = runner.invoke(app, ["train", "--resume", "--config", str(cfg_path), "--max-epochs", "3"])
    assert r.exit_code == 0, r.output
    assert "--resume continues with" in r.output and "config.yaml" in r.output
    assert yaml.safe_load((out / "config.yaml").read_text())["training"]["max_epochs"] == 3
    assert torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["epoch"] == 2
    # md and eval refuse bad input with one clear line, before any step
    from ase import Atoms
    from ase.io import write

    write(tmp_path / "nacl.xyz", Atoms("NaCl", positions=[[0, 0, 0], [0, 0, 2.4]]))
    for args, message in (
        (["md", str(out / "model.pt"), str(tmp_path / "nacl.xyz"), "--steps", "2"],
         "nacl.xyz, frame 0, field 'numbers': contains element(s) Na (Z=11), Cl (Z=17) that the model does not know"),
        (["md", str(out / "model.pt"), str(ethanol_xyz), "--steps", "2", "--trajectory", str(tmp_path / "t.png")],
         "cannot hold a trajectory"),
        (["eval", str(out / "model.pt"), str(ethanol_xyz), "--batch-size", "0"], "--batch-size"),
    ):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, (args, r.output)
    r = runner.invoke(app, ["md", str(out / "model.pt"), str(ethanol_xyz), "--steps", "3", "--proton-transfer"])
    assert r.exit_code == 0 and "3 steps" in r.output, r.output


@pytest.mark.parametrize("args, message", [
    (["train", "--train", "nope.xyz", "--max-epochs", "1"], "nope.xyz: no such file"),
    (["train", "--max-epochs", "1"], "no training data"),
    (["train", "--train", "X", "--batch-size", "0"], "training.batch_size"),
    (["eval", "missing.pt", "x.xyz"], "missing.pt: no such model file"),
])
def test_cli_errors_are_one_clear_line(tmp_path, args, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2
    assert message in r.output and "Traceback" not in r.output


ACE_TINY = {"name": "equivariant-ace", "options": {"channels": 4, "num_layers": 1, "correlation": 2, "radial_hidden": 8}}


@pytest.mark.parametrize("direct_forces", [False, True])
def test_higher_order_backbone_through_training_export_and_calculator(tmp_path, ethanol_xyz, direct_forces):
    """equivariant-ace with DeNS trains, exports without the noise head, and the calculator matches the model file;
    a plain-trained model has exactly the same parameters, so DeNS costs nothing at MD time."""
    from ase.io import read

    model = {**ACE_TINY, "direct_forces": direct_forces}
    dens_cfg = {**_config(tmp_path, ethanol_xyz, "ace_dens", max_epochs=1), "model": model, "dens": {}}
    plain_cfg = {**_config(tmp_path, ethanol_xyz, "ace_plain", max_epochs=1), "model": model}
    dens, plain = forcefit.train(dens_cfg), forcefit.train(plain_cfg)
    a, b = _params(dens.model_path), _params(plain.model_path)
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    assert not any("noise" in k for k in a)

    loaded = forcefit.load(dens.model_path, dtype=torch.float64)
    assert loaded.metadata["config"]["model"]["name"] == "equivariant-ace"
    assert tuple(loaded.model.backbone.vector_heads) == (("forces",) if direct_forces else ())
    atoms = read(ethanol_xyz, 3)
    atoms.calc = loaded.calculator
    forces = atoms.get_forces()
    assert forces.shape == (9, 3) and torch.isfinite(torch.as_tensor(forces)).all()
    if not direct_forces:  # conservative: forces are −dE/dx of the exported model
        h = 1e-4
        for atom, axis in ((0, 0), (4, 2)):
            shifted = atoms.copy()
            shifted.calc = loaded.calculator
            pos = shifted.get_positions()
            pos[atom, axis] += h
            shifted.set_positions(pos)
            e_plus = shifted.get_potential_energy()
            pos[atom, axis] -= 2 * h
            shifted.set_positions(pos)
            e_minus = shifted.get_potential_energy()
            assert forces[atom, axis] == pytest.approx(-(e_plus - e_minus) / (2 * h), abs=1e-5)


@pytest.mark.parametrize("model, message", [
    ({"name": "nope"}, "unknown model 'nope'; choose one of: equivariant-ace, painn"),
    ({"name": "equivariant-ace", "options": {"chanels": 8}}, "options ['chanels'] are not options of model 'equivariant-ace'"),
    ({"name": "equivariant-ace", "options": {"l_max": 0}}, "model.options: l_max must be ≥ 1"),
])
def test_bad_model_settings_are_one_clear_line(tmp_path, ethanol_xyz, model, message):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"model": model}))
    r = CliRunner().invoke(app, ["train", "--train", str(ethanol_xyz), "--config", str(tmp_path / "run.yaml"),
                                 "--max-epochs", "1", "--out", str(tmp_path / "out"), "--no-progress"])
    assert r.exit_code == 2
    assert message in r.output and "Traceback" not in r.output


def test_metrics_history_survives_repeated_kills(tmp_path):
    """Two kills: each resume keeps the rows up to its checkpoint's step and drops the rows logged after it."""
    import csv

    from forcefit.training import metrics_history

    def write(rows, keys=("epoch", "step", "loss")):
        with open(tmp_path / "metrics.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)

    write([{"epoch": e, "step": 10 * e, "loss": f"a{e}"} for e in range(4)])  # killed after step 30, checkpoint at 20
    metrics_history.set_aside(tmp_path)
    assert not (tmp_path / "metrics.csv").exists()
    second = [{"epoch": e, "step": 10 * e, "loss": f"b{e}"} for e in range(2, 6)]  # from step 20; killed again, checkpoint at 40
    write(second)
    metrics_history.set_aside(tmp_path)
    write(second)  # as if killed after set_aside wrote the history but before it removed metrics.csv
    metrics_history.set_aside(tmp_path)
    write([{"epoch": e, "step": 10 * e, "loss": f"c{e}", "val": "v"} for e in range(4, 7)], keys=("epoch", "step", "loss", "val"))
    during = [r["loss"] for r in metrics_history.rows(tmp_path)]  # read while the third part trains
    metrics_history.join(tmp_path)
    assert [r["loss"] for r in csv.DictReader(open(tmp_path / "metrics.csv"))] == during
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [r["loss"] for r in rows] == ["a0", "a1", "a2", "b2", "b3", "b4", "c4", "c5", "c6"]
    assert rows[0]["val"] == "" and rows[-1]["val"] == "v"
    assert not (tmp_path / metrics_history.HISTORY).exists()


def test_resume_inside_an_epoch_reproduces_uninterrupted_run(tmp_path, ethanol_xyz):
    """A kill in the middle of an epoch resumes at the batch after the last timed checkpoint, with the batch order
    of the uninterrupted run: the same final weights, and every frame trained once in that epoch."""
    settings = dict(max_epochs=3, val_interval=1, checkpoint_minutes=1e-6)  # a timed checkpoint after every batch
    full = forcefit.train(_config(tmp_path, ethanol_xyz, "full", **settings))
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(tmp_path, ethanol_xyz, "killed", **settings)))
    proc = train_and_kill_at_epoch(cfg_path, 1, batch=3)  # 30 training frames, batches of 4: 7 per epoch
    assert proc.returncode == -9, proc.stderr[-2000:]
    state = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 1 and state["global_step"] == 7 + 3  # written after batch 2 of epoch 1
    seen = []

    class RecordBatches(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.append((trainer.current_epoch, batch_idx))

    from forcefit.config import RunConfig
    from forcefit.training.run import train

    resumed = train(RunConfig.from_yaml(cfg_path), resume=True, callbacks=[RecordBatches()])
    assert seen[:5] == [(1, 3), (1, 4), (1, 5), (1, 6), (2, 0)]
    a, b = _params(full.model_path), _params(resumed.model_path)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
