"""Several independent stability runs advanced together: one model call per step for all of them.

Fu et al.'s protocol runs MD from several starts per model. For a small
molecule a model call is mostly fixed overhead (graph building, autograd),
so five 9-atom molecules cost little more than one: here the starts are
placed side by side, farther apart than the model's cutoff (they never
interact), and integrated as one system. Langevin noise and friction act
per atom, so each replica follows its own NVT trajectory. A replica that
collapses (a bond more than ``threshold`` from its first-frame length, as in
:mod:`forcefit.simulate.md`) is frozen where it is, so it cannot wander into
the others, and the run stops once every replica has collapsed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .md import COLLAPSE_THRESHOLD, BondWatch, _progress


@dataclass
class ReplicaResult:
    """Per replica: collapse time in fs (None: stable for the whole run); shared: steps, wall time."""

    time_to_collapse_fs: list[float | None]
    steps_done: int
    wall_seconds: float
    steps_per_second: float
    timestep_fs: float
    max_bond_deviation: np.ndarray  # (n_replicas,) largest deviation each replica reached before it stopped, Å
    # with proton_transfer: when each replica first broke the strict criterion (a proton moved), None if never
    strict_collapse_fs: list[float | None] | None = None

    @property
    def simulated_fs(self) -> float:
        return self.steps_done * self.timestep_fs

    def stable_fs(self) -> list[float]:
        """How long each replica lasted: its collapse time, or the whole run."""
        return [self.simulated_fs if t is None else t for t in self.time_to_collapse_fs]


def place_side_by_side(starts: list, gap: float):
    """One Atoms with the starts along x, each box of atoms ``gap`` Å from the next; returns it and the slices."""
    from ase import Atoms

    if not starts:
        raise ValueError("no starting structures")
    combined, slices, x = Atoms(), [], 0.0
    for k, atoms in enumerate(starts):
        if atoms.pbc.any():
            raise ValueError(f"start {k}: periodic structures cannot be run side by side; use run_md for each")
        a = atoms.copy()
        a.calc = None
        a.positions -= a.positions.min(axis=0)
        a.positions[:, 0] += x
        x = float(a.positions[:, 0].max()) + gap
        slices.append(slice(len(combined), len(combined) + len(a)))
        combined.extend(a)
    return combined, slices


def run_replicas(starts: list, calculator, temperature: float = 500, timestep_fs: float = 0.5, steps: int = 1000,
                 friction: float = 0.01, seed: int = 0, gap: float | None = None, progress: bool = True,
                 threshold: float = COLLAPSE_THRESHOLD, proton_transfer: bool = False) -> ReplicaResult:
    """Langevin NVT (``ase.md.langevin``) of every start at once; each gets its own Maxwell–Boltzmann velocities.

    ``gap`` (Å) between neighbouring replicas defaults to the calculator's cutoff + 5 Å. The inputs are
    not modified. Bonds are checked every step, per replica. ``proton_transfer`` lets a hydrogen move along a
    hydrogen bond (:mod:`forcefit.simulate.md`); the result then also says when each replica would have
    collapsed under the strict criterion.
    """
    from ase import units
    from ase.constraints import FixAtoms
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation

    rng = np.random.default_rng(seed)
    moving = []
    for atoms in starts:
        a = atoms.copy()
        MaxwellBoltzmannDistribution(a, temperature_K=temperature, rng=rng)
        Stationary(a)
        ZeroRotation(a)
        moving.append(a)
    cutoff = float(getattr(calculator, "cutoff", 6.0))
    system, slices = place_side_by_side(moving, cutoff + 5.0 if gap is None else gap)
    system.set_momenta(np.concatenate([a.get_momenta() for a in moving]))
    system.calc = calculator
    watch = BondWatch(system, proton_transfer=proton_transfer)
    replica_of_atom = np.concatenate([np.full(s.stop - s.start, k) for k, s in enumerate(slices)])
    bond_replica = replica_of_atom[watch.bonds[:, 0]] if len(watch.bonds) else np.zeros(0, dtype=int)
    n = len(slices)
    collapse: list[float | None] = [None] * n
    strict: list[float | None] = [None] * n
    worst = np.zeros(n)
    frozen: list[int] = []
    dyn = Langevin(system, timestep_fs * units.fs, temperature_K=temperature, friction=friction / units.fs, fixcm=False, rng=rng)
    system.get_forces()  # first evaluation (model warm-up) outside the timing
    bar = _progress() if progress else None
    task = bar.add_task("md", total=steps, rate=0.0, dev=0.0) if bar else None
    done = 0
    t0 = time.perf_counter()
    try:
        if bar:
            bar.start()
        for done in range(1, steps + 1):
            dyn.step()
            per_replica = _per_replica(watch.deviations(system), bond_replica, n)
            strict_dev = _per_replica(np.abs(watch.lengths(system) - watch.reference), bond_replica, n) if proton_transfer else per_replica
            for k in range(n):
                if collapse[k] is None and strict[k] is None and not strict_dev[k] <= threshold:
                    strict[k] = done * timestep_fs
                if collapse[k] is None:
                    worst[k] = max(worst[k], per_replica[k])
                    if not per_replica[k] <= threshold:
                        collapse[k] = done * timestep_fs
                        frozen.extend(range(slices[k].start, slices[k].stop))
                        system.set_constraint(FixAtoms(indices=frozen))
                        system.set_momenta(system.get_momenta())  # zero the frozen momenta now
            if all(c is not None for c in collapse):
                break
            if bar and (done % 10 == 0 or done == steps):
                live = [per_replica[k] for k in range(n) if collapse[k] is None]
                bar.update(task, completed=done, rate=done / (time.perf_counter() - t0), dev=max(live, default=0.0))
    finally:
        wall = time.perf_counter() - t0
        if bar:
            bar.stop()
    return ReplicaResult(time_to_collapse_fs=collapse, steps_done=done, wall_seconds=wall,
                         steps_per_second=done / wall if wall > 0 else float("inf"), timestep_fs=timestep_fs,
                         max_bond_deviation=worst, strict_collapse_fs=strict if proton_transfer else None)


def _per_replica(deviation: np.ndarray, bond_replica: np.ndarray, n: int) -> np.ndarray:
    """Largest bond deviation of each replica; NaN (a blown-up position) counts as infinite."""
    out = np.zeros(n)
    np.maximum.at(out, bond_replica, np.nan_to_num(deviation, nan=np.inf))
    return out
