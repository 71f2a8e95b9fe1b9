"""Radial building blocks shared by the backbones: smooth cutoff and Bessel basis."""
from __future__ import annotations

import math

import torch
from torch import nn


class PolynomialCutoff(nn.Module):
    """Smooth envelope that goes to zero with its first derivatives at r_c (DimeNet, p = 6)."""

    def __init__(self, cutoff: float, p: int = 6):
        super().__init__()
        self.cutoff, self.p = float(cutoff), p

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        x = r / self.cutoff
        p = self.p
        env = 1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
        return env * (x < 1)


class BesselBasis(nn.Module):
    """sin(nπr/r_c)/r radial functions with trainable frequencies (NequIP/MACE style)."""

    def __init__(self, cutoff: float, num_basis: int = 8, trainable: bool = True):
        super().__init__()
        self.cutoff = float(cutoff)
        freqs = torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype()) * math.pi / self.cutoff
        self.freqs = nn.Parameter(freqs) if trainable else nn.Buffer(freqs)
        self.prefactor = math.sqrt(2.0 / self.cutoff)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r.unsqueeze(-1)
        return self.prefactor * torch.sin(self.freqs * r) / r
