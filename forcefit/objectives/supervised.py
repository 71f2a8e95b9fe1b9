"""Ordinary energy + force regression: the objective every run has unless it names another."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from .base import FrameNeeds, ObjectiveConfig, ObjectiveContext


class SupervisedConfig(ObjectiveConfig):
    """``objective: {kind: supervised}``: the run's loss form (training.energy_loss, forces_loss, weights) on every frame."""

    kind: Literal["supervised"] = "supervised"
    partial_labels: bool = Field(
        True, description="A frame with only an energy, or only forces, trains on what it has; false: every frame needs "
        "every label whose weight is non-zero.")


class Supervised:
    """loss = Σ supervised terms on the clean structures (masks from each frame's labels, per-frame weights)."""

    Config = SupervisedConfig
    aux_heads: tuple[str, ...] = ()

    def __init__(self, cfg: SupervisedConfig, context: ObjectiveContext):
        self.cfg, self.loss = cfg, context.supervised

    @staticmethod
    def frame_needs(cfg: SupervisedConfig, training) -> FrameNeeds:
        """Some label on every frame; with ``partial_labels: false`` every label whose weight is non-zero."""
        strict = not cfg.partial_labels
        return FrameNeeds(energy=strict and training.energy_weight > 0, forces=strict and training.forces_weight > 0)

    def __call__(self, model, batch: dict, progress: float = 0.0, generator: torch.Generator | None = None):
        out = model(batch, compute_forces=self.loss.needs_forces)
        return self.loss(out, batch)

    def describe(self, frames) -> list[str]:
        return []
