"""Learning-rate schedule: linear warm-up then cosine decay over training progress.

Progress is the larger of (step / total steps) and (elapsed / time budget), so
a run limited by ``--max-time`` still anneals fully inside its budget.
"""
from __future__ import annotations

import math


def warmup_cosine(progress: float, warmup: float, min_ratio: float) -> float:
    """LR multiplier for ``progress`` in [0, 1]; ``warmup`` is a fraction of training."""
    if warmup > 0 and progress < warmup:
        return max(progress / warmup, 1e-3)
    span = max(1.0 - warmup, 1e-12)
    t = min(max((progress - warmup) / span, 0.0), 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
