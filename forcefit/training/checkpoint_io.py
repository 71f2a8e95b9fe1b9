"""Checkpoints written atomically: a kill mid-write never leaves a truncated file behind."""
from __future__ import annotations

from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..atomic_file import atomic_torch_save


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        atomic_torch_save(checkpoint, path)
