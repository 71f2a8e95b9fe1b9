"""Ordinary energy + force regression, the objective every method builds on."""
from __future__ import annotations

import torch

from .losses import energy_loss, forces_loss


class EnergyForcesObjective:
    """loss = λ_E · energy loss (per atom; MSE or MAE) + λ_F · force loss (MSE or per-atom L2 norm), with per-frame weights."""

    def __init__(self, energy_weight: float = 1.0, forces_weight: float = 100.0, forces_kind: str = "mse", energy_kind: str = "mse"):
        self.energy_weight, self.forces_weight, self.forces_kind = energy_weight, forces_weight, forces_kind
        self.energy_kind = energy_kind

    def __call__(self, model, batch: dict, progress: float = 0.0, generator: torch.Generator | None = None):
        out = model(batch, compute_forces=self.forces_weight > 0)
        loss_e = energy_loss(out, batch, kind=self.energy_kind)
        loss = self.energy_weight * loss_e
        metrics = {"loss_energy": loss_e.detach()}
        if self.forces_weight > 0:
            loss_f = forces_loss(out, batch, kind=self.forces_kind)
            loss = loss + self.forces_weight * loss_f
            metrics["loss_forces"] = loss_f.detach()
        return loss, metrics
