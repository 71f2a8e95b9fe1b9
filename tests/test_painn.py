"""Exact symmetry and gradient checks of the fast backbone through the Potential."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from conftest import ETHANOL
from forcefit.data import Frame, batch_from_frames
from forcefit.models.painn import PaiNN
from forcefit.models.potential import Potential

SPECIES = [1, 6, 8]


def _model(zbl=False, heads=("noise",), seed=0):
    torch.manual_seed(seed)
    m = Potential(PaiNN(num_species=3, features=16, num_layers=2, vector_heads=heads), SPECIES, {1: -0.5, 6: -1.0, 8: -2.0}, 0.7, 0.1, zbl=zbl)
    torch.nn.init.normal_(m.backbone.readout[-1].weight)  # the readout starts at zero; a test needs a non-trivial energy
    return m.double().eval()


def _frame(positions, numbers=None):
    return Frame(positions=np.asarray(positions, float), numbers=np.asarray(numbers if numbers is not None else ETHANOL.numbers))


def _run(model, positions, numbers=None, condition=None):
    batch = batch_from_frames([_frame(positions, numbers)], model.cutoff, torch.float64)
    cond = None if condition is None else torch.as_tensor(condition)
    return model(batch, force_condition=cond)


@pytest.mark.parametrize("zbl", [False, True])
def test_rotation_reflection_translation_equivariance(zbl):
    model = _model(zbl)
    x = ETHANOL.positions
    rng = np.random.default_rng(1)
    cond = rng.normal(size=x.shape)
    cond[::2] = 0.0
    ref = _run(model, x, condition=cond)
    for R in (Rotation.random(random_state=3).as_matrix(), -Rotation.random(random_state=4).as_matrix()):
        t = rng.normal(size=3) * 3
        out = _run(model, x @ R.T + t, condition=cond @ R.T)
        assert torch.allclose(out["energy"], ref["energy"], atol=1e-10, rtol=0)
        np.testing.assert_allclose(out["forces"].detach().numpy(), ref["forces"].detach().numpy() @ R.T, atol=1e-10)
        np.testing.assert_allclose(out["vectors"]["noise"].detach().numpy(), ref["vectors"]["noise"].detach().numpy() @ R.T, atol=1e-10)


def test_model_is_not_trivial():
    out = _run(_model(), ETHANOL.positions)
    assert out["forces"].abs().max() > 1e-3


def test_permutation_equivariance():
    model = _model()
    perm = np.random.default_rng(2).permutation(len(ETHANOL))
    ref = _run(model, ETHANOL.positions)
    out = _run(model, ETHANOL.positions[perm], ETHANOL.numbers[perm])
    assert torch.allclose(out["energy"], ref["energy"], atol=1e-10)
    np.testing.assert_allclose(out["forces"].detach().numpy(), ref["forces"].detach().numpy()[perm], atol=1e-10)


def test_forces_are_minus_energy_gradient():
    model = _model(zbl=True)
    x = ETHANOL.positions.copy()
    forces = _run(model, x)["forces"].detach().numpy()
    h = 1e-5
    for atom, axis in [(0, 0), (2, 1), (5, 2), (8, 0)]:
        xp, xm = x.copy(), x.copy()
        xp[atom, axis] += h
        xm[atom, axis] -= h
        fd = -(_run(model, xp)["energy"].item() - _run(model, xm)["energy"].item()) / (2 * h)
        assert abs(fd - forces[atom, axis]) < 1e-6


def test_zero_condition_equals_no_condition_and_energy_adds_e0():
    model = _model()
    a = _run(model, ETHANOL.positions)
    b = _run(model, ETHANOL.positions, condition=np.zeros((9, 3)))
    assert torch.allclose(a["energy"], b["energy"], atol=1e-12)
    # an isolated atom far from everything has energy scale*readout + shift + E0, ZBL-free
    single = _run(model, [[0.0, 0.0, 0.0]], [8])
    species = torch.tensor([2])
    bare = model.backbone(species, torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, 3, dtype=torch.float64))["node_energy"]
    assert torch.allclose(single["energy"], bare * 0.7 + 0.1 - 2.0)


def test_batched_equals_single():
    model = _model()
    frames = [_frame(ETHANOL.positions), _frame(ETHANOL.positions + 0.05)]
    batch = batch_from_frames(frames, model.cutoff, torch.float64)
    out = model(batch)
    for k, f in enumerate(frames):
        single = model(batch_from_frames([f], model.cutoff, torch.float64))
        assert torch.allclose(out["energy"][k], single["energy"][0], atol=1e-12)


def test_periodic_image_interaction():
    """A dimer across a periodic boundary equals the same dimer inside the cell."""
    model = _model()
    cell = np.eye(3) * 10.0
    inside = Frame(positions=np.array([[4.0, 5, 5], [5.1, 5, 5]]), numbers=np.array([6, 8]), cell=cell, pbc=np.ones(3, bool))
    across = Frame(positions=np.array([[0.3, 5, 5], [9.2, 5, 5]]), numbers=np.array([6, 8]), cell=cell, pbc=np.ones(3, bool))
    e_in = model(batch_from_frames([inside], model.cutoff, torch.float64))["energy"]
    e_across = model(batch_from_frames([across], model.cutoff, torch.float64))["energy"]
    assert torch.allclose(e_in, e_across, atol=1e-10)
