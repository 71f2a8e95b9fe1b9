"""Langevin NVT molecular dynamics with a stability watch, after Fu et al. (2023).

"Forces are not enough" (Fu et al., TMLR 2023) showed that low force error does
not imply usable MD: models that fit forces well can still blow a molecule
apart within picoseconds. Their stability criterion for molecules is used
here: bonds are the pairs closer than the sum of covalent radii (+0.3 Å, as
in their code) in the first frame; the simulation has collapsed at the first frame where any bond length
deviates from its first-frame value by more than 0.5 Å. ``rdf_error`` is
their h(r) metric: the L1 distance between the interatomic-distance
distributions of a simulated and a reference trajectory.

``proton_transfer=True`` relaxes one case of that criterion: a hydrogen on an
N, O or F atom with a second such atom within ``transfer_distance`` of it in
the first frame (the enol O–H···O of acetylacetone, a hydrogen-bonded water
dimer) may move to that acceptor. Its bond counts as intact while the
hydrogen is within 0.5 Å of the reference O–H length from either partner, so
a proton moving along a hydrogen bond, which the DFT data of such molecules
contain, is not called a collapse; every other bond is checked as before.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

COLLAPSE_THRESHOLD = 0.5  # Å, Fu et al.
TRANSFER_DISTANCE = 2.2  # Å, donor H to acceptor: spans hydrogen bonds (1.5–2.1 Å), not geminal H···X
PROTON_PARTNERS = frozenset({"N", "O", "F"})


@dataclass
class MDResult:
    """What one run produced. Times in fs, deviations in Å."""

    steps_done: int
    wall_seconds: float
    steps_per_second: float
    collapsed: bool
    time_to_collapse_fs: float | None  # None if stable for the whole run
    times_fs: np.ndarray  # (K,) times at which bonds were checked
    max_bond_deviation: np.ndarray  # (K,) max |d − d0| over bonds, Å
    bonds: np.ndarray  # (B, 2) bonded atom pairs found in the first frame
    timestep_fs: float
    threshold: float = COLLAPSE_THRESHOLD
    atoms: object = field(default=None, repr=False)  # final state (ase.Atoms)


class BondWatch:
    """Bonded pairs of the first frame and their deviation from the reference lengths.

    A pair is bonded when closer than r_cov(i) + r_cov(j) + ``skin``; the
    0.3 Å default is ASE's NeighborList default, which Fu et al.'s reference
    code relies on (bare covalent-radius sums, 1.07 Å for C–H, miss real
    C–H bonds of 1.09 Å). Periodic systems use the minimum image of each
    bond vector, which is correct while bonds stay shorter than half the cell.
    """

    def __init__(self, atoms, skin: float = 0.3, proton_transfer: bool = False,
                 transfer_distance: float = TRANSFER_DISTANCE):
        from ase.neighborlist import NeighborList, natural_cutoffs

        nl = NeighborList(natural_cutoffs(atoms), self_interaction=False, bothways=False, skin=skin)
        nl.update(atoms)
        pairs = []
        for i in range(len(atoms)):
            js, _ = nl.get_neighbors(i)
            pairs.extend((min(i, int(j)), max(i, int(j))) for j in js if j != i)
        self.bonds = np.array(sorted(set(pairs)), dtype=np.int64).reshape(-1, 2)
        self.periodic = bool(atoms.pbc.any())
        self.reference = self.lengths(atoms)
        self.transfers = self._transfer_partners(atoms, transfer_distance) if proton_transfer else {}

    def _transfer_partners(self, atoms, transfer_distance: float) -> dict[int, np.ndarray]:
        """Bond index -> (hydrogen, donor, acceptors...) for each X–H bond whose H may hop to an acceptor."""
        symbols = atoms.get_chemical_symbols()
        out = {}
        for b, (i, j) in enumerate(self.bonds):
            h, donor = (i, j) if symbols[i] == "H" else (j, i)
            if symbols[h] != "H" or symbols[donor] not in PROTON_PARTNERS:
                continue
            others = [k for k, s in enumerate(symbols) if s in PROTON_PARTNERS and k != donor]
            if not others:
                continue
            d = self._distances(atoms, h, np.asarray(others))
            acceptors = [k for k, dk in zip(others, d) if dk <= transfer_distance]
            if acceptors:
                out[b] = np.asarray([h, donor, *acceptors])
        return out

    def _distances(self, atoms, i: int, others: np.ndarray) -> np.ndarray:
        vectors = atoms.positions[others] - atoms.positions[i]
        if self.periodic:
            from ase.geometry import find_mic

            vectors, _ = find_mic(vectors, atoms.cell, atoms.pbc)
        return np.linalg.norm(vectors, axis=1)

    def deviations(self, atoms) -> np.ndarray:
        """|d − d0| per bond; a bond whose hydrogen may transfer takes its closest partner's distance."""
        dev = np.abs(self.lengths(atoms) - self.reference)
        for b, (h, *partners) in self.transfers.items():
            dev[b] = np.min(np.abs(self._distances(atoms, h, np.asarray(partners)) - self.reference[b]))
        return dev

    def lengths(self, atoms) -> np.ndarray:
        if len(self.bonds) == 0:
            return np.zeros(0)
        vectors = atoms.positions[self.bonds[:, 1]] - atoms.positions[self.bonds[:, 0]]
        if self.periodic:
            from ase.geometry import find_mic

            vectors, _ = find_mic(vectors, atoms.cell, atoms.pbc)
        return np.linalg.norm(vectors, axis=1)

    def max_deviation(self, atoms) -> float:
        if len(self.bonds) == 0:
            return 0.0
        return float(np.max(self.deviations(atoms)))


class _TrajectoryWriter:
    """Streams frames to ``path``: ASE .traj natively, any multi-frame ASE format (e.g. .xyz → extxyz) otherwise."""

    def __init__(self, path: str | Path, atoms):
        from ase.io.formats import filetype, ioformats

        self.atoms, path = atoms, Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".traj":
            from ase.io.trajectory import Trajectory

            self._traj, self._fh = Trajectory(str(path), "w", atoms), None
            return
        fmt = filetype(str(path), read=False)
        if not ioformats[fmt].can_write or ioformats[fmt].single:
            raise ValueError(f"{path}: format {fmt!r} cannot hold a trajectory; use .traj or .xyz")
        self._traj, self._fh, self._format = None, open(path, "w"), fmt

    def write(self) -> None:
        if self._traj is not None:
            self._traj.write()
        else:
            from ase.io import write

            write(self._fh, self.atoms, format=self._format)

    def close(self) -> None:
        (self._traj or self._fh).close()


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("MD"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.1f} steps/s"), TextColumn("max Δbond {task.fields[dev]:.2f} Å"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        transient=False,
    )


def run_md(
    atoms,
    calculator,
    temperature: float = 500,
    timestep_fs: float = 0.5,
    steps: int = 1000,
    friction: float = 0.01,
    seed: int = 0,
    trajectory: str | Path | None = None,
    progress: bool = True,
    stop_at_collapse: bool = True,
    check_interval: int = 1,
    trajectory_interval: int = 10,
    threshold: float = COLLAPSE_THRESHOLD,
    proton_transfer: bool = False,
) -> MDResult:
    """Langevin NVT (``ase.md.langevin``) from Maxwell–Boltzmann velocities at ``temperature`` (K).

    ``friction`` is in 1/fs. The input ``atoms`` are not modified: the run
    works on a copy, returned as ``result.atoms``. Bond lengths are checked
    every ``check_interval`` steps (every step by default: the check costs
    microseconds); the collapse time is that of the first check past the
    threshold, and with ``stop_at_collapse`` the run ends there. ``trajectory`` (.traj, or any multi-frame ASE format
    such as .xyz) gets the first frame, every ``trajectory_interval``-th
    frame and the collapsed one, with energies and forces. ``proton_transfer`` lets a hydrogen move
    along a hydrogen bond without counting as a collapse (module docstring).
    """
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation

    atoms = atoms.copy()
    atoms.calc = calculator
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    if not atoms.pbc.any():
        ZeroRotation(atoms)
    watch = BondWatch(atoms, proton_transfer=proton_transfer)
    dyn = Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature, friction=friction / units.fs, fixcm=False, rng=rng)
    writer = _TrajectoryWriter(trajectory, atoms) if trajectory is not None else None

    atoms.get_forces()  # first evaluation (model warm-up) outside the timing; Langevin reuses it
    times, deviations = [0.0], [watch.max_deviation(atoms)]
    collapse_time = None
    done = 0
    bar = _progress() if progress else None
    task = bar.add_task("md", total=steps, rate=0.0, dev=0.0) if bar else None
    t0 = time.perf_counter()
    try:
        if bar:
            bar.start()
        if writer is not None:
            writer.write()
        for done in range(1, steps + 1):
            dyn.step()
            dyn.nsteps += 1
            if writer is not None and done % trajectory_interval == 0:
                writer.write()
            if done % check_interval == 0 or done == steps:
                dev = watch.max_deviation(atoms)
                times.append(done * timestep_fs)
                deviations.append(dev)
                if collapse_time is None and not dev <= threshold:  # NaN positions count as collapse
                    collapse_time = done * timestep_fs
                    if writer is not None and done % trajectory_interval != 0:
                        writer.write()  # keep the collapsed frame
                    if stop_at_collapse:
                        break
            if bar and (done % 10 == 0 or done == steps):
                elapsed = time.perf_counter() - t0
                bar.update(task, completed=done, rate=done / elapsed, dev=deviations[-1])
    finally:
        wall = time.perf_counter() - t0
        if bar:
            bar.update(task, completed=done, rate=done / max(wall, 1e-9), dev=deviations[-1])
            bar.stop()
        if writer is not None:
            writer.close()
    return MDResult(
        steps_done=done,
        wall_seconds=wall,
        steps_per_second=done / wall if wall > 0 else float("inf"),
        collapsed=collapse_time is not None,
        time_to_collapse_fs=collapse_time,
        times_fs=np.asarray(times),
        max_bond_deviation=np.asarray(deviations),
        bonds=watch.bonds,
        timestep_fs=timestep_fs,
        threshold=threshold,
        atoms=atoms,
    )


def stability_plot(result: MDResult, path: str | Path) -> Path:
    """PNG of the max bond deviation against time, with the collapse threshold."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot(result.times_fs, result.max_bond_deviation, lw=1)
    ax.axhline(result.threshold, color="r", ls="--", lw=1, label=f"{result.threshold} Å threshold")
    if result.collapsed:
        ax.axvline(result.time_to_collapse_fs, color="k", ls=":", lw=1, label=f"collapse at {result.time_to_collapse_fs:g} fs")
        status = f"collapsed at {result.time_to_collapse_fs:g} fs"
    else:
        status = f"stable for {result.steps_done * result.timestep_fs:g} fs"
    ax.set_xlabel("time (fs)")
    ax.set_ylabel("max |bond length − reference| (Å)")
    ax.set_title(f"{status}; {result.steps_per_second:.1f} steps/s")
    ax.legend(fontsize="small")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def distance_distribution(frames, r_max: float = 10.0, bins: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """h(r): the average normalised histogram of all interatomic distances (bin centres, density in 1/Å).

    ``frames`` is a sequence of ase.Atoms (e.g. ``ase.io.read(path, ":")``).
    Periodic frames use minimum-image distances, so r_max should stay below
    half the cell.
    """
    edges = np.linspace(0.0, r_max, bins + 1)
    total = np.zeros(bins)
    count = 0
    for atoms in frames:
        d = atoms.get_all_distances(mic=bool(atoms.pbc.any()))
        iu = np.triu_indices(len(atoms), k=1)
        hist, _ = np.histogram(d[iu], bins=edges)
        total += hist / max(len(iu[0]), 1)
        count += 1
    if count == 0:
        raise ValueError("no frames")
    width = edges[1] - edges[0]
    return 0.5 * (edges[1:] + edges[:-1]), total / count / width


def rdf_error(frames, reference_frames, r_max: float = 10.0, bins: int = 500) -> float:
    """Fu et al.'s h(r) error: ∫ |⟨h(r)⟩ − ⟨h_ref(r)⟩| dr over [0, r_max] (dimensionless, 0…2)."""
    r, h = distance_distribution(frames, r_max, bins)
    _, h_ref = distance_distribution(reference_frames, r_max, bins)
    return float(np.sum(np.abs(h - h_ref)) * (r[1] - r[0]))
