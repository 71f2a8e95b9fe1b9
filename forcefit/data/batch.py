"""Frames → graphs → flat batch tensors (a plain dict, as NequIP does, so export stays simple).

Geometry keys: positions (N,3), numbers (N,), batch (N,) graph index, ptr (G+1,),
edge_index (2,E) rows (centre i, neighbour j), edge_shift (E,3) Cartesian
shift so that r_ij = x_j − x_i + edge_shift, cell (G,3,3), pbc (G,3),
num_atoms (G,). Labels and tags are copied from each frame by the one declared
list ``TAGS`` (energy, forces, which labels are present, weight, level index,
equilibrium, fixed atoms, frame id, sampling temperature), so a new tag is one line here.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .frame import Frame
from .neighbors import neighbor_list


@dataclass(frozen=True)
class Tag:
    """One label or tag of a frame as it travels into the batch."""

    key: str
    per_atom: bool  # (n, ...) per atom, concatenated; else one value per structure, stacked
    dtype: torch.dtype  # float64 entries are cast to the batch's floating dtype
    read: Callable  # (frame, k, level_index) -> value


def _level_index(frame: Frame, k: int, levels: dict[str, int] | None) -> int:
    """The frame's level as an index into the model's levels; −1 (the model's default level) without a list."""
    return -1 if levels is None else levels[frame.level]


TAGS: tuple[Tag, ...] = (
    Tag("energy", False, torch.float64, lambda f, k, lv: 0.0 if f.energy is None else f.energy),
    Tag("has_energy", False, torch.bool, lambda f, k, lv: f.energy is not None),
    Tag("forces", True, torch.float64, lambda f, k, lv: np.zeros((f.n_atoms, 3)) if f.forces is None else f.forces),
    Tag("has_forces", False, torch.bool, lambda f, k, lv: f.forces is not None),
    Tag("weight", False, torch.float64, lambda f, k, lv: f.weight),
    Tag("level", False, torch.long, _level_index),
    Tag("equilibrium", False, torch.bool, lambda f, k, lv: bool(f.equilibrium)),
    Tag("fixed", True, torch.bool, lambda f, k, lv: np.zeros(f.n_atoms, bool) if f.fixed is None else f.fixed),
    Tag("frame_id", False, torch.long, lambda f, k, lv: k),
    Tag("temperature", False, torch.float64, lambda f, k, lv: 0.0 if f.temperature is None else f.temperature),  # 0: not given
)


class GraphDataset(torch.utils.data.Dataset):
    """Frames with their neighbour lists precomputed once (they do not change between epochs)."""

    def __init__(self, frames: Sequence[Frame], cutoff: float, levels: Sequence[str] | None = None):
        """``levels``: the model's levels of theory; each frame's ``level`` becomes its index (None: all 0)."""
        self.frames = list(frames)
        self.cutoff = float(cutoff)
        self.levels = None if levels is None else {name: k for k, name in enumerate(levels)}
        self._graphs = [self._graph(k, f) for k, f in enumerate(self.frames)]

    def _graph(self, k: int, f: Frame) -> dict:
        i, j, s = neighbor_list(f.positions, f.cell, f.pbc, self.cutoff)
        graph = {
            "positions": torch.as_tensor(f.positions, dtype=torch.float64),
            "numbers": torch.as_tensor(f.numbers, dtype=torch.long),
            "edge_index": torch.as_tensor(np.stack([i, j]), dtype=torch.long),
            "edge_shift": torch.as_tensor(s @ f.cell, dtype=torch.float64),
            "cell": torch.as_tensor(f.cell, dtype=torch.float64),
            "pbc": torch.as_tensor(f.pbc, dtype=torch.bool),
        }
        for tag in TAGS:
            graph[tag.key] = torch.as_tensor(np.asarray(tag.read(f, k, self.levels)), dtype=tag.dtype)
        return graph

    def __len__(self) -> int:
        return len(self._graphs)

    def __getitem__(self, k: int) -> dict:
        return self._graphs[k]


class StreamingGraphDataset(GraphDataset):
    """A GraphDataset that reads each frame and builds its graph when asked: for pools too large to hold in memory
    (``forcefit.data.packed.PackedFrames``), at the cost of a neighbour list per access."""

    def __init__(self, frames: Sequence[Frame], cutoff: float, levels: Sequence[str] | None = None):
        self.frames = frames
        self.cutoff = float(cutoff)
        self.levels = None if levels is None else {name: k for k, name in enumerate(levels)}

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, k: int) -> dict:
        return self._graph(k, self.frames[k])


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
    }
    for tag in TAGS:
        values = [g[tag.key] for g in graphs]
        joined = torch.cat(values) if tag.per_atom else torch.stack(values)
        out[tag.key] = joined.to(dtype) if tag.dtype == torch.float64 else joined
    return out


class Collater:
    """Picklable collate function with a fixed floating dtype (for DataLoader workers)."""

    def __init__(self, dtype: torch.dtype = torch.float32):
        self.dtype = dtype

    def __call__(self, graphs: Sequence[dict]) -> dict:
        return collate(graphs, self.dtype)


def batch_from_frames(frames: Sequence[Frame], cutoff: float, dtype: torch.dtype = torch.float32,
                      levels: Sequence[str] | None = None) -> dict:
    """Convenience for inference and tests: frames straight to one batch."""
    return collate(GraphDataset(frames, cutoff, levels)._graphs, dtype)
