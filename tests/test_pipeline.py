"""The recipe pipeline (ASTEROID and its baselines): bias weights, stage seams, resume, input errors, report."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import ase.io
import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from conftest import make_frames, pseudo_label
from forcefit.cli import app
from forcefit.config import ConfigError
from forcefit.data import DataError, batch_from_frames, read_frames
from forcefit.model_file import load_model
from forcefit.objectives.terms import SupervisedLoss
from forcefit.pipeline import Pipeline, PipelineConfig
from forcefit.pipeline.bias import bias_weights, frame_bias, weighted_frames

TINY_MODEL = {"options": {"features": 8, "num_layers": 1, "num_basis": 4}}
TRAINING = {"batch_size": 4, "progress": False, "threads": 1, "lr": 1e-2, "val_interval": 1}


def _biased(images, shift=0.3, seed=1):
    """'Cheap' labels: the reference forces plus a frame-dependent bias (a uniform force on every atom)."""
    rng = np.random.default_rng(seed)
    out = []
    for a in images:
        b = a.copy()
        e, f = pseudo_label(b)
        from ase.calculators.singlepoint import SinglePointCalculator

        b.calc = SinglePointCalculator(b, energy=0.5 * e - 3.0, forces=f + rng.uniform(0, shift) * np.ones(3))
        out.append(b)
    return out


@pytest.fixture
def pipeline_files(tmp_path):
    accurate = make_frames(12, seed=0)
    test = make_frames(6, seed=5)
    cheap = _biased(make_frames(16, seed=2))
    md = make_frames(8, seed=3, rattle=0.04)
    for a in md:
        a.calc = None
    for name, images in (("accurate", accurate), ("test", test), ("cheap", cheap), ("md", md)):
        ase.io.write(tmp_path / f"{name}.xyz", images, format="extxyz")
    return tmp_path


def _config(folder, recipes, out="pipe", **extra) -> dict:
    cfg = {"out": str(folder / out), "recipes": recipes,
           "data": {"accurate": str(folder / "accurate.xyz"), "cheap": {"files": [str(folder / "cheap.xyz")], "cpu_seconds_per_label": 0.01},
                    "test": str(folder / "test.xyz"), "unlabelled": str(folder / "md.xyz"), "temperature": 300,
                    "valid_fraction": 0.25, "cheap_valid_fraction": 0.25},
           "model": TINY_MODEL, "training": TRAINING,
           "budget": {"accurate": {"max_epochs": 3}, "pretrain": {"max_epochs": 2}, "finetune": {"max_epochs": 2}}}
    for key, value in extra.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def _load(folder, cfg: dict) -> PipelineConfig:
    path = folder / f"{cfg['out'].rsplit('/', 1)[-1]}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return PipelineConfig.load(path)


def _weights(model_path) -> dict:
    return {k: v.clone() for k, v in load_model(model_path).state_dict().items()}


def test_bias_and_weights_and_weighted_loss_match_hand_values(tmp_path):
    """b_i = mean |F_θ0 − F_cheap| per frame (eV/Å), w_i = exp(−b_i/γ), and the weighted force loss is
    Σ_i w_i·Σ_atoms mean_c (ΔF)² / Σ_i w_i·n_i, evaluated by hand on a tiny batch."""
    from forcefit.evaluate import predict
    from forcefit.models.build import build_potential

    torch.manual_seed(0)
    model = build_potential({"name": "painn", "cutoff": 4.0, "options": TINY_MODEL["options"], "species": [1, 6, 8]}).double()
    frames = read_frames(_write(tmp_path, _biased(make_frames(3, seed=4))))
    predicted = predict(model, frames)["forces"]
    bias = frame_bias(frames, predicted)
    hand = [np.abs(p - f.forces).mean() for p, f in zip(predicted, frames)]
    np.testing.assert_allclose(bias, hand, rtol=1e-12)
    w = bias_weights(bias, gamma=0.2)
    expected = np.exp(-np.array(hand) / 0.2)
    np.testing.assert_allclose(w, expected / expected.max(), rtol=1e-12)  # the common factor cancels in the weighted mean
    weighted = weighted_frames(frames, w)
    batch = batch_from_frames(weighted, 4.0, torch.float64)
    model.train()
    out = model(batch)
    loss, metrics = SupervisedLoss.from_training(type("T", (), {"energy_weight": 0.0, "forces_weight": 1.0,
                                                                "energy_loss": "mse", "forces_loss": "mse"})())(out, batch)
    f = out["forces"].detach().numpy()
    num = den = 0.0
    start = 0
    for k, fr in enumerate(frames):
        n = fr.n_atoms
        num += w[k] * ((f[start:start + n] - fr.forces) ** 2).mean(axis=1).sum()
        den += w[k] * n
        start += n
    assert loss.item() == pytest.approx(num / den, rel=1e-10)
    # w = 1 for every frame is exactly the unweighted loss
    plain = SupervisedLoss.from_training(type("T", (), {"energy_weight": 0.0, "forces_weight": 1.0, "energy_loss": "mse",
                                                        "forces_loss": "mse"})())(out, batch_from_frames(frames, 4.0, torch.float64))[0]
    assert plain.item() != pytest.approx(loss.item(), rel=1e-6)  # the weights change it...
    ones = batch_from_frames(weighted_frames(frames, np.ones(3)), 4.0, torch.float64)
    assert SupervisedLoss.from_training(type("T", (), {"energy_weight": 0.0, "forces_weight": 1.0, "energy_loss": "mse",
                                                       "forces_loss": "mse"})())(out, ones)[0].item() == plain.item()  # ...w = 1 does not


def _write(folder, images, name="frames.xyz"):
    path = folder / name
    ase.io.write(path, images, format="extxyz")
    return path


def test_asteroid_with_unit_weights_is_plain_pretraining_and_finetuning_starts_from_pretraining(pipeline_files):
    """γ → ∞ (every w_i exactly 1) with the cheap energies: the asteroid pretraining stage trains the very
    model pretrain-finetune's does; with a finite γ the weights reach the batch and change it. The
    fine-tuning stage starts from the pretraining stage's weights, not from scratch."""
    folder = pipeline_files
    cfg = _load(folder, _config(folder, ["pretrain-finetune", "asteroid"], asteroid={"gamma": 1e30, "energy": "reference"}))
    pipe = Pipeline(cfg, log=lambda s: None)
    pipe.run()
    stages = folder / "pipe" / "stages"
    plain, weighted = _weights(stages / "pretrain-plain" / "model.pt"), _weights(stages / "pretrain-asteroid" / "model.pt")
    assert all(torch.equal(plain[k], weighted[k]) for k in plain)
    assert {f.weight for f in read_frames(stages / "bias" / "cheap_train.xyz")} == {1.0}

    # the fine-tuning run's starting model is the pretrained one (backbone weights equal before any step)
    from forcefit.config import build_config
    from forcefit.training.data_setup import prepare_data
    from forcefit.training.run import _build_model, frame_needs

    run = build_config(pipe.configs.config("finetune-asteroid"))
    assert run.finetune is not None and run.finetune.init.endswith("pretrain-asteroid/model.pt")
    start, _ = _build_model(run, prepare_data(run, frame_needs(run)), (), torch.float32)
    pretrained = load_model(stages / "pretrain-asteroid" / "model.pt")
    for k, v in pretrained.backbone.state_dict().items():
        assert torch.equal(start.backbone.state_dict()[k], v), k

    # a finite γ: the bias weights are in the pretraining files and differ between frames
    cfg2 = _load(folder, _config(folder, ["asteroid"], out="pipe2", asteroid={"gamma": 0.2}))
    Pipeline(cfg2, log=lambda s: None).run()
    bias = json.loads((folder / "pipe2" / "stages" / "bias" / "bias.json").read_text())
    frames = read_frames(folder / "pipe2" / "stages" / "bias" / "cheap_train.xyz")
    np.testing.assert_allclose([f.weight for f in frames], bias["weights"], rtol=1e-6)
    assert len({round(f.weight, 6) for f in frames}) > 1
    assert (folder / "pipe2" / "stages" / "bias" / "bias.png").exists()
    other = _weights(folder / "pipe2" / "stages" / "pretrain-asteroid" / "model.pt")
    assert not all(torch.equal(plain[k], other[k]) for k in plain)


def test_theta0_energies_replace_the_cheap_energies(pipeline_files):
    folder = pipeline_files
    cfg = _load(folder, _config(folder, ["asteroid"], asteroid={"energy": "theta0"}, budget={"pretrain": {"max_epochs": 1}, "finetune": {"max_epochs": 1}}))
    pipe = Pipeline(cfg, log=lambda s: None)
    pipe.prepare_data()
    pipe.run_stage("accurate")
    pipe.run_stage("bias")
    from forcefit.evaluate import predict

    frames = read_frames(folder / "pipe" / "stages" / "bias" / "cheap_train.xyz")
    theta0 = load_model(folder / "pipe" / "stages" / "accurate" / "model.pt")
    np.testing.assert_allclose([f.energy for f in frames], predict(theta0, frames)["energy"], rtol=1e-7)


def test_killed_pipeline_resumes_in_its_stage_and_matches_the_uninterrupted_run(pipeline_files):
    folder = pipeline_files
    whole = _config(folder, ["pretrain-finetune"], out="whole", budget={"pretrain": {"max_epochs": 3}, "finetune": {"max_epochs": 3}})
    Pipeline(_load(folder, whole), log=lambda s: None).run()
    killed = _config(folder, ["pretrain-finetune"], out="killed", budget={"pretrain": {"max_epochs": 3}, "finetune": {"max_epochs": 3}})
    path = folder / "killed.yaml"
    path.write_text(yaml.safe_dump(killed))
    script = textwrap.dedent(f"""
        import os, signal
        import lightning as L
        import forcefit.training.run as run
        from forcefit.pipeline import Pipeline, PipelineConfig

        class KillInFinetune(L.Callback):
            def on_train_epoch_start(self, trainer, module):
                if trainer.current_epoch == 2 and "finetune" in str(trainer.default_root_dir):
                    os.kill(os.getpid(), signal.SIGKILL)

        original = run.train
        run.train = lambda config, resume=False, callbacks=None: original(config, resume, [KillInFinetune()])
        Pipeline(PipelineConfig.load({str(path)!r}), log=print).run()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900)
    assert proc.returncode == -9, proc.stderr[-2000:]
    stages = folder / "killed" / "stages"
    assert (stages / "pretrain-plain" / "stage.json").exists() and not (stages / "finetune-plain" / "stage.json").exists()
    lines = []
    Pipeline(PipelineConfig.load(path), log=lines.append).run()
    assert any("pretrain-plain: done, skipped" in s for s in lines) and any("finetune-plain: resuming" in s for s in lines)
    a, b = _weights(folder / "whole" / "stages" / "finetune-plain" / "model.pt"), _weights(stages / "finetune-plain" / "model.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_bad_inputs_fail_at_once_with_one_line(pipeline_files, tmp_path):
    folder = pipeline_files
    runner = CliRunner()
    bad = _config(folder, ["asteroid", "teleport"])
    (folder / "bad.yaml").write_text(yaml.safe_dump(bad))
    result = runner.invoke(app, ["pipeline", str(folder / "bad.yaml")])
    assert result.exit_code == 2 and "unknown recipe(s) teleport" in result.output
    assert result.output.strip().count("\n") == 0 or "error" in result.output.splitlines()[0]

    missing = _config(folder, ["accurate-only"])
    missing["data"]["accurate"] = str(folder / "nowhere.xyz")
    (folder / "missing.yaml").write_text(yaml.safe_dump(missing))
    result = runner.invoke(app, ["pipeline", str(folder / "missing.yaml")])
    assert result.exit_code == 2 and "nowhere.xyz" in result.output and "not found" in result.output
    assert not (folder / "pipe" / "stages").exists()  # no stage ran

    from forcefit.labeling.campaign import Campaign

    campaign = Campaign(tmp_path / "campaign.db")
    campaign.add(make_frames(2))
    nolevel = _config(folder, ["pretrain-finetune"])
    nolevel["data"]["cheap"] = {"files": [str(tmp_path / "campaign.db")], "level": "gfn2"}
    (folder / "nolevel.yaml").write_text(yaml.safe_dump(nolevel))
    result = runner.invoke(app, ["pipeline", str(folder / "nolevel.yaml")])
    assert result.exit_code == 2 and "no level 'gfn2'" in result.output and "campaign.db" in result.output
    assert not (folder / "pipe" / "stages").exists()

    no_temperature = _config(folder, ["asteroid-score"])
    del no_temperature["data"]["temperature"]  # and md.xyz's frames carry none of their own
    with pytest.raises(DataError, match=r"md\.xyz.*frame 0.*temperature.*data\.temperature is not set"):
        Pipeline(_load(folder, no_temperature), log=lambda s: None).run()
    assert not (folder / "pipe" / "stages").exists()
    tagged = ase.io.read(folder / "md.xyz", ":")
    for k, a in enumerate(tagged):
        a.info["temperature"] = 300.0 + 100 * (k % 2)  # MD at two temperatures, each frame with its own
    ase.io.write(folder / "md_tagged.xyz", tagged, format="extxyz")
    no_temperature["data"]["unlabelled"] = str(folder / "md_tagged.xyz")
    checked = Pipeline(_load(folder, no_temperature), log=lambda s: None).check_inputs()
    assert {f.temperature for f in checked["unlabelled"]} == {300.0, 400.0}
    unlabelled_cheap = _config(folder, ["pretrain-finetune"])
    unlabelled_cheap["data"]["cheap"] = str(folder / "md.xyz")
    with pytest.raises(DataError, match="md.xyz.*forces"):
        Pipeline(_load(folder, unlabelled_cheap), log=lambda s: None).run()


def test_example_config_is_valid_and_report_runs(pipeline_files):
    runner = CliRunner()
    result = runner.invoke(app, ["pipeline", "--example", "asteroid"])
    assert result.exit_code == 0
    example = yaml.safe_load(result.output)
    assert PipelineConfig.model_validate(example).recipes[:3] == ["accurate-only", "pretrain-finetune", "asteroid"]

    folder = pipeline_files
    cfg = _config(folder, ["accurate-only", "asteroid-score", "multilevel"],
                  budget={"accurate": {"max_epochs": 2}, "pretrain": {"max_epochs": 1}, "finetune": {"max_epochs": 1}},
                  score={"estimator": "denoising"})
    cfg["data"]["accurate"] = {"files": [str(folder / "accurate.xyz")], "cpu_seconds_per_label": 7.0}
    cfg["data"]["unlabelled"] = {"files": [str(folder / "md.xyz")], "cpu_seconds_per_label": 0.002}
    (folder / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert runner.invoke(app, ["pipeline", str(folder / "cfg.yaml")]).exit_code == 0
    result = runner.invoke(app, ["pipeline", str(folder / "cfg.yaml"), "--report", "--resamples", "200"])
    assert result.exit_code == 0, result.output
    report = json.loads((folder / "pipe" / "report.json").read_text())
    rows = {r["recipe"]: r for r in report["rows"]}
    assert rows["accurate-only"]["label_cpu_seconds"] == pytest.approx(12 * 7.0)  # 9 train + 3 valid accurate labels
    assert rows["asteroid-score"]["label_cpu_seconds"] == pytest.approx(12 * 7.0 + 8 * 0.002)
    assert rows["multilevel"]["cheap_labels"] == 16 and rows["multilevel"]["label_cpu_seconds"] == pytest.approx(84 + 16 * 0.01)
    assert {p["other"] for p in report["paired"]} == {"asteroid-score", "multilevel"}
    assert (folder / "pipe" / "report.png").exists()
    # the multi-level model predicts the accurate level and has both heads
    model = load_model(folder / "pipe" / "stages" / "multilevel" / "model.pt")
    assert model.levels == ["cheap", "accurate"] and model.default_level == "accurate"


def test_delta_recipe_puts_the_cheap_method_in_the_model_file(pipeline_files):
    """Δ-learning: trained on accurate − GFN2-xTB, the model file carries GFN2-xTB and predicts the sum,
    so its test error in the report is the error against the accurate labels."""
    pytest.importorskip("tblite.interface")

    folder = pipeline_files
    cfg = _load(folder, _config(folder, ["delta"], budget={"accurate": {"max_epochs": 2}}))
    Pipeline(cfg, log=lambda s: None).run()
    path = folder / "pipe" / "stages" / "delta" / "model.pt"
    model = load_model(path)
    assert model.metadata["baseline"]["method"] == "gfn2"
    from forcefit.evaluate import evaluate

    # the stage's metrics (the network on accurate − xTB test labels) are the full model's on the accurate labels
    stage = json.loads((folder / "pipe" / "stages" / "delta" / "stage.json").read_text())
    full, _ = evaluate(model, read_frames(folder / "pipe" / "data" / "test.xyz"))
    assert stage["metrics"]["forces_mae"] == pytest.approx(full["forces_mae"], rel=1e-4)
    assert stage["metrics"]["energy_mae"] == pytest.approx(full["energy_mae"], rel=1e-4)


def test_a_finished_stage_moves_with_its_folder_and_changed_settings_are_refused(pipeline_files):
    import shutil

    folder = pipeline_files
    first = _config(folder, ["accurate-only"], out="first", budget={"accurate": {"max_epochs": 1}})
    Pipeline(_load(folder, first), log=lambda s: None).run()
    shutil.copytree(folder / "first", folder / "moved")
    lines = []
    Pipeline(_load(folder, _config(folder, ["accurate-only"], out="moved", budget={"accurate": {"max_epochs": 1}})), log=lines.append).run()
    assert any("accurate: done, skipped" in s for s in lines)
    changed = _config(folder, ["accurate-only"], out="moved", budget={"accurate": {"max_epochs": 2}})
    with pytest.raises(ConfigError, match="stage accurate .* was run with other settings"):
        Pipeline(_load(folder, changed), log=lambda s: None).run()

    # a stage's settings include its upstream stage's: with only the bias stage deleted and rerun at another γ,
    # the pretraining stage that read the old weights is refused, not silently reused
    one = {"accurate": {"max_epochs": 1}, "pretrain": {"max_epochs": 1}, "finetune": {"max_epochs": 1}}
    Pipeline(_load(folder, _config(folder, ["asteroid"], out="chain", budget=one)), log=lambda s: None).run()
    shutil.rmtree(folder / "chain" / "stages" / "bias")
    lines = []
    with pytest.raises(ConfigError, match="stage pretrain-asteroid .* was run with other settings"):
        Pipeline(_load(folder, _config(folder, ["asteroid"], out="chain", budget=one, asteroid={"gamma": 0.5})), log=lines.append).run()
    assert any("accurate: done, skipped" in s for s in lines) and (folder / "chain" / "stages" / "bias" / "stage.json").exists()


def test_finetune_section_reaches_every_finetuning_stage(pipeline_files):
    """``finetune: {mode: ...}`` sets how each fine-tuning stage trains: with a frozen backbone the fine-tuned
    model keeps the pretrained backbone weight for weight and only its energy readout moves; the default adds
    nothing to the stage's run config (stages finished before the section existed still match)."""
    from forcefit.config import build_config
    from forcefit.model_file import read_model_file

    folder = pipeline_files
    plain = Pipeline(_load(folder, _config(folder, ["pretrain-finetune"])), log=lambda s: None)
    assert set(plain.configs.config("finetune-plain")["finetune"]) == {"init"}

    cfg = _load(folder, _config(folder, ["pretrain-finetune"], out="frozen", finetune={"mode": "freeze-backbone"},
                                training={"ema_decay": None}))
    Pipeline(cfg, log=lambda s: None).run()
    stages = folder / "frozen" / "stages"
    source = read_model_file(stages / "pretrain-plain" / "model.pt")["state_dict"]
    tuned = read_model_file(stages / "finetune-plain" / "model.pt")["state_dict"]
    readout = [k for k in tuned if k.startswith("backbone.readout.")]
    body = [k for k in tuned if k.startswith("backbone.") and k not in readout]
    assert readout and body
    assert all(torch.equal(tuned[k], source[k]) for k in body)
    assert any(not torch.equal(tuned[k], source[k]) for k in readout)

    slow = Pipeline(_load(folder, _config(folder, ["asteroid"], out="slow", finetune={"mode": "backbone-lr", "backbone_lr": 0.05})),
                    log=lambda s: None)
    run = build_config(slow.configs.config("finetune-asteroid"))
    assert (run.finetune.mode, run.finetune.backbone_lr) == ("backbone-lr", 0.05)
    fresh = Pipeline(_load(folder, _config(folder, ["asteroid"], out="fresh", finetune={"readout": "reinit"})), log=lambda s: None)
    assert build_config(fresh.configs.config("finetune-asteroid")).finetune.readout == "reinit"
    with pytest.raises(ConfigError, match="finetune.mode"):
        _load(folder, _config(folder, ["asteroid"], out="bad", finetune={"mode": "fast"}))


def test_a_benchmark_variant_takes_over_exactly_the_stages_its_settings_leave_unchanged(pipeline_files):
    """benchmarks/asteroid.py --variant: a variant that changes only the fine-tuning mode takes over θ0, the bias
    and both pretraining stages of its base run and retrains both fine-tuning stages."""
    from conftest import load_benchmark

    bench = load_benchmark("asteroid")
    folder = pipeline_files
    one = {"accurate": {"max_epochs": 1}, "pretrain": {"max_epochs": 1}, "finetune": {"max_epochs": 1}}
    recipes = ["pretrain-finetune", "asteroid"]
    Pipeline(_load(folder, _config(folder, recipes, out="base", budget=one)), log=lambda s: None).run()
    variant = _load(folder, _config(folder, recipes, out="variant", budget=one, finetune={"mode": "freeze-backbone"}))
    taken = bench._reuse(folder / "base", variant)
    assert taken == ["accurate", "bias", "pretrain-asteroid", "pretrain-plain"]
    lines = []
    Pipeline(variant, log=lines.append).run()
    for stage in taken:
        assert any(f"stage {stage}: done, skipped" in s for s in lines), stage
    for stage in ("finetune-plain", "finetune-asteroid"):
        assert any(f"stage {stage}: training" in s for s in lines), stage
    assert bench._reuse(folder / "base", variant) == taken  # a rerun finds them in place and still names them
    other = _load(folder, _config(folder, recipes, out="gamma", budget=one, asteroid={"gamma": 0.5}))
    assert bench._reuse(folder / "base", other) == ["accurate", "finetune-plain", "pretrain-plain"]
