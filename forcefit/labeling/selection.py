"""Choosing which structures get the expensive label: random, farthest-point, (later) uncertainty.

Farthest-point sampling works in a fixed-length descriptor that any mix of
molecules shares: for every pair of elements, a Gaussian-smeared histogram
of interatomic distances. It spreads the selection over geometries the
cheap sampler visited, and counts structures already labelled as taken, so
asking for more adds diversity rather than repeating it.
"""
from __future__ import annotations

import numpy as np

from ..data.errors import DataError

SELECTION_METHODS = ("random", "fps", "uncertainty")


def descriptors(structures, cutoff: float = 6.0, n_bins: int = 24, width: float = 0.25) -> np.ndarray:
    """(n_structures, n_pairs * n_bins) smeared pair-distance histograms (1/r weighted), per element pair."""
    species = sorted({int(z) for atoms in structures for z in atoms.numbers})
    pairs = {(a, b): i for i, (a, b) in enumerate((a, b) for ia, a in enumerate(species) for b in species[ia:])}
    centres = np.linspace(0.5, cutoff, n_bins)
    out = np.zeros((len(structures), len(pairs), n_bins))
    for k, atoms in enumerate(structures):
        pos, z = atoms.positions, atoms.numbers
        i, j = np.triu_indices(len(z), 1)
        r = np.linalg.norm(pos[i] - pos[j], axis=1)
        keep = r < cutoff
        i, j, r = i[keep], j[keep], r[keep]
        smear = np.exp(-0.5 * ((r[:, None] - centres[None, :]) / width) ** 2) / r[:, None]
        channel = [pairs[(min(a, b), max(a, b))] for a, b in zip(z[i], z[j])]
        np.add.at(out[k], channel, smear)
    return out.reshape(len(structures), -1)


def farthest_point(x: np.ndarray, n: int, taken: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` rows of ``x`` chosen greedily to be far from each other and from ``taken`` rows.

    With nothing taken, the first pick is random (seeded).
    """
    n = min(int(n), len(x))
    if n <= 0:
        return np.zeros(0, dtype=int)
    if taken is not None and len(taken):
        dist = np.min(np.linalg.norm(x[:, None, :] - taken[None, :, :], axis=-1), axis=1)
        chosen = []
    else:
        first = int(np.random.default_rng(seed).integers(len(x)))
        dist = np.linalg.norm(x - x[first], axis=1)
        chosen = [first]
    while len(chosen) < n:
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(x - x[nxt], axis=1))
        dist[chosen] = -1.0
    return np.asarray(chosen, dtype=int)


def select_by_uncertainty(scores: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` candidates with the largest model uncertainty (e.g. committee force spread).

    The hook for active learning: once forcefit trains committees, their
    disagreement per structure is passed here.
    """
    scores = np.asarray(scores, dtype=float)
    return np.argsort(-scores, kind="stable")[: min(int(n), len(scores))]


def select(candidates, n: int, method: str = "random", seed: int = 0, taken=None, scores=None) -> np.ndarray:
    """Indices into ``candidates`` (a list of Atoms) of the ``n`` structures to label.

    ``taken``: structures already chosen or labelled at this level (used by
    "fps"). ``scores``: per-candidate uncertainties, required by
    "uncertainty".
    """
    if method not in SELECTION_METHODS:
        raise DataError(f"unknown selection method '{method}'; choose one of {', '.join(SELECTION_METHODS)}", field="select_by")
    if n < 0:
        raise DataError(f"cannot select a negative number of structures ({n})", field="select")
    if method == "random":
        rng = np.random.default_rng(seed)
        return np.sort(rng.permutation(len(candidates))[: min(n, len(candidates))])
    if method == "uncertainty":
        if scores is None:
            raise DataError(
                "selection by model uncertainty is not available yet: it needs a committee of trained models, "
                "which forcefit does not build yet; use 'random' or 'fps' (or pass per-structure scores in the Python API)",
                field="select_by",
            )
        if len(scores) != len(candidates):
            raise DataError(f"{len(scores)} uncertainty scores for {len(candidates)} candidates", field="scores")
        return np.sort(select_by_uncertainty(scores, n))
    taken = list(taken or [])
    x = descriptors(list(candidates) + taken)
    return np.sort(farthest_point(x[: len(candidates)], n, x[len(candidates):] if taken else None, seed))
