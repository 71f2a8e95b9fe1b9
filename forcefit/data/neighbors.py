"""Neighbour lists (vesin), periodic or not, for single frames and whole batches."""
from __future__ import annotations

import numpy as np
import torch
from vesin import NeighborList


def neighbor_list(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float, with_distances: bool = False):
    """Full (both directions) neighbour list within ``cutoff``.

    Returns i (centre), j (neighbour), integer cell shifts S (so that
    r_ij = x_j − x_i + S·cell) and, optionally, distances.
    """
    pbc = np.asarray(pbc, dtype=bool)
    box = np.asarray(cell, dtype=np.float64) if pbc.any() else np.zeros((3, 3))
    calculator = NeighborList(cutoff=float(cutoff), full_list=True)
    quantities = "ijSd" if with_distances else "ijS"
    out = calculator.compute(points=np.asarray(positions, dtype=np.float64), box=box, periodic=pbc if pbc.any() else False, quantities=quantities)
    i, j, shifts = out[0].astype(np.int64), out[1].astype(np.int64), out[2].astype(np.int64)
    if with_distances:
        return i, j, shifts, out[3]
    return i, j, shifts


def rebuild_edges(batch: dict, cutoff: float) -> dict:
    """Recompute ``edge_index``/``edge_shift`` of a batch after its positions moved (e.g. DeNS noise)."""
    positions = batch["positions"].detach().cpu().double().numpy()
    cells = batch["cell"].detach().cpu().double().numpy()
    pbcs = batch["pbc"].cpu().numpy()
    starts = batch["ptr"].cpu().numpy()
    senders, receivers, shifts = [], [], []
    for g in range(len(starts) - 1):
        a, b = starts[g], starts[g + 1]
        i, j, s = neighbor_list(positions[a:b], cells[g], pbcs[g], cutoff)
        receivers.append(i + a)
        senders.append(j + a)
        shifts.append(s @ cells[g])
    device, dtype = batch["positions"].device, batch["positions"].dtype
    out = dict(batch)
    out["edge_index"] = torch.as_tensor(np.stack([np.concatenate(receivers), np.concatenate(senders)]), device=device)
    out["edge_shift"] = torch.as_tensor(np.concatenate(shifts), dtype=dtype, device=device)
    return out
