"""DeNS: hand-computed loss, exact targets, fixed atoms, equivariant force encoding."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from conftest import ETHANOL
from forcefit.data import Frame, batch_from_frames
from forcefit.models.painn import PaiNN
from forcefit.models.potential import Potential
from forcefit.models.scatter import scatter_sum
from forcefit.objectives.base import ObjectiveContext
from forcefit.objectives.dens import Corruption, Dens, DensConfig, dens_loss, sample_corruption
from forcefit.objectives.terms import EnergyTerm, ForcesTerm, SupervisedLoss


def _supervised(lam_e=1.0, lam_f=80.0, energy_kind="mse", forces_kind="mse"):
    return SupervisedLoss([EnergyTerm(lam_e, energy_kind), ForcesTerm(lam_f, forces_kind)])


def DensObjective(cfg, lam_e, lam_f, cutoff, force_rms=1.0, energy_std=1.0):
    """The DeNS objective with a supervised loss of weights λ_E, λ_F (MSE)."""
    return Dens(cfg, ObjectiveContext(_supervised(lam_e, lam_f), cutoff=cutoff, force_rms=force_rms, energy_std=energy_std))


class QuadraticModel(torch.nn.Module):
    """E = a Σ|x|², F = −2a x, noise head = b · condition: outputs known in closed form."""

    a, b = 0.5, 2.0

    def forward(self, batch, compute_forces=True, force_condition=None):
        x = batch["positions"]
        energy = scatter_sum(self.a * (x**2).sum(-1), batch["batch"], batch["ptr"].shape[0] - 1)
        cond = torch.zeros_like(x) if force_condition is None else force_condition
        return {"energy": energy, "forces": -2 * self.a * x, "vectors": {"noise": self.b * cond}}


def _tiny_batch():
    frames = [
        Frame(positions=np.array([[0.0, 0, 0], [1.0, 0, 0]]), numbers=np.array([1, 1]), energy=0.2, forces=np.array([[0.1, 0, 0], [-0.1, 0, 0]])),
        Frame(positions=np.array([[0.0, 1, 0], [0.0, 1, 1.5]]), numbers=np.array([1, 8]), energy=1.0, forces=np.array([[0, 0, 0.3], [0, 0, -0.3]])),
    ]
    return batch_from_frames(frames, 5.0, torch.float64)


def test_loss_matches_hand_computation():
    batch = _tiny_batch()
    eps = torch.zeros(4, 3, dtype=torch.float64)
    eps[0] = torch.tensor([0.01, -0.02, 0.03], dtype=torch.float64)
    corruption = Corruption(torch.tensor([True, False]), torch.tensor([True, False, False, False]), eps)
    sigma, lam_e, lam_f, lam_d = 0.05, 1.0, 80.0, 5.0
    loss, metrics = dens_loss(QuadraticModel(), batch, corruption, sigma, _supervised(lam_e, lam_f), lam_d, cutoff=5.0)

    a, b = 0.5, 2.0
    # structure 0, atom 0 moved to ε; atom 1 at (1,0,0). Energy of the noisy structure vs the ORIGINAL label.
    e0 = a * (0.01**2 + 0.02**2 + 0.03**2) + a * 1.0
    e1 = a * 1.0 + a * (1.0 + 1.5**2)
    loss_e = ((e0 - 0.2) / 2) ** 2 / 2 + ((e1 - 1.0) / 2) ** 2 / 2
    # forces on the three uncorrupted atoms vs original forces, squared error averaged over components
    f_pred = [(-1.0, 0, 0), (0, -1.0, 0), (0, -1.0, -1.5)]
    f_ref = [(-0.1, 0, 0), (0, 0, 0.3), (0, 0, -0.3)]
    loss_f = sum(sum((p - r) ** 2 for p, r in zip(fp, fr)) / 3 for fp, fr in zip(f_pred, f_ref)) / 3
    # noise head on the corrupted atom: b · f_original vs ε/σ, Euclidean norm
    pred = np.array([b * 0.1, 0, 0])
    target = np.array([0.01, -0.02, 0.03]) / sigma
    loss_dn = math.sqrt(((pred - target) ** 2).sum())
    expected = lam_e * loss_e + lam_f * loss_f + lam_d * loss_dn
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert metrics["loss_dens"].item() == pytest.approx(loss_dn, rel=1e-12)
    assert metrics["dens_position_mae"].item() == pytest.approx(np.abs(pred * sigma - target * sigma).mean(), rel=1e-12)


def test_published_loss_form_matches_hand_computation():
    """Energy MAE per atom + per-atom force norm (the DeNS/Equiformer recipe) on the same tiny case."""
    batch = _tiny_batch()
    eps = torch.zeros(4, 3, dtype=torch.float64)
    eps[0] = torch.tensor([0.01, -0.02, 0.03], dtype=torch.float64)
    corruption = Corruption(torch.tensor([True, False]), torch.tensor([True, False, False, False]), eps)
    loss, _ = dens_loss(QuadraticModel(), batch, corruption, 0.05, _supervised(1.0, 80.0, "mae", "l2"), 5.0, cutoff=5.0)
    a, b = 0.5, 2.0
    e0 = a * (0.01**2 + 0.02**2 + 0.03**2) + a * 1.0
    e1 = a * 1.0 + a * (1.0 + 1.5**2)
    loss_e = (abs(e0 - 0.2) / 2 + abs(e1 - 1.0) / 2) / 2
    # force errors on the three uncorrupted atoms: (−0.9, 0, 0), (0, −1, −0.3), (0, −1, −1.2)
    loss_f = (0.9 + math.sqrt(1.0 + 0.3**2) + math.sqrt(1.0 + 1.2**2)) / 3
    loss_dn = float(np.linalg.norm(np.array([b * 0.1, 0, 0]) - np.array([0.01, -0.02, 0.03]) / 0.05))
    assert loss.item() == pytest.approx(loss_e + 80.0 * loss_f + 5.0 * loss_dn, rel=1e-12)


def test_unlabelled_corrupted_structures_train_the_noise_head_only():
    """label_corrupted=False: the denoising structure drops out of L_E and L_F; only structure 1 is supervised."""
    batch = _tiny_batch()
    eps = torch.zeros(4, 3, dtype=torch.float64)
    eps[0] = torch.tensor([0.01, -0.02, 0.03], dtype=torch.float64)
    corruption = Corruption(torch.tensor([True, False]), torch.tensor([True, False, False, False]), eps)
    loss, _ = dens_loss(QuadraticModel(), batch, corruption, 0.05, _supervised(1.0, 80.0, "mae", "l2"), 5.0, cutoff=5.0,
                        label_corrupted=False)
    a, b = 0.5, 2.0
    e1 = a * 1.0 + a * (1.0 + 1.5**2)
    loss_e = abs(e1 - 1.0) / 2
    loss_f = (math.sqrt(1.0 + 0.3**2) + math.sqrt(1.0 + 1.2**2)) / 2  # structure 1's two atoms only
    loss_dn = float(np.linalg.norm(np.array([b * 0.1, 0, 0]) - np.array([0.01, -0.02, 0.03]) / 0.05))
    assert loss.item() == pytest.approx(loss_e + 80.0 * loss_f + 5.0 * loss_dn, rel=1e-12)


def test_dens_does_not_change_the_loss_form():
    """The loss form is one setting: turning DeNS on leaves the training section (and so the supervised loss) as it is;
    the older top-level ``dens:`` section still reads as the DeNS objective."""
    from forcefit.config import build_config

    plain, dens = build_config({}), build_config({"objective": {"kind": "dens"}})
    assert plain.training == dens.training
    assert (dens.training.energy_loss, dens.training.forces_loss, dens.training.forces_weight) == ("mse", "mse", 100.0)
    legacy = build_config({"dens": {"sigma": 0.1}})
    assert [o.kind for o in legacy.objective] == ["dens"] and legacy.objective[0].sigma == 0.1
    again = build_config(legacy.model_dump())  # a saved config (resume) reads back the same
    assert again.objective == legacy.objective and again.training == legacy.training


def test_tiny_sigma_full_corruption_target_is_displacement_over_sigma():
    batch = batch_from_frames([Frame(positions=ETHANOL.positions, numbers=ETHANOL.numbers, energy=0.0, forces=np.ones((9, 3)))] * 3, 5.0, torch.float64)
    sigma = 1e-9
    c = sample_corruption(batch, p=1.0, ratio=1.0, sigma=sigma, per_batch=False, generator=torch.Generator().manual_seed(0))
    assert c.structures.all() and c.atoms.all()
    noisy = batch["positions"] + c.noise
    target = c.noise / sigma
    torch.testing.assert_close((noisy - batch["positions"]) / sigma, target, rtol=1e-6, atol=1e-6)
    assert abs(target.std().item() - 1.0) < 0.3


def test_fixed_atoms_and_forceless_frames_never_move():
    fixed = np.zeros(9, bool)
    fixed[[0, 4, 7]] = True
    frames = [
        Frame(positions=ETHANOL.positions, numbers=ETHANOL.numbers, energy=0.0, forces=np.ones((9, 3)), fixed=fixed),
        Frame(positions=ETHANOL.positions, numbers=ETHANOL.numbers, energy=0.0, forces=None),
    ]
    batch = batch_from_frames(frames, 5.0, torch.float64)
    for seed in range(20):
        c = sample_corruption(batch, p=1.0, ratio=1.0, sigma=0.1, per_batch=seed % 2 == 0, generator=torch.Generator().manual_seed(seed))
        assert (c.noise[:9][torch.as_tensor(fixed)] == 0).all()
        assert not c.atoms[9:].any() and (c.noise[9:] == 0).all()
        assert not c.structures[1]


def test_per_batch_coin_is_shared():
    batch = batch_from_frames([Frame(positions=ETHANOL.positions, numbers=ETHANOL.numbers, energy=0.0, forces=np.ones((9, 3)))] * 6, 5.0, torch.float64)
    seen = set()
    for seed in range(30):
        c = sample_corruption(batch, p=0.5, ratio=0.5, sigma=0.1, per_batch=True, generator=torch.Generator().manual_seed(seed))
        assert c.structures.all() or not c.structures.any()
        seen.add(bool(c.structures.any()))
    assert seen == {True, False}


def test_force_encoding_makes_noise_prediction_equivariant():
    torch.manual_seed(0)
    model = Potential(PaiNN(3, features=16, num_layers=2), [1, 6, 8], aux_heads=("noise",)).double()
    rng = np.random.default_rng(0)
    forces = rng.normal(size=(9, 3))
    mask = torch.tensor([True, False, True, False, False, True, False, False, False])

    def noise_prediction(R):
        frame = Frame(positions=ETHANOL.positions @ R.T, numbers=ETHANOL.numbers)
        batch = batch_from_frames([frame], 5.0, torch.float64)
        cond = torch.as_tensor(forces @ R.T) * mask.unsqueeze(-1)
        return model(batch, force_condition=cond)["vectors"]["noise"].detach().numpy()

    ref = noise_prediction(np.eye(3))
    R = Rotation.random(random_state=1).as_matrix()
    np.testing.assert_allclose(noise_prediction(R), ref @ R.T, atol=1e-10)
    # the encoding actually changes the prediction (it is not ignored)
    frame = Frame(positions=ETHANOL.positions, numbers=ETHANOL.numbers)
    plain = model(batch_from_frames([frame], 5.0, torch.float64))["vectors"]["noise"].detach().numpy()
    assert np.abs(plain - ref).max() > 1e-6


def test_weight_decays_linearly():
    obj = DensObjective(DensConfig(weight=5.0, decay=True), 1.0, 100.0, cutoff=5.0)
    assert obj.weight(0.0) == 5.0 and obj.weight(0.5) == 2.5 and obj.weight(1.0) == 0.0
    assert DensObjective(DensConfig(weight=5.0, decay=False), 1.0, 100.0, cutoff=5.0).weight(0.9) == 5.0


def test_weight_is_in_units_of_the_energy_std():
    """The published loss divides the energy and force terms by std(E) and adds λ_DeNS·L_DeNS; on an
    eV-scale loss the same balance is std(E)·λ_DeNS. ``weight_units: loss`` opts out."""
    obj = DensObjective(DensConfig(weight=5.0, decay=True), 1.0, 80.0, cutoff=5.0, energy_std=0.2)
    assert obj.weight(0.0) == pytest.approx(1.0) and obj.weight(0.5) == pytest.approx(0.5)
    raw = DensObjective(DensConfig(weight=5.0, weight_units="loss"), 1.0, 80.0, cutoff=5.0, energy_std=0.2)
    assert raw.weight(0.0) == 5.0


def test_energy_std_is_that_of_the_structure_energies_after_e0s(tmp_path):
    """RunData.energy_std: std over training structures of E − Σ E0 (eV), for molecules of any size."""
    import ase.io
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    from forcefit.config import RunConfig
    from forcefit.training.data_setup import prepare_data

    e0s = {1: -13.0, 8: -2040.0}
    rng = np.random.default_rng(0)
    frames, residuals = [], []
    for k in range(12):
        numbers = [8, 1, 1] if k % 2 else [8, 1, 1, 8, 1, 1]
        atoms = Atoms(numbers=numbers, positions=rng.normal(size=(len(numbers), 3)) * 2)
        r = float(rng.normal()) * 0.3
        residuals.append(r)
        energy = sum(e0s[z] for z in numbers) + r
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=rng.normal(size=(len(numbers), 3)))
        frames.append(atoms)
    path = tmp_path / "train.xyz"
    ase.io.write(path, frames, format="extxyz")
    cfg = RunConfig.model_validate({"data": {"train": str(path), "valid": str(path), "e0s": {"H": -13.0, "O": -2040.0}}})
    data = prepare_data(cfg)
    assert data.energy_std == pytest.approx(np.std(residuals), rel=1e-9)


class _RecordingModel(QuadraticModel):
    """QuadraticModel that keeps the force condition it was given."""

    def forward(self, batch, compute_forces=True, force_condition=None):
        self.seen = force_condition
        return super().forward(batch, compute_forces, force_condition)


def test_encoding_scale_multiplies_and_ablation_withholds_the_encoded_forces():
    batch = _tiny_batch()
    model, gen = _RecordingModel(), lambda: torch.Generator().manual_seed(3)
    cfg = dict(p=1.0, ratio=1.0, sigma=0.05)
    DensObjective(DensConfig(**cfg), 1.0, 80.0, cutoff=5.0)(model, batch, generator=gen())
    plain = model.seen.clone()
    assert torch.equal(plain, batch["forces"])  # every atom corrupted: the condition is the original forces
    DensObjective(DensConfig(**cfg, encoding_scale=23.06), 1.0, 80.0, cutoff=5.0)(model, batch, generator=gen())
    assert torch.allclose(model.seen, 23.06 * plain, rtol=1e-12)
    DensObjective(DensConfig(**cfg, normalize_forces=True, encoding_scale=2.0), 1.0, 80.0, cutoff=5.0, force_rms=0.5)(
        model, batch, generator=gen())
    assert torch.allclose(model.seen, 4.0 * plain, rtol=1e-12)
    _, metrics = DensObjective(DensConfig(**cfg, encode_forces=False), 1.0, 80.0, cutoff=5.0)(model, batch, generator=gen())
    assert model.seen is None
    # without the encoding the noise head sees nothing (b · 0), so its loss is mean ‖ε/σ‖ over the corrupted atoms
    corruption = sample_corruption(batch, 1.0, 1.0, 0.05, False, gen())
    assert metrics["loss_dens"].item() == pytest.approx((corruption.noise / 0.05).norm(dim=-1).mean().item(), rel=1e-12)
