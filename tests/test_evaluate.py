"""Evaluation: metrics against hand computation, per-config_type grouping, batching invariance, outputs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase.build import molecule
from torch import nn

from forcefit.data import Frame, batch_from_frames
from forcefit.evaluate import compute_metrics, evaluate, metrics_table, parity_plot, predict
from forcefit.models.painn import PaiNN
from forcefit.models.potential import Potential


class Spring(nn.Module):
    """A fake potential with outputs known in closed form: E = ½k Σ|x|² per graph, F = −kx."""

    species = [1, 6, 8]
    cutoff = 3.0

    def __init__(self, k: float = 2.0):
        super().__init__()
        self.k = nn.Parameter(torch.tensor(k, dtype=torch.float64))

    def forward(self, batch, compute_forces=True):
        x = batch["positions"]
        g = batch["ptr"].shape[0] - 1
        energy = torch.zeros(g, dtype=x.dtype).index_add(0, batch["batch"], 0.5 * self.k * (x * x).sum(-1))
        return {"energy": energy, "forces": -self.k * x}


def frame(n, energy=None, forces=None, config_type="default", seed=0):
    rng = np.random.default_rng(seed)
    return Frame(positions=rng.normal(size=(n, 3)), numbers=np.array([1, 6, 8, 1, 1][:n]), energy=energy, forces=forces, config_type=config_type)


def painn(features=16, dtype=torch.float32):
    torch.manual_seed(0)
    potential = Potential(PaiNN(num_species=3, features=features), [1, 6, 8])
    torch.nn.init.normal_(potential.backbone.readout[-1].weight)  # the readout starts at zero; tests need non-trivial outputs
    return potential.to(dtype)


def molecules(seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for name in ["CH3CH2OH", "H2O", "CH4", "CH3OH"] * 3:
        a = molecule(name)
        n = len(a)
        out.append(Frame(positions=a.positions + 0.05 * rng.normal(size=(n, 3)), numbers=a.numbers, energy=float(rng.normal()),
                         forces=rng.normal(size=(n, 3)), config_type=name))
    return out


def test_metrics_match_hand_computation():
    f_a = np.zeros((2, 3))
    f_b = np.ones((3, 3))
    frames = [
        frame(2, energy=1.0, forces=f_a, config_type="md"),
        frame(3, energy=2.0, forces=f_b, config_type="md"),
        frame(2, energy=None, forces=np.zeros((2, 3)), config_type="rattled"),  # forces only
        frame(3, energy=-1.0, forces=None, config_type="rattled"),  # energy only
    ]
    pred_forces = [f_a + 0.1, f_b - 0.2, np.full((2, 3), 0.3), np.full((3, 3), 99.0)]
    predictions = {"energy": np.array([1.1, 1.7, 5.0, -1.6]), "forces": pred_forces}
    m = compute_metrics(frames, predictions)

    de = np.array([100.0, -300.0, -600.0])  # meV, frames 0, 1, 3
    n_at = np.array([2, 3, 3])
    df = np.concatenate([np.full(6, 100.0), np.full(9, -200.0), np.full(6, 300.0)])  # meV/Å, frames 0, 1, 2
    assert m["n_frames"] == 4 and m["n_energy"] == 3 and m["n_forces"] == 3
    assert m["energy_mae"] == pytest.approx(np.mean(np.abs(de)))
    assert m["energy_mae_per_atom"] == pytest.approx(np.mean(np.abs(de) / n_at))
    assert m["energy_rmse"] == pytest.approx(math.sqrt(np.mean(de**2)))
    assert m["forces_mae"] == pytest.approx(np.mean(np.abs(df)))
    assert m["forces_rmse"] == pytest.approx(math.sqrt(np.mean(df**2)))

    by = m["by_config_type"]
    assert set(by) == {"md", "rattled"}
    assert by["md"]["n_frames"] == 2 and by["md"]["energy_mae"] == pytest.approx(200.0)
    assert by["md"]["forces_mae"] == pytest.approx((6 * 100 + 9 * 200) / 15)
    assert by["rattled"]["n_energy"] == 1 and by["rattled"]["n_forces"] == 1
    assert by["rattled"]["energy_mae"] == pytest.approx(600.0)
    assert by["rattled"]["energy_mae_per_atom"] == pytest.approx(200.0)
    assert by["rattled"]["forces_rmse"] == pytest.approx(300.0)


def test_metrics_without_labels_are_none():
    frames = [frame(2), frame(3)]
    m = compute_metrics(frames, {"energy": np.zeros(2), "forces": [np.zeros((2, 3)), np.zeros((3, 3))]})
    assert m["n_energy"] == 0 and m["energy_mae"] is None and m["forces_rmse"] is None


def test_predict_fake_potential_and_metrics_end_to_end():
    frames = [frame(3, seed=s, config_type="a" if s % 2 else "b") for s in range(5)]
    model = Spring(k=2.0)
    for f in frames:  # labels: the exact answer shifted by known amounts
        f.energy = float(np.sum(f.positions**2)) + 0.01
        f.forces = -2.0 * f.positions + 0.002
    metrics, pred = evaluate(model, frames, batch_size=2)
    for f, e, force in zip(frames, pred["energy"], pred["forces"]):
        assert e == pytest.approx(np.sum(f.positions**2))
        np.testing.assert_allclose(force, -2.0 * f.positions)
    assert metrics["energy_mae"] == pytest.approx(10.0)
    assert metrics["energy_mae_per_atom"] == pytest.approx(10.0 / 3)
    assert metrics["forces_mae"] == pytest.approx(2.0)
    assert metrics["by_config_type"]["a"]["n_frames"] == 2 and metrics["by_config_type"]["b"]["n_frames"] == 3


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_predictions_independent_of_batch_size(dtype, tol):
    potential = painn(dtype=dtype)
    potential.train()
    frames = molecules()
    p1 = predict(potential, frames, batch_size=1)
    p32 = predict(potential, frames, batch_size=32)
    p5 = predict(potential, frames, batch_size=5)
    assert potential.training  # mode restored
    assert np.ptp(p32["energy"]) > 1e-3 and max(np.abs(f).max() for f in p32["forces"]) > 1e-3  # non-trivial
    # equal up to floating-point summation order (bitwise equality is not guaranteed by BLAS)
    np.testing.assert_allclose(p1["energy"], p32["energy"], rtol=tol, atol=tol)
    np.testing.assert_allclose(p5["energy"], p32["energy"], rtol=tol, atol=tol)
    for a, b in zip(p1["forces"], p32["forces"]):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    # and equal to a direct eval-mode call on one batch
    potential.eval()
    out = potential(batch_from_frames(frames, potential.cutoff, dtype))
    np.testing.assert_allclose(p32["energy"], out["energy"].detach().double().numpy(), rtol=tol, atol=tol)


def test_predict_rejects_unknown_element():
    potential = Potential(PaiNN(num_species=3, features=8), [1, 6, 8])
    bad = Frame(positions=np.zeros((1, 3)), numbers=np.array([14]))
    with pytest.raises(ValueError, match="Si"):
        predict(potential, [bad])


def test_table_and_parity_plot(tmp_path):
    potential = painn(features=8)
    frames = molecules()
    metrics, pred = evaluate(potential, frames)
    table = metrics_table(metrics)
    assert table.row_count == 1 + 4
    path = parity_plot(frames, pred, tmp_path / "plots" / "parity.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
