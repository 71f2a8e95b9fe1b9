"""Index-add helpers (no torch_scatter dependency)."""
from __future__ import annotations

import torch


def scatter_sum(src: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Sum rows of ``src`` into ``size`` buckets given by ``index`` (first dimension)."""
    out = torch.zeros((size,) + tuple(src.shape[1:]), dtype=src.dtype, device=src.device)
    return out.index_add(0, index, src)
