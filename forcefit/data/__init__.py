"""Data layer: readers, tags, validation, splits, reference energies, neighbour lists, batching.

Never imports models or training.
"""
from .batch import Collater, GraphDataset, batch_from_frames, collate
from .errors import DataError
from .frame import Frame
from .readers import frame_from_atoms, read_frames
from .reference_energies import resolve_e0s
from .splits import split_indices
from .validate import validate_frames

__all__ = [
    "Collater", "DataError", "Frame", "GraphDataset", "batch_from_frames", "collate", "frame_from_atoms",
    "read_frames", "resolve_e0s", "split_indices", "validate_frames",
]
