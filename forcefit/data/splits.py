"""Seeded splits by count or fraction."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import DataError


def split_indices(n: int, sizes: Sequence[int | float | None], seed: int = 0, source: str | None = None) -> list[np.ndarray]:
    """Shuffle ``range(n)`` with ``seed`` and cut it into consecutive parts.

    Each size is a count (int), a fraction of ``n`` (float < 1), or None for
    "the rest" (at most one None). Sizes that do not fit raise DataError.
    """
    counts: list[int | None] = []
    for s in sizes:
        if s is None:
            counts.append(None)
        elif isinstance(s, float) and 0 < s < 1:
            counts.append(max(1, int(round(s * n))))
        elif int(s) >= 0:
            counts.append(int(s))
        else:
            raise DataError(f"invalid split size {s}", file=source)
    fixed = sum(c for c in counts if c is not None)
    if counts.count(None) > 1:
        raise DataError("at most one split may take 'the rest'", file=source)
    if fixed > n:
        raise DataError(f"splits ask for {fixed} frames but only {n} are available", file=source)
    counts = [n - fixed if c is None else c for c in counts]
    order = np.random.default_rng(seed).permutation(n)
    out, start = [], 0
    for c in counts:
        out.append(np.sort(order[start : start + c]))
        start += c
    return out
