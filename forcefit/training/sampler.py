"""A shuffling sampler whose order depends only on (seed, epoch): resumed runs see the same batches."""
from __future__ import annotations

import torch


class EpochSeededSampler(torch.utils.data.Sampler):
    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at every epoch start
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n
