"""Simulation: the calculator agrees with the Potential, periodic images work, MD runs and detects collapse."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.calculator import Calculator, all_changes
from ase.io import read

from forcefit.data import Frame, batch_from_frames
from forcefit.models.painn import PaiNN
from forcefit.models.potential import Potential
from forcefit.simulate import ForcefitCalculator, rdf_error, run_md, stability_plot
from forcefit.simulate.md import BondWatch


@pytest.fixture(scope="module")
def potential():
    torch.manual_seed(0)
    potential = Potential(PaiNN(num_species=3, cutoff=4.0, features=16, num_layers=2), [1, 6, 8])
    torch.nn.init.normal_(potential.backbone.readout[-1].weight)  # the readout starts at zero; tests need a non-trivial energy
    return potential


class HarmonicBonds(Calculator):
    """Springs on the bonds of the first geometry: a sane, stable force field for the stability test."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, reference, k=30.0):
        super().__init__()
        self.pairs = BondWatch(reference).bonds
        d = reference.positions[self.pairs[:, 1]] - reference.positions[self.pairs[:, 0]]
        self.d0, self.k = np.linalg.norm(d, axis=1), k

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        i, j = self.pairs.T
        d = self.atoms.positions[j] - self.atoms.positions[i]
        r = np.linalg.norm(d, axis=1)
        g = (self.k * (r - self.d0) / r)[:, None] * d  # dE/dx_j
        forces = np.zeros_like(self.atoms.positions)
        np.add.at(forces, j, -g)
        np.add.at(forces, i, g)
        self.results = {"energy": float(0.5 * self.k * np.sum((r - self.d0) ** 2)), "forces": forces}


class Explode(Calculator):
    """Constant outward push from the centroid: bonds must break within a few fs."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        d = self.atoms.positions - self.atoms.positions.mean(axis=0)
        r = np.linalg.norm(d, axis=1, keepdims=True)
        self.results = {"energy": float(-5.0 * r.sum()), "forces": 5.0 * d / r}


def test_calculator_matches_potential(potential):
    atoms = molecule("CH3CH2OH")
    atoms.calc = ForcefitCalculator(potential, dtype=torch.float64)
    reference = copy.deepcopy(potential).double().eval()
    frame = Frame(positions=atoms.positions, numbers=atoms.numbers)
    out = reference(batch_from_frames([frame], reference.cutoff, torch.float64))
    assert atoms.get_potential_energy() == pytest.approx(float(out["energy"][0]), abs=1e-10)
    assert atoms.get_potential_energy(force_consistent=True) == atoms.get_potential_energy()
    np.testing.assert_allclose(atoms.get_forces(), out["forces"].detach().numpy(), atol=1e-10)
    assert np.abs(atoms.get_forces()).max() > 1e-3  # a non-trivial model
    assert next(potential.parameters()).dtype == torch.float32  # the caller's model is untouched


def test_forces_are_minus_energy_gradient(potential):
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=1)
    atoms.calc = ForcefitCalculator(potential, dtype=torch.float64)
    forces = atoms.get_forces()
    h = 1e-5
    for a, c in [(0, 0), (2, 1), (8, 2)]:
        e = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[a, c] += sign * h
            moved.calc = atoms.calc
            e.append(moved.get_potential_energy())
        assert forces[a, c] == pytest.approx(-(e[0] - e[1]) / (2 * h), abs=1e-6)


def test_no_stale_results(potential):
    atoms = molecule("CH3CH2OH")
    atoms.calc = ForcefitCalculator(potential)
    e0 = atoms.get_potential_energy()
    atoms.positions[0] += 0.1
    e1 = atoms.get_potential_energy()
    numbers = atoms.numbers.copy()
    numbers[[0, 2]] = numbers[[2, 0]]
    atoms.numbers = numbers
    e2 = atoms.get_potential_energy()
    assert len({e0, e1, e2}) == 3


@pytest.mark.parametrize("pbc, repeat", [(True, (2, 2, 2)), ([True, True, False], (2, 2, 1))])
def test_periodic_images_match_supercell(potential, pbc, repeat):
    cell = np.array([[5.0, 0.0, 0.0], [0.8, 5.5, 0.0], [0.3, -0.4, 6.0]])  # triclinic, smaller than 2 cutoffs
    atoms = Atoms("COH", positions=[[0.2, 1.0, 1.0], [2.5, 2.5, 3.0], [4.9, 0.9, 5.8]], cell=cell, pbc=pbc)
    atoms.calc = ForcefitCalculator(potential)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    supercell = atoms.repeat(repeat)
    supercell.calc = ForcefitCalculator(potential)
    copies = int(np.prod(repeat))
    assert supercell.get_potential_energy() == pytest.approx(copies * energy, rel=1e-10)
    np.testing.assert_allclose(supercell.get_forces(), np.tile(forces, (copies, 1)), atol=1e-10)
    isolated = atoms.copy()
    isolated.pbc = False
    isolated.calc = ForcefitCalculator(potential)
    assert abs(isolated.get_potential_energy() - energy) > 1e-5  # the edge atoms really see their images


def test_unknown_element_is_named(potential):
    atoms = molecule("CH3CH2OH")
    atoms.numbers[0] = 7
    atoms.calc = ForcefitCalculator(potential)
    with pytest.raises(ValueError, match=r"\bN\b.*Z=7"):
        atoms.get_potential_energy()


def test_md_runs_requested_steps(potential, tmp_path):
    atoms = molecule("CH3CH2OH")
    traj = tmp_path / "md.traj"
    result = run_md(atoms, ForcefitCalculator(potential), steps=12, trajectory=traj, trajectory_interval=4,
                    stop_at_collapse=False, progress=True)
    assert result.steps_done == 12 and result.steps_per_second > 0 and result.wall_seconds > 0
    assert len(result.max_bond_deviation) == 13 and result.times_fs[-1] == pytest.approx(6.0)
    assert len(read(traj, ":")) == 4  # frames 0, 4, 8, 12
    xyz = tmp_path / "md.xyz"
    run_md(atoms, ForcefitCalculator(potential), steps=4, trajectory=xyz, trajectory_interval=2, stop_at_collapse=False, progress=False)
    images = read(xyz, ":")
    assert len(images) == 3 and images[-1].get_forces().shape == (9, 3)
    np.testing.assert_array_equal(atoms.positions, molecule("CH3CH2OH").positions)  # input untouched


def test_stable_run_does_not_collapse(tmp_path):
    atoms = molecule("CH3CH2OH")
    result = run_md(atoms, HarmonicBonds(atoms), temperature=500, steps=200, progress=False)
    assert len(result.bonds) == 8  # ethanol: C–C, C–O, O–H, 5 C–H
    assert not result.collapsed and result.time_to_collapse_fs is None
    assert result.steps_done == 200
    assert 0.0 < result.max_bond_deviation.max() < 0.5
    png = stability_plot(result, tmp_path / "stable.png")
    assert png.stat().st_size > 5_000


def test_collapse_is_detected_and_stops_early(tmp_path):
    atoms = molecule("CH3CH2OH")
    result = run_md(atoms, Explode(), steps=1000, progress=False, trajectory=tmp_path / "collapse.xyz")
    assert result.collapsed
    assert result.steps_done < 1000
    assert result.time_to_collapse_fs == pytest.approx(result.steps_done * 0.5)
    assert result.max_bond_deviation[-1] > 0.5 and np.all(result.max_bond_deviation[:-1] <= 0.5)
    assert stability_plot(result, tmp_path / "collapse.png").stat().st_size > 5_000
    last = read(tmp_path / "collapse.xyz", -1)  # the collapsed frame is kept
    np.testing.assert_allclose(last.positions, result.atoms.positions, atol=1e-6)


def test_bonds_across_periodic_boundary():
    atoms = Atoms("H2", positions=[[0.2, 2.0, 2.0], [5.65, 2.0, 2.0]], cell=[6.0, 6.0, 6.0], pbc=True)
    watch = BondWatch(atoms)
    assert watch.bonds.tolist() == [[0, 1]]
    assert watch.reference[0] == pytest.approx(0.55)
    atoms.positions[1, 0] = 5.55
    assert watch.max_deviation(atoms) == pytest.approx(0.1)


def test_rdf_error():
    rng = np.random.default_rng(0)
    base = molecule("CH3CH2OH")

    def traj(scale):
        frames = []
        for _ in range(5):
            a = base.copy()
            a.positions += scale * rng.normal(size=a.positions.shape)
            frames.append(a)
        return frames

    reference = traj(0.02)
    assert rdf_error(reference, reference) == 0.0
    assert rdf_error(traj(0.5), reference) > rdf_error(traj(0.02), reference)
