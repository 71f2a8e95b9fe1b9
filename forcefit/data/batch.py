"""Frames → graphs → flat batch tensors (a plain dict, as NequIP does, so export stays simple).

Batch keys: positions (N,3), numbers (N,), batch (N,) graph index, ptr (G+1,),
edge_index (2,E) rows (centre i, neighbour j), edge_shift (E,3) Cartesian
shift so that r_ij = x_j − x_i + edge_shift, cell (G,3,3), pbc (G,3),
energy (G,), forces (N,3), has_energy (G,), has_forces (G,), weight (G,),
fixed (N,) bool, num_atoms (G,), frame_id (G,).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .frame import Frame
from .neighbors import neighbor_list


class GraphDataset(torch.utils.data.Dataset):
    """Frames with their neighbour lists precomputed once (they do not change between epochs)."""

    def __init__(self, frames: Sequence[Frame], cutoff: float):
        self.frames = list(frames)
        self.cutoff = float(cutoff)
        self._graphs = [self._graph(k, f) for k, f in enumerate(self.frames)]

    def _graph(self, k: int, f: Frame) -> dict:
        i, j, s = neighbor_list(f.positions, f.cell, f.pbc, self.cutoff)
        n = f.n_atoms
        return {
            "positions": torch.as_tensor(f.positions, dtype=torch.float64),
            "numbers": torch.as_tensor(f.numbers, dtype=torch.long),
            "edge_index": torch.as_tensor(np.stack([i, j]), dtype=torch.long),
            "edge_shift": torch.as_tensor(s @ f.cell, dtype=torch.float64),
            "cell": torch.as_tensor(f.cell, dtype=torch.float64),
            "pbc": torch.as_tensor(f.pbc, dtype=torch.bool),
            "energy": torch.tensor(0.0 if f.energy is None else f.energy, dtype=torch.float64),
            "has_energy": torch.tensor(f.energy is not None),
            "forces": torch.as_tensor(np.zeros((n, 3)) if f.forces is None else f.forces, dtype=torch.float64),
            "has_forces": torch.tensor(f.forces is not None),
            "weight": torch.tensor(f.weight, dtype=torch.float64),
            "fixed": torch.as_tensor(np.zeros(n, bool) if f.fixed is None else f.fixed, dtype=torch.bool),
            "frame_id": torch.tensor(k),
        }

    def __len__(self) -> int:
        return len(self._graphs)

    def __getitem__(self, k: int) -> dict:
        return self._graphs[k]


def collate(graphs: Sequence[dict], dtype: torch.dtype = torch.float32) -> dict:
    """Concatenate graphs into one flat batch, offsetting edge indices."""
    sizes = torch.tensor([len(g["numbers"]) for g in graphs])
    ptr = torch.zeros(len(graphs) + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(sizes, 0)
    edge_index = torch.cat([g["edge_index"] + ptr[k] for k, g in enumerate(graphs)], dim=1)
    out = {
        "positions": torch.cat([g["positions"] for g in graphs]).to(dtype),
        "numbers": torch.cat([g["numbers"] for g in graphs]),
        "batch": torch.repeat_interleave(torch.arange(len(graphs)), sizes),
        "ptr": ptr,
        "num_atoms": sizes,
        "edge_index": edge_index,
        "edge_shift": torch.cat([g["edge_shift"] for g in graphs]).to(dtype),
        "cell": torch.stack([g["cell"] for g in graphs]).to(dtype),
        "pbc": torch.stack([g["pbc"] for g in graphs]),
        "energy": torch.stack([g["energy"] for g in graphs]).to(dtype),
        "has_energy": torch.stack([g["has_energy"] for g in graphs]),
        "forces": torch.cat([g["forces"] for g in graphs]).to(dtype),
        "has_forces": torch.stack([g["has_forces"] for g in graphs]),
        "weight": torch.stack([g["weight"] for g in graphs]).to(dtype),
        "fixed": torch.cat([g["fixed"] for g in graphs]),
        "frame_id": torch.stack([g["frame_id"] for g in graphs]),
    }
    return out


class Collater:
    """Picklable collate function with a fixed floating dtype (for DataLoader workers)."""

    def __init__(self, dtype: torch.dtype = torch.float32):
        self.dtype = dtype

    def __call__(self, graphs: Sequence[dict]) -> dict:
        return collate(graphs, self.dtype)


def batch_from_frames(frames: Sequence[Frame], cutoff: float, dtype: torch.dtype = torch.float32) -> dict:
    """Convenience for inference and tests: frames straight to one batch."""
    return collate(GraphDataset(frames, cutoff)._graphs, dtype)
