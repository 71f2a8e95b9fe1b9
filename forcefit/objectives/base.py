"""The objective contract: what a training method declares, so the training module needs to know nothing about it.

An objective is built from its config section and the run's ``ObjectiveContext``
and declares:
- ``aux_heads``: auxiliary per-atom vector heads it needs on the model (built
  outside the backbone, dropped at export);
- ``frame_needs(cfg, training)`` (static): the labels every training frame
  must carry (the data layer checks them and names the frame that lacks one);
- ``__call__(model, batch, progress, generator) -> (loss, metrics)``: its loss
  for one batch (``progress`` in [0, 1] is the fraction of training done);
- ``describe(frames)``: optional lines for the run log.
Several objectives in one run add their losses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict


class ObjectiveConfig(BaseModel):
    """Base of every objective's config section: a tagged entry ``{kind: NAME, ...settings}``."""

    model_config = ConfigDict(extra="forbid")
    kind: str


@dataclass(frozen=True)
class FrameNeeds:
    """Labels a training frame must carry for an objective (``any_label``: at least one of energy or forces)."""

    energy: bool = False
    forces: bool = False
    any_label: bool = True

    def merge(self, other: "FrameNeeds") -> "FrameNeeds":
        return FrameNeeds(self.energy or other.energy, self.forces or other.forces, self.any_label or other.any_label)


@dataclass
class ObjectiveContext:
    """What the run knows when objectives are built: the supervised loss and training-data statistics."""

    supervised: Any  # forcefit.objectives.terms.SupervisedLoss: the run's one loss form
    cutoff: float
    force_rms: float = 1.0  # eV/Å
    energy_std: float = 1.0  # eV, std of training energies after E0s
