"""Force-centric pretraining (Feng et al., NeurIPS 2023) as an objective: every frame by its tag.

- off-equilibrium frames with forces: the run's force loss only, no energy term,
  so pools of different levels of theory and reference energies mix;
- equilibrium frames (``equilibrium`` tag, no labels needed):
  zero-force regularisation λ_0·mean‖F̂(x_eq)‖² and force-based denoising
  λ_dn·mean‖F̂(x_eq + ε) + k·ε‖², ε ~ N(0, σ²I), k = k_B·T/σ² (the harmonic
  target is the Boltzmann score of a Gaussian well times k_B·T).

The equilibrium terms are per force component, like the 'mse' force loss, and
by default weigh what a force label weighs (λ_0 = λ_dn = training.forces_weight):
equal weight per structure, the published default. Frame weights (e.g.
per-source mixture weights) apply to every term. Fixed atoms are not moved.
"""
from __future__ import annotations

from typing import Literal

import torch
from ase.units import kB
from pydantic import Field

from ..data.frame import frame_flags
from .base import FrameNeeds, ObjectiveConfig, ObjectiveContext
from .losses import forces_loss, harmonic_denoising_loss, per_component_mean


class ForceCentricConfig(ObjectiveConfig):
    """``objective: {kind: force-centric, ...}``; defaults are the published ones (T = 300 K, σ = 0.04 Å)."""

    kind: Literal["force-centric"] = "force-centric"
    temperature: float = Field(300.0, gt=0, description="T (K) of the harmonic target's stiffness k = k_B·T/σ².")
    sigma: float = Field(0.04, gt=0, description="σ (Å) of the equilibrium frames' perturbation.")
    zero_force_weight: float | None = Field(None, ge=0, description="λ_0 (default: training.forces_weight).")
    denoise_weight: float | None = Field(None, ge=0, description="λ_dn (default: training.forces_weight).")


def force_centric_loss(model, batch: dict, noise: torch.Tensor, k: float, forces_weight: float, zero_weight: float,
                       denoise_weight: float, cutoff: float, forces_kind: str = "mse") -> tuple[torch.Tensor, dict]:
    """The loss for a given noise ε (N, 3) (deterministic, so it can be checked by hand)."""
    eq = batch["equilibrium"]
    eq_atoms = eq[batch["batch"]] & ~batch["fixed"]
    out = model(batch, compute_forces=True)
    total, metrics = out["forces"].new_zeros(()), {}
    off = (~eq) & batch["has_forces"]
    if off.any() and forces_weight > 0:
        value = forces_loss(out, batch, atom_mask=off[batch["batch"]], kind=forces_kind)
        total = total + forces_weight * value
        metrics["loss_offeq_forces"] = value.detach()
    if eq_atoms.any():
        if zero_weight > 0:
            value = per_component_mean((out["forces"] ** 2).sum(-1), eq_atoms, batch)
            total = total + zero_weight * value
            metrics["loss_zero_force"] = value.detach()
        if denoise_weight > 0:
            value, _ = harmonic_denoising_loss(model, batch, noise, k, eq_atoms, cutoff)
            total = total + denoise_weight * value
            metrics["loss_denoise"] = value.detach()
    return total, metrics


class ForceCentric:
    Config = ForceCentricConfig
    aux_heads: tuple[str, ...] = ()

    def __init__(self, cfg: ForceCentricConfig, context: ObjectiveContext):
        self.cfg, self.cutoff = cfg, context.cutoff
        forces = next((t for t in context.supervised.terms if t.name == "forces"), None)
        self.forces_weight = forces.weight if forces is not None else 0.0
        self.forces_kind = forces.kind if forces is not None else "mse"
        default = self.forces_weight or 1.0
        self.zero_weight = default if cfg.zero_force_weight is None else cfg.zero_force_weight
        self.denoise_weight = default if cfg.denoise_weight is None else cfg.denoise_weight
        self.k = float(kB * cfg.temperature / cfg.sigma**2)  # eV/Å²

    @staticmethod
    def frame_needs(cfg: ForceCentricConfig, training) -> FrameNeeds:
        return FrameNeeds(any_label=False)  # equilibrium frames need no label; see describe() for the others

    def __call__(self, model, batch: dict, progress: float = 0.0, generator: torch.Generator | None = None):
        x = batch["positions"]
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * self.cfg.sigma
        return force_centric_loss(model, batch, noise, self.k, self.forces_weight, self.zero_weight, self.denoise_weight,
                                  self.cutoff, self.forces_kind)

    def describe(self, frames) -> list[str]:
        flags = frame_flags(frames)  # a streamed pool answers from its per-frame arrays
        eq = int(flags["equilibrium"].sum())
        off = int((~flags["equilibrium"] & flags["has_forces"]).sum())
        idle = len(frames) - eq - off
        lines = [f"force-centric: {off} off-equilibrium frames train their forces, {eq} equilibrium frames the zero-force "
                 f"and denoising terms (k = k_B·T/σ² = {self.k:.3g} eV/Å²)"]
        if idle:
            lines.append(f"force-centric: {idle} frames are neither equilibrium nor labelled with forces and train nothing")
        return lines
