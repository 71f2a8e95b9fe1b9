"""Learning-rate schedule: linear warm-up then cosine decay over training progress.

Progress is the larger of (step / total steps) and (elapsed / time budget), so
a run limited by ``--max-time`` still anneals fully inside its budget. Under a
time budget the warm-up is counted in optimiser steps instead: progress then
follows the clock, and a warm-up fraction of it (1 epoch of 100000) would be
over after the first few steps.
"""
from __future__ import annotations

import math


def warmup_cosine(progress: float, warmup: float, min_ratio: float, step: int | None = None,
                  warmup_steps: float | None = None) -> float:
    """LR multiplier for ``progress`` in [0, 1]; ``warmup`` is a fraction of training, or, when
    ``warmup_steps`` is given, the warm-up lasts that many optimiser steps (``step`` counts them)
    and the cosine runs over the whole of progress."""
    if warmup_steps is not None:
        if warmup_steps > 0 and step < warmup_steps:
            return max(step / warmup_steps, 1e-3)
        warmup = 0.0
    elif warmup > 0 and progress < warmup:
        return max(progress / warmup, 1e-3)
    span = max(1.0 - warmup, 1e-12)
    t = min(max((progress - warmup) / span, 0.0), 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
