"""Structures no method can label: overlapping atoms or non-finite positions, found before any SCF."""
from __future__ import annotations

import numpy as np

from .method import Unlabellable

MIN_DISTANCE = 0.3  # Å: closer atoms are a broken structure, not an SCF problem


class GeometryError(Unlabellable):
    """A structure no method can label (overlapping atoms); never retried."""



def check_geometry(numbers: np.ndarray, positions: np.ndarray, min_distance: float = MIN_DISTANCE) -> None:
    """Raise GeometryError naming the first pair of atoms closer than ``min_distance`` Å."""
    pos = np.asarray(positions, dtype=float)
    if not np.all(np.isfinite(pos)):
        raise GeometryError("positions contain NaN or infinite values")
    if len(pos) < 2:
        return
    diff = pos[:, None, :] - pos[None, :, :]
    d2 = np.einsum("ijk,ijk->ij", diff, diff)  # squared distances: no square root for the common, clean case
    d2.flat[:: len(pos) + 1] = np.inf
    if d2.min() >= min_distance ** 2:
        return
    i, j = np.unravel_index(np.argmin(d2), d2.shape)
    i, j = sorted((int(i), int(j)))
    raise GeometryError(f"overlapping atoms {i} and {j}: {np.sqrt(d2[i, j]):.3f} Å apart (minimum {min_distance} Å)")


def find_unlabellable(structures, min_distance: float = MIN_DISTANCE) -> list[int]:
    """Indices of the structures ``check_geometry`` rejects, checked many at a time.

    One numpy pass per block of structures with the same number of atoms
    (blocks of ~250k atom pairs), instead of a handful of small numpy calls
    per structure next to each SCF: the coordinator screens a whole
    campaign in about a microsecond per small molecule.
    """
    groups: dict[int, list[int]] = {}
    for k, st in enumerate(structures):
        groups.setdefault(len(st.numbers), []).append(k)
    bad = []
    for n, idx in groups.items():
        if n < 2:
            bad += [k for k in idx if not np.all(np.isfinite(np.asarray(structures[k].positions, dtype=float)))]
            continue
        step = max(1, 250_000 // (n * n))
        for a in range(0, len(idx), step):
            part = idx[a:a + step]
            pos = np.stack([np.asarray(structures[k].positions, dtype=float) for k in part])
            diff = pos[:, :, None, :] - pos[:, None, :, :]
            d2 = np.einsum("mijk,mijk->mij", diff, diff)
            d2[:, np.arange(n), np.arange(n)] = np.inf
            ok = d2.reshape(len(part), -1).min(axis=1) >= min_distance ** 2  # NaN (bad positions) compares False
            bad += [k for k, good in zip(part, ok) if not good]
    return bad

