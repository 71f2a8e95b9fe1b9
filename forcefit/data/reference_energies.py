"""Per-element reference energies E0: from isolated atoms, a dict, or a least-squares fit."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from .errors import DataError
from .frame import Frame


def e0s_from_isolated_atoms(path: str | Path) -> dict[int, float]:
    """Energies of single-atom frames in a file (e.g. ``isolated_atoms.xyz``)."""
    from .readers import read_frames

    e0s = {}
    for frame in read_frames(path):
        if frame.n_atoms != 1:
            continue
        if frame.energy is None:
            raise DataError("isolated atom has no energy", frame.source, frame.index, "energy")
        e0s[int(frame.numbers[0])] = float(frame.energy)
    if not e0s:
        raise DataError("contains no single-atom frames with energies", file=str(path))
    return e0s


def e0s_from_mapping(mapping: Mapping) -> dict[int, float]:
    """Accept keys as atomic numbers or symbols: {1: -13.6, "C": -1029.4}."""
    out = {}
    for key, value in mapping.items():
        z = atomic_numbers.get(key) if isinstance(key, str) and not key.isdigit() else int(key)
        if z is None:
            raise DataError(f"unknown element '{key}' in reference energies", field="e0s")
        out[int(z)] = float(value)
    return out


def e0s_least_squares(frames: Sequence[Frame], species: Sequence[int], targets: Sequence[float] | None = None) -> dict[int, float]:
    """Fit E ≈ Σ_z n_z·E0_z over frames with energies (the usual 'average' E0).

    ``targets`` (one per frame) replace the energies as what is fitted, e.g. the
    label minus a model's own prediction when a fine-tuning run refits its E0s.

    With a single composition the system is rank-deficient; lstsq then returns
    the minimum-norm solution, which still removes the mean energy per atom.
    """
    index = {z: k for k, z in enumerate(species)}
    rows, energies = [], []
    for k, f in enumerate(frames):
        if f.energy is None:
            continue
        counts = np.zeros(len(species))
        for z in f.numbers:
            counts[index[int(z)]] += 1
        rows.append(counts)
        energies.append(f.energy if targets is None else targets[k])
    if not rows:
        raise DataError("cannot fit reference energies: no frame has an energy", field="e0s")
    solution, *_ = np.linalg.lstsq(np.array(rows), np.array(energies), rcond=None)
    return {int(z): float(solution[index[z]]) for z in species}


def resolve_e0s(spec, frames: Sequence[Frame], species: Sequence[int]) -> dict[int, float]:
    """``spec`` is 'least_squares', 'zero', a path to isolated atoms, or a mapping."""
    if spec is None or spec == "least_squares":
        e0s = e0s_least_squares(frames, species)
    elif spec == "zero":
        e0s = {int(z): 0.0 for z in species}
    elif isinstance(spec, Mapping):
        e0s = e0s_from_mapping(spec)
    else:
        e0s = e0s_from_isolated_atoms(spec)
    missing = [chemical_symbols[z] for z in species if z not in e0s]
    if missing:
        raise DataError(f"reference energies missing for {', '.join(missing)}", file=None if isinstance(spec, Mapping) else str(spec), field="e0s")
    return {int(z): e0s[int(z)] for z in species}
