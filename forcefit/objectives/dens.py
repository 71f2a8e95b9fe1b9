"""DeNS: denoising non-equilibrium structures (Liao et al., TMLR 2024), as an objective.

Per step, structures that have forces are chosen with probability p (or one
coin for the whole batch); in a chosen structure each free atom is corrupted
with probability r by ε ~ N(0, σ²I). The original forces of corrupted atoms
are fed to the backbone (force encoding); a separate equivariant head, outside
the backbone, predicts ε/σ for them. Energy is trained against the original
label, uncorrupted atoms' forces against the original forces, both with the
run's own loss form (``training.energy_loss``/``forces_loss``), the same with
and without DeNS. The published small-molecule recipe used energy MAE + force
L2 norm at λ_E:λ_F = 1:80 (``energy_loss: mae, forces_loss: l2,
forces_weight: 80``); set it explicitly to reproduce it.

Choices where the paper is silent: the noise term is mean ‖ε̂ − ε/σ‖ as published.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from ..data.frame import frame_flags
from ..data.neighbors import rebuild_edges
from .base import FrameNeeds, ObjectiveConfig, ObjectiveContext
from .losses import per_atom_energy_error

NOISE_HEAD = "noise"


@dataclass
class Corruption:
    structures: torch.Tensor  # (G,) bool: chosen for denoising
    atoms: torch.Tensor  # (N,) bool: corrupted atoms
    noise: torch.Tensor  # (N, 3) ε, zero on uncorrupted atoms


def sample_corruption(batch: dict, p: float, ratio: float, sigma: float, per_batch: bool, generator: torch.Generator) -> Corruption:
    """Draw which structures/atoms are denoised and their noise. Fixed atoms and frames without forces never move."""
    g = batch["ptr"].shape[0] - 1
    device, dtype = batch["positions"].device, batch["positions"].dtype
    if per_batch:
        coin = torch.rand((), generator=generator, device=device) < p
        structures = coin.expand(g).clone()
    else:
        structures = torch.rand(g, generator=generator, device=device) < p
    structures = structures & batch["has_forces"]
    atoms = structures[batch["batch"]] & ~batch["fixed"]
    atoms = atoms & (torch.rand(atoms.shape, generator=generator, device=device) < ratio)
    noise = torch.randn(batch["positions"].shape, generator=generator, device=device, dtype=dtype) * sigma
    noise = noise * atoms.unsqueeze(-1).to(dtype)
    return Corruption(structures, atoms, noise)


def dens_loss(model, batch: dict, corruption: Corruption, sigma: float, supervised, dens_weight: float, cutoff: float,
              force_scale: float = 1.0, label_corrupted: bool = True, encode_forces: bool = True):
    """Loss of one DeNS step for a fixed corruption (deterministic, so it can be checked by hand).

    loss = supervised loss (energy; forces of uncorrupted atoms) + λ_DeNS·mean_corrupted ‖ε̂ − ε/σ‖

    ``label_corrupted=False`` (an investigation option, not the published recipe) leaves
    denoising structures out of the supervised loss: they then train the noise head only.
    ``encode_forces=False`` (ablation) withholds the original forces from the model.
    """
    noisy = dict(batch)
    if corruption.atoms.any():
        noisy["positions"] = batch["positions"] + corruption.noise
        noisy = rebuild_edges(noisy, cutoff)
    condition = None  # no condition (or an all-zero one) adds nothing; None lets a backbone take its cheaper first layer
    if encode_forces and corruption.atoms.any():
        condition = batch["forces"] * corruption.atoms.unsqueeze(-1).to(batch["forces"].dtype) / force_scale
    out = model(noisy, compute_forces=supervised.needs_forces, force_condition=condition)
    if label_corrupted:
        loss, metrics = supervised(out, batch, atom_mask=~corruption.atoms)
    else:
        loss, metrics = supervised(out, batch, structure_mask=~corruption.structures)
    if corruption.atoms.any():
        predicted = out["vectors"][NOISE_HEAD][corruption.atoms]
        target = corruption.noise[corruption.atoms] / sigma
        loss_dn = (predicted - target).norm(dim=-1).mean()
        loss = loss + dens_weight * loss_dn
        metrics["loss_dens"] = loss_dn.detach()
        metrics["dens_position_mae"] = ((predicted.detach() * sigma - corruption.noise[corruption.atoms]).abs().mean())
    metrics.update(_split_metrics(out, batch, corruption))
    return loss, metrics


def _split_metrics(out: dict, batch: dict, corruption: Corruption) -> dict:
    """Energy/force MAE on denoising vs ordinary structures (meV/atom, meV/Å; forces on clean atoms)."""
    metrics = {}
    e_err = per_atom_energy_error(out, batch).detach().abs() * 1000
    for name, mask in (("denoising", corruption.structures), ("ordinary", ~corruption.structures)):
        m = mask & batch["has_energy"]
        if m.any():
            metrics[f"{name}_energy_mae"] = e_err[m].mean()
        if "forces" in out:
            atoms = mask[batch["batch"]] & ~corruption.atoms & batch["has_forces"][batch["batch"]]
            if atoms.any():
                metrics[f"{name}_forces_mae"] = (out["forces"].detach() - batch["forces"])[atoms].abs().mean() * 1000
    return metrics


class DensConfig(ObjectiveConfig):
    """``objective: {kind: dens, ...}``; defaults are the published small-molecule ones."""

    kind: Literal["dens"] = "dens"
    sigma: float = Field(0.05, gt=0, description="Noise standard deviation σ (Å).")
    p: float = Field(0.25, ge=0, le=1, description="Probability a structure (or the batch) is denoised.")
    ratio: float = Field(0.25, gt=0, le=1, description="Probability each atom of a chosen structure is corrupted (r).")
    weight: float = Field(5.0, ge=0, description="λ_DeNS, in the unit set by weight_units.")
    weight_units: Literal["energy_std", "loss"] = Field(
        "energy_std", description="'energy_std' (published): the published code divides the energy and force terms by the "
        "training energies' std and adds λ_DeNS·noise loss; forcefit's loss is in eV, so the noise term is multiplied by "
        "that std (eV) to keep the published balance. 'loss': λ_DeNS multiplies the noise term as is.")
    decay: bool = Field(True, description="Decay λ_DeNS linearly to 0 over training.")
    per_batch: bool = Field(False, description="One coin per batch (catalyst code) instead of per structure.")
    normalize_forces: bool = Field(False, description="Divide encoded forces by the dataset force RMS.")
    encoding_scale: float = Field(
        1.0, gt=0, description="Multiply encoded forces (eV/Å) by this. The published MD17 code encodes forces in "
        "kcal/mol/Å, about 23 times the eV/Å numbers: 23.06 reproduces that input scale.")
    encode_forces: bool = Field(
        True, description="Feed corrupted atoms' original forces to the model (published). False: denoise without "
        "them, the ill-posed task the force encoding exists to fix (ablation option).")
    label_corrupted: bool = Field(
        True, description="Train energy and uncorrupted atoms' forces of denoising structures against the original "
        "labels (published); false: denoising structures train the noise head only (investigation option).")


class Dens:
    """Training objective with DeNS mixed into the run's supervised loss (one forward pass per step)."""

    Config = DensConfig
    aux_heads = (NOISE_HEAD,)

    def __init__(self, cfg: DensConfig, context: ObjectiveContext):
        self.cfg, self.supervised, self.cutoff = cfg, context.supervised, context.cutoff
        self.force_scale = (context.force_rms if cfg.normalize_forces else 1.0) / cfg.encoding_scale
        # published loss: (λ_E·L_E + λ_F·L_F)/std(E) + λ_DeNS·L_DeNS; ours keeps L_E, L_F in eV, so the
        # same balance is λ_E·L_E + λ_F·L_F + std(E)·λ_DeNS·L_DeNS (an overall factor Adam ignores)
        self.weight_unit = context.energy_std if cfg.weight_units == "energy_std" else 1.0

    @staticmethod
    def frame_needs(cfg: DensConfig, training) -> FrameNeeds:
        """Some label on every frame: frames without forces train without denoising."""
        return FrameNeeds()

    def weight(self, progress: float) -> float:
        """Effective λ_DeNS on the eV-scale loss, decayed linearly to zero over training when ``decay`` is set."""
        w = self.cfg.weight * self.weight_unit
        return w * (1.0 - progress) if self.cfg.decay else w

    def __call__(self, model, batch: dict, progress: float = 0.0, generator: torch.Generator | None = None):
        if generator is None:
            generator = torch.Generator(device=batch["positions"].device)
        c = self.cfg
        corruption = sample_corruption(batch, c.p, c.ratio, c.sigma, c.per_batch, generator)
        loss, metrics = dens_loss(model, batch, corruption, c.sigma, self.supervised, self.weight(progress), self.cutoff,
                                  self.force_scale, label_corrupted=c.label_corrupted, encode_forces=c.encode_forces)
        metrics["dens_weight"] = torch.tensor(self.weight(progress))
        metrics["dens_fraction"] = corruption.structures.float().mean()
        return loss, metrics

    def describe(self, frames) -> list[str]:
        forceless = int((~frame_flags(frames)["has_forces"]).sum())
        lines = [f"DeNS: {len(frames) - forceless} training frames can be denoised; {forceless} have no forces and train without denoising"]
        if self.cfg.weight_units == "energy_std":
            lines.append(f"DeNS: λ_DeNS = {self.cfg.weight:g} × energy std {self.weight_unit:.4g} eV = {self.weight(0.0):.4g} on the eV-scale loss")
        return lines
