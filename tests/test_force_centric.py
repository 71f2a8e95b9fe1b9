"""Force-centric pretraining objective: each term against its hand value, by frame tag."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ase.units import kB

from forcefit.data import Frame, batch_from_frames
from forcefit.objectives.base import ObjectiveContext
from forcefit.objectives.force_centric import ForceCentric, ForceCentricConfig, force_centric_loss
from forcefit.objectives.terms import EnergyTerm, ForcesTerm, SupervisedLoss


class _Harmonic(torch.nn.Module):
    """E = ½k‖x − x0‖²: F = −k·(x − x0) (k = 0: a model with zero forces everywhere)."""

    def __init__(self, x0: torch.Tensor, k: float):
        super().__init__()
        self.x0, self.k = x0, k

    def forward(self, batch, compute_forces=True, force_condition=None):
        d = batch["positions"] - self.x0
        energy = torch.zeros(batch["ptr"].shape[0] - 1, dtype=d.dtype).index_add(0, batch["batch"], 0.5 * self.k * (d**2).sum(-1))
        return {"energy": energy, "forces": -self.k * d, "vectors": {}}


def _frames():
    rng = np.random.default_rng(0)
    eq = Frame(positions=rng.normal(0, 1, (3, 3)), numbers=np.array([6, 1, 1]), equilibrium=True)  # no labels
    off = Frame(positions=rng.normal(0, 1, (2, 3)), numbers=np.array([8, 1]), forces=rng.normal(0, 1, (2, 3)),
                energy=-5.0, weight=2.0)
    return [eq, off]


def test_harmonic_target_is_minus_k_epsilon():
    """A harmonic well of stiffness k = k_B·T/σ² about the equilibrium frame is the exact minimiser of the
    denoising term (loss 0), and zero-force is zero there at x_eq: F̂(x_eq + ε) = −k·ε."""
    frames = _frames()
    batch = batch_from_frames(frames, 5.0, torch.float64)
    sigma, T = 0.04, 300.0
    k = float(kB * T / sigma**2)
    assert k == pytest.approx(16.16, rel=1e-3)  # the published default stiffness, about 16 eV/Å²
    noise = torch.randn(batch["positions"].shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * sigma
    loss, metrics = force_centric_loss(_Harmonic(batch["positions"], k), batch, noise, k, forces_weight=0.0, zero_weight=1.0,
                                       denoise_weight=1.0, cutoff=5.0)
    assert metrics["loss_denoise"].item() == pytest.approx(0.0, abs=1e-24)
    assert metrics["loss_zero_force"].item() == pytest.approx(0.0, abs=1e-24)
    # another stiffness: the hand value mean over the equilibrium atoms of ‖(k − k')ε‖²/3
    loss2, m2 = force_centric_loss(_Harmonic(batch["positions"], 0.5 * k), batch, noise, k, 0.0, 0.0, 1.0, cutoff=5.0)
    eps = noise[:3].numpy()
    assert m2["loss_denoise"].item() == pytest.approx(((0.5 * k * eps) ** 2).sum() / 9, rel=1e-12)


def test_zero_force_loss_is_zero_for_a_zero_force_model_and_offeq_frames_train_forces_only():
    frames = _frames()
    batch = batch_from_frames(frames, 5.0, torch.float64)
    zero = _Harmonic(batch["positions"], 0.0)
    noise = torch.zeros_like(batch["positions"])
    loss, metrics = force_centric_loss(zero, batch, noise, 16.0, forces_weight=100.0, zero_weight=3.0, denoise_weight=2.0, cutoff=5.0)
    assert metrics["loss_zero_force"].item() == 0.0 and metrics["loss_denoise"].item() == 0.0
    # the off-equilibrium frame: the 'mse' force loss of F̂ = 0 against its labels, no energy term (its energy is ignored)
    expected = (frames[1].forces**2).mean()
    assert metrics["loss_offeq_forces"].item() == pytest.approx(expected, rel=1e-12)
    assert loss.item() == pytest.approx(100.0 * expected, rel=1e-12)


def test_defaults_weigh_equilibrium_terms_like_force_labels_and_tags_choose_the_terms():
    ctx = ObjectiveContext(SupervisedLoss([EnergyTerm(1.0), ForcesTerm(80.0)]), cutoff=5.0)
    obj = ForceCentric(ForceCentricConfig(), ctx)
    assert (obj.forces_weight, obj.zero_weight, obj.denoise_weight) == (80.0, 80.0, 80.0)
    assert obj.k == pytest.approx(float(kB * 300 / 0.04**2))
    # a batch without equilibrium frames has no equilibrium terms
    frames = _frames()[1:]
    batch = batch_from_frames(frames, 5.0, torch.float64)
    _, metrics = obj(_Harmonic(batch["positions"], 1.0), batch, generator=torch.Generator().manual_seed(0))
    assert set(metrics) == {"loss_offeq_forces"}
    lines = obj.describe(_frames() + [Frame(positions=np.zeros((1, 3)), numbers=np.array([1]))])
    assert "1 off-equilibrium" in lines[0] and "1 equilibrium" in lines[0] and "train nothing" in lines[1]



def test_describing_a_streamed_pool_reads_its_tags_not_its_frames(tmp_path, monkeypatch):
    from forcefit.data.frame import frame_flags
    from forcefit.data.packed import PackedFrames, pack
    from forcefit.training.data_setup import FrameSubset

    frames = _frames() + [Frame(positions=np.zeros((1, 3)), numbers=np.array([1]))]
    xyz = tmp_path / "mixed.xyz"
    import ase.io

    ase.io.write(xyz, [f.to_atoms() for f in frames], format="extxyz")
    pack([xyz], tmp_path / "pool.h5")
    pool = PackedFrames(tmp_path / "pool.h5")
    expected = frame_flags(list(pool))  # from the frames themselves
    monkeypatch.setattr(PackedFrames, "_block", lambda *a: pytest.fail("describe read frames from the pool"))
    for name, values in frame_flags(pool).items():
        assert values.tolist() == expected[name].tolist(), name
    assert expected["equilibrium"].tolist() == [True, False, False] and expected["has_forces"].tolist() == [False, True, False]
    subset = FrameSubset(pool, [2, 0])
    assert frame_flags(subset)["equilibrium"].tolist() == [False, True]
    ctx = ObjectiveContext(SupervisedLoss([EnergyTerm(1.0), ForcesTerm(80.0)]), cutoff=5.0)
    lines = ForceCentric(ForceCentricConfig(), ctx).describe(pool)
    assert "1 off-equilibrium" in lines[0] and "1 equilibrium" in lines[0] and "train nothing" in lines[1]


def test_force_centric_trains_a_real_backbone_on_a_mixed_pool(tmp_path):
    """Equilibrium frames without labels and off-equilibrium frames with forces (another level, no energies
    used) in one run: the data layer accepts them, the backbone trains, every term is logged."""
    import csv

    import ase.io

    from conftest import make_frames
    from forcefit.config import build_config
    from forcefit.training.run import train

    pool = make_frames(16, rattle=0.06)
    for a in pool[:6]:
        a.calc = None
        a.info["equilibrium"] = True
    ase.io.write(tmp_path / "pool.xyz", pool, format="extxyz")
    cfg = build_config({
        "data": {"train": [str(tmp_path / "pool.xyz")], "valid_fraction": 0.25},
        "model": {"options": {"features": 8, "num_layers": 1, "num_basis": 4}},
        "training": {"max_epochs": 3, "batch_size": 4, "progress": False, "threads": 1, "energy_weight": 0.0},
        "objective": {"kind": "force-centric"}, "out": str(tmp_path / "run"),
    })
    train(cfg)
    rows = list(csv.DictReader(open(tmp_path / "run" / "logs" / "metrics.csv")))
    logged = {k for r in rows for k, v in r.items() if v}
    assert {"train_loss_offeq_forces", "train_loss_zero_force", "train_loss_denoise"} <= logged


def test_source_weights_multiply_the_frame_weights_by_file_pattern(tmp_path):
    import ase.io

    from conftest import make_frames
    from forcefit.config import build_config
    from forcefit.data import DataError
    from forcefit.training.data_setup import prepare_data

    ase.io.write(tmp_path / "spice_a.xyz", make_frames(6, seed=1), format="extxyz")
    ase.io.write(tmp_path / "md.xyz", make_frames(6, seed=2), format="extxyz")
    cfg = build_config({"data": {"train": [str(tmp_path / "spice_a.xyz"), str(tmp_path / "md.xyz")], "valid_fraction": 0.2,
                                 "source_weights": {"spice*": 0.25}}})
    data = prepare_data(cfg)
    weights = {(f.source.rsplit("/", 1)[-1], f.weight) for f in data.train}
    assert weights == {("spice_a.xyz", 0.25), ("md.xyz", 1.0)}
    with pytest.raises(DataError, match="no training file matches ani"):
        prepare_data(build_config({"data": {"train": [str(tmp_path / "md.xyz")], "source_weights": {"ani*": 2.0}}}))
    # a streamed pool: its frames keep the files they were packed from, and get their factors as they are read
    from forcefit.data.packed import pack

    pack([tmp_path / "spice_a.xyz", tmp_path / "md.xyz"], tmp_path / "pool.h5")
    streamed = prepare_data(build_config({"data": {"train": str(tmp_path / "pool.h5"), "stream": True, "valid_fraction": 0.2,
                                                   "source_weights": {"spice*": 0.25}}}))
    frames = [streamed.train[k] for k in range(len(streamed.train))] + streamed.valid
    assert {(f.source.rsplit("/", 1)[-1], f.weight) for f in frames} == {("spice_a.xyz", 0.25), ("md.xyz", 1.0)}
    assert len(frames) == 12
    with pytest.raises(DataError, match="no training file matches ani"):
        prepare_data(build_config({"data": {"train": str(tmp_path / "pool.h5"), "stream": True, "source_weights": {"ani*": 2.0}}}))


def _ddp_pretraining(tmp_path, name: str, n_frames: int = 20, max_epochs: int = 2, kill_at: tuple[int, int] | None = None,
                     resume: bool = False, port: int = 29547, **training):
    """Run a force-centric pretraining over torchrun with 2 gloo processes on CPU; returns (process, seen), where
    seen[rank] lists (epoch, batch index, frame ids) of every batch that rank started. ``kill_at`` (epoch, batch):
    rank 0 SIGKILLs itself as that batch starts (before recording it); ``resume`` continues the run folder."""
    import json
    import os
    import subprocess
    import sys
    import textwrap

    import ase.io
    import yaml

    from conftest import make_frames

    pool_path = tmp_path / "pool.xyz"
    if not pool_path.exists():
        pool = make_frames(n_frames, rattle=0.06)
        for a in pool[:8]:
            a.calc = None
            a.info["equilibrium"] = True
        ase.io.write(pool_path, pool, format="extxyz")
    cfg = {"data": {"train": [str(pool_path)], "valid_fraction": 0.2},
           "model": {"options": {"features": 8, "num_layers": 1, "num_basis": 4}},
           "training": {"max_epochs": max_epochs, "batch_size": 4, "progress": False, "threads": 1, "energy_weight": 0.0,
                        "strategy": "ddp", "devices": 2, "device": "cpu", **training},
           "objective": {"kind": "force-centric"}, "out": str(tmp_path / name)}
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    log = tmp_path / f"seen_{name}_{'resumed' if resume else 'first'}"
    kill = f"if trainer.global_rank == 0 and (trainer.current_epoch, batch_idx) == {tuple(kill_at)}: os.kill(os.getpid(), signal.SIGKILL)" if kill_at else "pass"
    script = tmp_path / f"{name}_{'resumed' if resume else 'first'}.py"
    script.write_text(textwrap.dedent(f"""
        import json, os, signal
        import lightning as L
        from forcefit.config import RunConfig
        from forcefit.training.run import train

        class Record(L.Callback):
            def on_train_batch_start(self, trainer, module, batch, batch_idx):
                {kill}
                with open({str(log)!r} + f"_{{trainer.global_rank}}.jsonl", "a") as fh:
                    fh.write(json.dumps([trainer.current_epoch, batch_idx, batch["frame_id"].tolist()]) + "\\n")

        train(RunConfig.from_yaml({str(tmp_path / f'{name}.yaml')!r}), resume={resume}, callbacks=[Record()])
    """))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
                           str(script)], capture_output=True, text=True, timeout=1200, env=env)
    seen = {}
    for rank in (0, 1):
        path = Path(f"{log}_{rank}.jsonl")
        seen[rank] = [tuple(json.loads(line)) for line in path.read_text().splitlines()] if path.exists() else []
    return proc, seen


def test_two_process_ddp_pretraining_sees_every_frame_once_per_epoch(tmp_path):
    """torchrun with 2 gloo processes on CPU: each epoch the ranks' batches together hold every training
    frame exactly once (the distributed sampler shards the seeded order, it neither drops nor repeats)."""
    proc, seen = _ddp_pretraining(tmp_path, "run")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    by_epoch: dict[int, list[int]] = {}
    for epoch, _, ids in seen[0] + seen[1]:
        by_epoch.setdefault(epoch, []).extend(ids)
    assert sorted(by_epoch) == [0, 1]
    for epoch, ids in by_epoch.items():
        assert sorted(ids) == list(range(16)), (epoch, sorted(ids))


def test_two_process_ddp_resumes_inside_an_epoch(tmp_path):
    """A kill in the middle of a DDP epoch resumes both ranks at the batch after the last timed checkpoint: the
    epoch still trains every frame exactly once, and the weights equal those of the uninterrupted run."""
    settings = dict(n_frames=30, max_epochs=2, checkpoint_minutes=1e-6)  # 24 train frames: 3 batches a rank an epoch
    proc, _ = _ddp_pretraining(tmp_path, "full", port=29548, **settings)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc, first = _ddp_pretraining(tmp_path, "killed", kill_at=(1, 2), port=29549, **settings)
    assert proc.returncode != 0
    state = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 1 and state["global_step"] == 3 + 2  # written after batch 1 of epoch 1
    proc, resumed = _ddp_pretraining(tmp_path, "killed", resume=True, port=29550, **settings)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = []
    for rank in (0, 1):
        assert [(e, b) for e, b, _ in resumed[rank]][:1] == [(1, 2)], resumed[rank]
        ids += [i for e, b, batch in first[rank] if e == 1 and b < 2 for i in batch]
        ids += [i for e, b, batch in resumed[rank] if e == 1 for i in batch]
    assert sorted(ids) == list(range(24))
    from forcefit.model_file import read_model_file

    a, b = (read_model_file(tmp_path / name / "model.pt")["state_dict"] for name in ("full", "killed"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def test_pretrain_streams_a_packed_pool_and_the_result_fine_tunes(tmp_path):
    """forcefit pack → forcefit pretrain (streamed, force-centric by default) → forcefit train --init."""
    import ase.io
    from typer.testing import CliRunner

    from conftest import make_frames
    from forcefit.cli import app
    from forcefit.config import build_config
    from forcefit.training.data_setup import FrameSubset, prepare_data
    from forcefit.training.run import frame_needs

    pool = make_frames(20, rattle=0.06)
    for a in pool[:6]:
        a.calc = None
        a.info["equilibrium"] = True
    ase.io.write(tmp_path / "mols.xyz", pool, format="extxyz")
    ase.io.write(tmp_path / "target.xyz", make_frames(10, seed=7), format="extxyz")
    runner = CliRunner()
    assert runner.invoke(app, ["pack", str(tmp_path / "mols.xyz"), "--out", str(tmp_path / "pool.h5"), "--no-progress"]).exit_code == 0
    cfg = build_config({"data": {"train": [str(tmp_path / "pool.h5")], "stream": True}, "training": {"energy_weight": 0.0},
                        "objective": {"kind": "force-centric"}})
    data = prepare_data(cfg, frame_needs(cfg))
    assert isinstance(data.train, FrameSubset) and len(data.train) + len(data.valid) == 20  # never loaded as a list
    (tmp_path / "pre.yaml").write_text("model: {options: {features: 8, num_layers: 1, num_basis: 4}}\n"
                                       "training: {batch_size: 4, threads: 1}\n")
    result = runner.invoke(app, ["pretrain", "--pool", str(tmp_path / "pool.h5"), "--config", str(tmp_path / "pre.yaml"),
                                 "--max-epochs", "2", "--out", str(tmp_path / "pre"), "--no-progress"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["train", "--train", str(tmp_path / "target.xyz"), "--init", str(tmp_path / "pre" / "model.pt"),
                                 "--max-epochs", "1", "--out", str(tmp_path / "ft"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ft" / "model.pt").exists()
    # mixed levels with energies cannot share one energy head's zero
    bad = runner.invoke(app, ["pretrain", "--pool", str(tmp_path / "mols.xyz"), "--out", str(tmp_path / "bad"), "--no-progress"])
    assert bad.exit_code == 2 and "exactly one packed pool" in bad.output
