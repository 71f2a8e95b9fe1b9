"""Score matching (ASTEROID's unlabelled variant): the estimators against exact values on analytic potentials."""
from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch
from ase.units import kB

from conftest import make_frames
from forcefit.data import Frame, batch_from_frames
from forcefit.objectives.base import ObjectiveContext
from forcefit.objectives.score_matching import (ScoreMatching, ScoreMatchingConfig, denoising_score_loss, rademacher,
                                                sliced_score_loss)
from forcefit.objectives.terms import SupervisedLoss


class _Anharmonic(torch.nn.Module):
    """E = Σ_pairs a·(r_ij − 1)² + b·Σ x⁴: a potential whose Hessian torch computes exactly."""

    def __init__(self, a=0.7, b=0.3):
        super().__init__()
        self.a, self.b = a, b

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        d = x.unsqueeze(0) - x.unsqueeze(1)
        r = (d.pow(2).sum(-1) + torch.eye(len(x), dtype=x.dtype)).sqrt()
        pairs = torch.triu(torch.ones(len(x), len(x), dtype=torch.bool), 1)
        return self.a * ((r - 1) ** 2)[pairs].sum() + self.b * (x**4).sum()

    def forward(self, batch, compute_forces=True, force_condition=None):
        x = batch["positions"]
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        energy = torch.stack([self.energy(x[s:e]) for s, e in zip(batch["ptr"][:-1], batch["ptr"][1:])])
        (grad,) = torch.autograd.grad(energy.sum(), x, create_graph=True)
        return {"energy": energy, "forces": -grad, "positions": x, "vectors": {}}


def _batch(weights=(1.0, 2.0)):
    rng = np.random.default_rng(3)
    frames = [Frame(positions=rng.normal(0, 0.8, (n, 3)), numbers=np.full(n, 6), weight=w) for n, w in zip((3, 4), weights)]
    return batch_from_frames(frames, 5.0, torch.float64), frames


def _exact_trace_per_frame(model, frames):
    """tr(∂F/∂x) = −ΔE per frame, from the full Hessian."""
    out = []
    for f in frames:
        x = torch.tensor(f.positions)
        h = torch.autograd.functional.hessian(lambda y: model.energy(y.reshape(-1, 3)), x.reshape(-1))
        out.append(-torch.diagonal(h).sum().item())
    return out


def test_sliced_loss_matches_the_hand_formula_for_given_projections():
    """loss = Σ_frames w·[k_B·T·mean_k v_kᵀ(∂F/∂x)v_k + ½‖F‖²]/(3n) / Σ w, with v_kᵀ(∂F/∂x)v_k = −v_kᵀHv_k."""
    model, kT = _Anharmonic(), 0.05
    batch, frames = _batch()
    g = torch.Generator().manual_seed(0)
    vs = [rademacher(batch["positions"].shape, g, batch["positions"]) for _ in range(3)]
    loss, _ = sliced_score_loss(model, batch, kT, vs)
    total, wsum, start = 0.0, 0.0, 0
    for f in frames:
        n, x = f.n_atoms, torch.tensor(f.positions)
        h = torch.autograd.functional.hessian(lambda y: model.energy(y.reshape(-1, 3)), x.reshape(-1))
        xg = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model.energy(xg), xg)
        quad = np.mean([-(v[start:start + n].reshape(-1) @ h @ v[start:start + n].reshape(-1)).item() for v in vs])
        total += f.weight * (kT * quad + 0.5 * (grad**2).sum().item()) / (3 * n)
        wsum += f.weight
        start += n
    assert loss.item() == pytest.approx(total / wsum, rel=1e-10)


def test_sliced_estimator_converges_to_the_exact_trace():
    """The mean over many Rademacher projections is the exact divergence tr(∂F/∂x) (Hutchinson)."""
    model = _Anharmonic()
    batch, frames = _batch(weights=(1.0, 1.0))
    exact = _exact_trace_per_frame(model, frames)
    g = torch.Generator().manual_seed(1)
    vs = [rademacher(batch["positions"].shape, g, batch["positions"]) for _ in range(4000)]
    _, metrics = sliced_score_loss(model, batch, 0.0, vs)
    expected = np.mean([t / (3 * f.n_atoms) for t, f in zip(exact, frames)])
    assert metrics["score_divergence"].item() == pytest.approx(expected, rel=0.03)
    _, one = sliced_score_loss(model, batch, 0.0, vs[:1])
    assert one["score_divergence"].item() != pytest.approx(expected, rel=1e-6)  # one projection is an estimate, not the trace


def test_fixed_atoms_are_not_projected_nor_counted():
    model = _Anharmonic()
    batch, _ = _batch()
    g = torch.Generator().manual_seed(0)
    v = rademacher(batch["positions"].shape, g, batch["positions"])
    fixed = batch["fixed"].clone()
    fixed[0] = True
    loss_fixed, _ = sliced_score_loss(model, {**batch, "fixed": fixed}, 0.1, [v])
    loss_free, _ = sliced_score_loss(model, batch, 0.1, [v])
    assert loss_fixed.item() != pytest.approx(loss_free.item())


class _Harmonic(torch.nn.Module):
    """E = ½k‖x − x0‖² about given reference positions: F = −k·(x − x0)."""

    def __init__(self, x0: torch.Tensor, k: float):
        super().__init__()
        self.x0, self.k = x0, k

    def forward(self, batch, compute_forces=True, force_condition=None):
        x = batch["positions"]
        d = x - self.x0
        per_atom = 0.5 * self.k * (d**2).sum(-1)
        energy = torch.zeros(batch["ptr"].shape[0] - 1, dtype=x.dtype).index_add(0, batch["batch"], per_atom)
        return {"energy": energy, "forces": -self.k * d, "positions": x, "vectors": {}}


def test_denoising_target_is_minus_kT_delta_over_sigma_squared():
    """A harmonic model with k = k_B·T/σ² about the clean frames is the exact minimiser: loss 0; the loss of
    any other k is the hand value mean‖(k' − k)·δ‖²/3."""
    batch, _ = _batch(weights=(1.0, 1.0))
    sigma, kT = 0.05, float(kB * 300)
    delta = torch.randn(batch["positions"].shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * sigma
    k = kT / sigma**2
    loss, _ = denoising_score_loss(_Harmonic(batch["positions"], k), batch, kT, delta, sigma, cutoff=5.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-20)
    loss2, _ = denoising_score_loss(_Harmonic(batch["positions"], 2 * k), batch, kT, delta, sigma, cutoff=5.0)
    per_atom = ((k * delta) ** 2).sum(-1)
    expected = np.mean([per_atom[:3].sum().item() / 9, per_atom[3:].sum().item() / 12])
    assert loss2.item() == pytest.approx(expected, rel=1e-12)


def test_frames_need_no_labels_but_a_temperature_from_the_config_or_themselves(tmp_path):
    """No temperature anywhere is an error naming the file and frame, raised before training starts."""
    from forcefit.config import build_config
    from forcefit.training.run import train

    needs = ScoreMatching.frame_needs(ScoreMatchingConfig(temperature=300), None)
    assert not (needs.energy or needs.forces or needs.any_label)
    images = make_frames(4, rattle=0.05)
    for k, a in enumerate(images):
        a.calc = None
        if k != 2:
            a.info["temperature"] = 400.0
    ase.io.write(tmp_path / "md.xyz", images, format="extxyz")
    ase.io.write(tmp_path / "valid.xyz", images[:1], format="extxyz")
    cfg = build_config({"data": {"train": [str(tmp_path / "md.xyz")], "valid": [str(tmp_path / "valid.xyz")]},
                        "objective": {"kind": "score-matching"},
                        "model": {"options": {"features": 8, "num_layers": 1, "num_basis": 4}},
                        "training": {"max_epochs": 1, "progress": False, "threads": 1}, "out": str(tmp_path / "run")})
    with pytest.raises(ValueError, match=r"md\.xyz, frame 2: score matching needs the temperature"):
        train(cfg)


def test_each_frame_is_scored_at_its_own_temperature_and_the_config_fills_the_rest():
    """Two frames tagged 300 K and 900 K: the batch loss is the weighted mean of each frame's loss at its own k_B·T
    (hand-computed frame by frame with a scalar k_B·T); an untagged frame takes objective.temperature; a tag wins."""
    model = _Anharmonic()
    rng = np.random.default_rng(5)
    frames = [Frame(positions=rng.normal(0, 0.8, (n, 3)), numbers=np.full(n, 6), weight=w, temperature=t)
              for n, w, t in ((3, 1.0, 300.0), (4, 2.0, 900.0))]
    batch = batch_from_frames(frames, 5.0, torch.float64)
    v = rademacher(batch["positions"].shape, torch.Generator().manual_seed(1), batch["positions"])
    objective = ScoreMatching(ScoreMatchingConfig(temperature=50.0), ObjectiveContext(SupervisedLoss([]), cutoff=5.0))
    from forcefit.objectives.score_matching import frame_kT

    kT = frame_kT(batch, objective.cfg.temperature)
    assert kT.tolist() == pytest.approx([kB * 300] * 3 + [kB * 900] * 4, rel=1e-12)  # the tags win over the 50 K default
    together, _ = sliced_score_loss(model, batch, kT, [v])
    alone = [sliced_score_loss(model, batch_from_frames([f], 5.0, torch.float64), float(kB * f.temperature), [v[s:e]])[0].item()
             for f, (s, e) in zip(frames, ((0, 3), (3, 7)))]
    assert together.item() == pytest.approx((1.0 * alone[0] + 2.0 * alone[1]) / 3.0, rel=1e-10)
    frames[0].temperature = None  # untagged: the configured temperature
    kT = frame_kT(batch_from_frames(frames, 5.0, torch.float64), 50.0)
    assert kT[:3].tolist() == pytest.approx([kB * 50] * 3) and kT[3:].tolist() == pytest.approx([kB * 900] * 4)
    with pytest.raises(ValueError, match="no temperature tag"):
        frame_kT(batch_from_frames(frames, 5.0, torch.float64), None)
    delta = torch.full(batch["positions"].shape, 0.01, dtype=torch.float64)  # denoising takes per-atom k_B·T too
    harm = _Harmonic(batch["positions"], 0.0)
    loss, _ = denoising_score_loss(harm, batch, frame_kT(batch, None), delta, 0.05, cutoff=5.0)
    per_atom = ((frame_kT(batch, None) / 0.05**2).unsqueeze(-1) * delta).pow(2).sum(-1)
    assert loss.item() == pytest.approx((per_atom[:3].sum().item() / 9 + 2 * per_atom[3:].sum().item() / 12) / 3, rel=1e-12)


def test_a_frames_temperature_is_read_written_and_checked(tmp_path):
    from forcefit.data import read_frames
    from forcefit.data.errors import DataError

    images = make_frames(3, rattle=0.05)
    images[1].info["temperature"] = 450.0
    ase.io.write(tmp_path / "t.xyz", images, format="extxyz")
    frames = read_frames(tmp_path / "t.xyz")
    assert [f.temperature for f in frames] == [None, 450.0, None]
    assert frames[1].to_atoms().info["temperature"] == 450.0
    images[2].info["temperature"] = -5.0
    ase.io.write(tmp_path / "bad.xyz", images, format="extxyz")
    with pytest.raises(DataError, match=r"bad\.xyz.*frame 2.*temperature"):
        read_frames(tmp_path / "bad.xyz")


@pytest.mark.parametrize("estimator", ["sliced", "denoising"])
def test_score_matching_trains_a_real_backbone_on_unlabelled_frames(tmp_path, estimator):
    """End to end on unlabelled frames: the run reads them, sets E0s to zero, keeps its final weights
    (nothing labelled to validate on) and the objective goes down; both estimators twice-differentiate
    the real backbone."""
    import json

    from forcefit.config import build_config
    from forcefit.training.run import train

    images = make_frames(24, rattle=0.05)
    for a in images:
        a.calc = None
    ase.io.write(tmp_path / "md.xyz", images, format="extxyz")
    cfg = build_config({
        "data": {"train": [str(tmp_path / "md.xyz")]},
        "model": {"options": {"features": 8, "num_layers": 1, "num_basis": 4}},
        "training": {"max_epochs": 12, "batch_size": 4, "progress": False, "threads": 1, "lr": 1e-2},
        "objective": {"kind": "score-matching", "temperature": 300, "estimator": estimator, "projections": 2},
        "out": str(tmp_path / "run"),
    })
    result = train(cfg)
    assert result.model_path.exists()
    import csv

    rows = [r for r in csv.DictReader(open(tmp_path / "run" / "logs" / "metrics.csv")) if r.get("train_loss_score")]
    losses = [float(r["train_loss_score"]) for r in rows]
    assert np.all(np.isfinite(losses))
    if estimator == "sliced":  # the denoising loss carries the noise target's variance: too noisy to see it fall in a test
        assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["split"] == "valid"


def test_objective_context_units():
    """k_B·T in eV from the temperature in K."""
    obj = ScoreMatching(ScoreMatchingConfig(temperature=500), ObjectiveContext(SupervisedLoss([]), cutoff=5.0))
    assert obj.kT == pytest.approx(500 * 8.617333262e-5, rel=1e-6)
