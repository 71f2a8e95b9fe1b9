"""Stability runs side by side: replicas do not interact, each collapses on its own, a collapsed one is frozen."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.calculators.calculator import Calculator, all_changes

from forcefit.models.painn import PaiNN
from forcefit.models.potential import Potential
from forcefit.simulate import ForcefitCalculator
from forcefit.simulate.md import BondWatch
from forcefit.simulate.replicas import place_side_by_side, run_replicas


def starts(n=3):
    out = []
    for k in range(n):
        a = molecule("CH3CH2OH")
        a.rattle(0.02, seed=k)
        out.append(a)
    return out


class Springs(Calculator):
    """Harmonic springs on the bonds of the first geometry it is asked about; ``push`` atoms also get a constant outward force."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, push=(), k=30.0):
        super().__init__()
        self.push, self.k, self.pairs = list(push), k, None

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        pos = self.atoms.positions
        if self.pairs is None:
            self.pairs = BondWatch(self.atoms).bonds
            self.d0 = np.linalg.norm(pos[self.pairs[:, 1]] - pos[self.pairs[:, 0]], axis=1)
        i, j = self.pairs.T
        d = pos[j] - pos[i]
        r = np.linalg.norm(d, axis=1)
        g = (self.k * (r - self.d0) / r)[:, None] * d
        forces = np.zeros_like(pos)
        np.add.at(forces, j, -g)
        np.add.at(forces, i, g)
        if self.push:
            centre = pos[self.push].mean(axis=0)
            forces[self.push] += 40.0 * (pos[self.push] - centre)
        self.results = {"energy": 0.0, "forces": forces}


def test_replicas_do_not_interact():
    torch.manual_seed(0)
    potential = Potential(PaiNN(num_species=3, cutoff=4.0, features=16, num_layers=2), [1, 6, 8]).double()
    torch.nn.init.normal_(potential.backbone.readout[-1].weight)
    calc = ForcefitCalculator(potential)
    mols = starts(3)
    system, slices = place_side_by_side(mols, gap=calc.cutoff + 1.0)
    assert [s.stop - s.start for s in slices] == [len(m) for m in mols]
    system.calc = calc
    forces, energy = system.get_forces(), system.get_potential_energy()
    alone = []
    for m in mols:
        m = m.copy()
        m.calc = ForcefitCalculator(potential)
        alone.append((m.get_potential_energy(), m.get_forces()))
    assert energy == pytest.approx(sum(e for e, _ in alone), abs=1e-9)
    for s, (_, f) in zip(slices, alone):
        np.testing.assert_allclose(forces[s], f, atol=1e-10)


def test_one_replica_collapses_alone_and_the_others_run_on():
    mols = starts(3)
    n = len(mols[0])
    r = run_replicas(mols, Springs(push=range(n, 2 * n)), temperature=50, steps=200, seed=1, progress=False)
    assert r.steps_done == 200
    assert r.time_to_collapse_fs[0] is None and r.time_to_collapse_fs[2] is None
    assert r.time_to_collapse_fs[1] is not None and r.time_to_collapse_fs[1] < 50
    assert r.stable_fs() == [100.0, r.time_to_collapse_fs[1], 100.0]
    assert r.max_bond_deviation[0] < 0.5 and r.max_bond_deviation[2] < 0.5


def test_run_stops_when_every_replica_has_collapsed():
    mols = starts(2)
    r = run_replicas(mols, Springs(push=range(2 * len(mols[0]))), temperature=50, steps=2000, progress=False)
    assert all(t is not None for t in r.time_to_collapse_fs)
    assert r.steps_done < 2000


def test_periodic_starts_are_refused():
    a = molecule("H2O")
    a.cell, a.pbc = [10, 10, 10], True
    with pytest.raises(ValueError, match="periodic"):
        place_side_by_side([a], gap=5.0)


def water_dimer():
    """A hydrogen-bonded water dimer: atom 1 is the donor hydrogen of O0, 1.94 Å from the acceptor O3."""
    from ase import Atoms

    return Atoms("OHHOHH", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0],
                                      [2.9, 0, 0], [3.2, 0.8, 0.3], [3.2, -0.8, 0.3]])


def test_proton_transfer_along_a_hydrogen_bond_is_not_a_collapse():
    atoms = water_dimer()
    strict, tolerant = BondWatch(atoms), BondWatch(atoms, proton_transfer=True)
    assert list(tolerant.transfers) == [strict.bonds.tolist().index([0, 1])]  # only the hydrogen-bonded O–H
    moved = atoms.copy()
    moved.positions[1] = [1.94, 0, 0]  # the proton now sits 0.96 Å from the acceptor
    assert strict.max_deviation(moved) == pytest.approx(0.98)
    assert tolerant.max_deviation(moved) == pytest.approx(0.0, abs=1e-12)
    moved.positions[2] = [-0.48, 1.86, 0]  # a bond that cannot transfer still breaks
    assert tolerant.max_deviation(moved) == pytest.approx(0.96, abs=1e-3)


def test_proton_transfer_changes_nothing_without_an_acceptor():
    atoms = molecule("CH3CH2OH")
    watch = BondWatch(atoms, proton_transfer=True)
    assert watch.transfers == {}
    atoms.rattle(0.3, seed=0)
    np.testing.assert_array_equal(watch.deviations(atoms), np.abs(watch.lengths(atoms) - watch.reference))


class PullProton(Springs):
    """Springs on every bond but the donor's O–H; the donor hydrogen is pulled onto the acceptor's side."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        if self.pairs is None:
            self.pairs = np.array([p for p in BondWatch(atoms).bonds.tolist() if p[1] % 6 != 1]).reshape(-1, 2)
            pos = atoms.positions
            self.d0 = np.linalg.norm(pos[self.pairs[:, 1]] - pos[self.pairs[:, 0]], axis=1)
        super().calculate(atoms, properties, system_changes)
        pos = self.atoms.positions
        for h in range(1, len(pos), 6):
            self.results["forces"][h] += 20.0 * (pos[h + 2] - [0.96, 0, 0] - pos[h])


def test_replicas_report_when_the_strict_criterion_would_have_stopped():
    r = run_replicas([water_dimer(), water_dimer()], PullProton(), temperature=10, steps=400, seed=0, friction=0.5,
                     progress=False, proton_transfer=True)
    assert r.time_to_collapse_fs == [None, None]
    assert all(t is not None and t < 200 for t in r.strict_collapse_fs)
    strict = run_replicas([water_dimer(), water_dimer()], PullProton(), temperature=10, steps=400, seed=0, friction=0.5,
                           progress=False)
    assert strict.strict_collapse_fs is None
    assert strict.time_to_collapse_fs == r.strict_collapse_fs
