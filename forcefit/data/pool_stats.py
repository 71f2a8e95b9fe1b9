"""Statistics of a pool, gathered in one pass while it is packed, so no later run has to read the whole pool for them.

Counts of frames and atoms per source and per level, the elements present,
per-level least-squares E0s, the force RMS and the mean neighbour count at a
stated cutoff. Memory is bounded by the number of distinct compositions, not
by the number of frames.
"""
from __future__ import annotations

import json
from collections import defaultdict

import numpy as np

from .frame import Frame
from .neighbors import neighbor_list

DEFAULT_NEIGHBOR_CUTOFF = 5.0  # Å


class PoolStats:
    """Accumulates the statistics frame by frame; ``result()`` gives them as a plain (JSON-able) dict."""

    def __init__(self, neighbor_cutoff: float = DEFAULT_NEIGHBOR_CUTOFF):
        self.cutoff = float(neighbor_cutoff)
        self.sources: dict[str, dict[str, int]] = defaultdict(lambda: {"frames": 0, "atoms": 0})
        self.levels: dict[str, dict[str, int]] = defaultdict(lambda: {"frames": 0, "atoms": 0, "with_energy": 0, "with_forces": 0})
        self.elements: set[int] = set()
        self.force_square_sum, self.force_components = 0.0, 0
        self.neighbors, self.atoms = 0, 0
        # level -> composition ((Z, count), ...) -> [frames, sum of their energies]: enough for the E0 fit
        self.compositions: dict[str, dict[tuple, list]] = defaultdict(dict)

    def add(self, frame: Frame) -> None:
        n = frame.n_atoms
        for counts in (self.sources[frame.source], self.levels[frame.level]):
            counts["frames"] += 1
            counts["atoms"] += n
        z, count = np.unique(frame.numbers, return_counts=True)
        self.elements.update(z.tolist())
        if frame.energy is not None:
            self.levels[frame.level]["with_energy"] += 1
            entry = self.compositions[frame.level].setdefault(tuple(zip(z.tolist(), count.tolist())), [0, 0.0])
            entry[0] += 1
            entry[1] += frame.energy
        if frame.forces is not None:
            self.levels[frame.level]["with_forces"] += 1
            self.force_square_sum += float(np.sum(frame.forces ** 2))
            self.force_components += frame.forces.size
        i, _j, _shift = neighbor_list(frame.positions, frame.cell, frame.pbc, self.cutoff)
        self.neighbors += len(i)
        self.atoms += n

    def result(self) -> dict:
        """frames, atoms, elements, neighbor_cutoff, mean_neighbors, force_rms (None without forces),
        e0s {level: {Z: eV}} for levels with energies, levels {level: counts}, sources {source: counts}."""
        return {
            "frames": sum(c["frames"] for c in self.sources.values()),
            "atoms": self.atoms,
            "elements": sorted(self.elements),
            "neighbor_cutoff": self.cutoff,
            "mean_neighbors": self.neighbors / max(self.atoms, 1),
            "force_rms": float(np.sqrt(self.force_square_sum / self.force_components)) if self.force_components else None,
            "e0s": {level: fit_e0s(comps) for level, comps in self.compositions.items()},
            "levels": dict(self.levels),
            "sources": dict(self.sources),
        }


def fit_e0s(compositions: dict[tuple, list]) -> dict[int, float]:
    """The fit of ``reference_energies.e0s_least_squares`` (E ≈ Σ_z n_z·E0_z, minimum-norm when rank-deficient), from
    per-composition sums: frames sharing a composition are one row weighted by √count at their mean energy, which has
    the same least-squares solutions as one row per frame."""
    species = sorted({z for composition in compositions for z, _ in composition})
    column = {z: k for k, z in enumerate(species)}
    rows = np.zeros((len(compositions), len(species)))
    targets = np.zeros(len(compositions))
    for r, (composition, (frames, energy_sum)) in enumerate(compositions.items()):
        weight = np.sqrt(frames)
        for z, count in composition:
            rows[r, column[z]] = count * weight
        targets[r] = energy_sum / frames * weight
    solution, *_ = np.linalg.lstsq(rows, targets, rcond=None)
    return {z: float(solution[column[z]]) for z in species}


def stats_from_json(text: str) -> dict:
    """The statistics stored as JSON: JSON keeps only string keys, so the E0s' atomic numbers come back as ints."""
    stats = json.loads(text)
    stats["e0s"] = {level: {int(z): e for z, e in e0s.items()} for level, e0s in stats["e0s"].items()}
    return stats
