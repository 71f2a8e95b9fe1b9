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
