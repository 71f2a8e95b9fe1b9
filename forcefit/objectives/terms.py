"""Supervised loss terms as small composable pieces, each masked by the frame tags it applies to.

``SupervisedLoss`` is the run's one loss form (``training.energy_loss``,
``forces_loss`` and their weights): every objective uses the same one, and the
validation loss that picks the best checkpoint is this loss on the validation
frames. A frame without energy (or forces) drops out of that term only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .losses import energy_loss, forces_loss


@dataclass
class EnergyTerm:
    """λ_E · per-atom energy error (squared: 'mse', absolute: 'mae'), over structures with energies."""

    weight: float
    kind: str = "mse"
    name: str = "energy"

    def __call__(self, out: dict, batch: dict, structure_mask=None, atom_mask=None) -> torch.Tensor:
        return energy_loss(out, batch, mask=structure_mask, kind=self.kind)


@dataclass
class ForcesTerm:
    """λ_F · force error ('mse' of components or 'l2' per-atom norm), over atoms of structures with forces."""

    weight: float
    kind: str = "mse"
    name: str = "forces"

    def __call__(self, out: dict, batch: dict, structure_mask=None, atom_mask=None) -> torch.Tensor:
        mask = atom_mask
        if structure_mask is not None:
            per_atom = structure_mask[batch["batch"]]
            mask = per_atom if mask is None else mask & per_atom
        return forces_loss(out, batch, atom_mask=mask, kind=self.kind)


class SupervisedLoss:
    """Σ_terms weight · term, with per-frame weights and label masks; terms with weight 0 are skipped."""

    def __init__(self, terms: list):
        self.terms = [t for t in terms if t.weight > 0]

    @classmethod
    def from_training(cls, training) -> "SupervisedLoss":
        """The loss form a ``TrainingConfig`` names."""
        return cls([EnergyTerm(training.energy_weight, training.energy_loss),
                    ForcesTerm(training.forces_weight, training.forces_loss)])

    @property
    def needs_forces(self) -> bool:
        return any(isinstance(t, ForcesTerm) for t in self.terms)

    def __call__(self, out: dict, batch: dict, structure_mask=None, atom_mask=None) -> tuple[torch.Tensor, dict]:
        total = out["energy"].new_zeros(())
        metrics = {}
        for term in self.terms:
            value = term(out, batch, structure_mask=structure_mask, atom_mask=atom_mask)
            total = total + term.weight * value
            metrics[f"loss_{term.name}"] = value.detach()
        return total, metrics
