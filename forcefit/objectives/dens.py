"""DeNS: denoising non-equilibrium structures (Liao et al., TMLR 2024; METHODS.md §1).

Per step, structures that have forces are chosen with probability p (or one
coin for the whole batch); in a chosen structure each free atom is corrupted
with probability r by ε ~ N(0, σ²I). The original forces of corrupted atoms
are fed to the backbone (force encoding); a separate equivariant head predicts
ε/σ for them. Energy is trained against the original label, uncorrupted atoms'
forces against the original forces.

Choices where the paper is silent: the force term uses the run's force loss
(squared error by default, same as ordinary training) so that DeNS on/off runs
differ only by denoising; the noise term is mean ‖ε̂ − ε/σ‖ as published.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.neighbors import rebuild_edges
from .losses import energy_loss, forces_loss, per_atom_energy_error

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


def dens_loss(model, batch: dict, corruption: Corruption, sigma: float, energy_weight: float, forces_weight: float,
              dens_weight: float, cutoff: float, force_scale: float = 1.0, forces_kind: str = "mse", energy_kind: str = "mse",
              label_corrupted: bool = True, encode_forces: bool = True):
    """Loss of one DeNS step for a fixed corruption (deterministic, so it can be checked by hand).

    loss = λ_E·L_E + λ_F·L_F(uncorrupted atoms) + λ_DeNS·mean_corrupted ‖ε̂ − ε/σ‖

    ``label_corrupted=False`` (an investigation option, not the published recipe) leaves
    denoising structures out of L_E and L_F: they then train the noise head only.
    ``encode_forces=False`` (ablation) withholds the original forces from the model.
    """
    noisy = dict(batch)
    if corruption.atoms.any():
        noisy["positions"] = batch["positions"] + corruption.noise
        noisy = rebuild_edges(noisy, cutoff)
    condition = None  # no condition (or an all-zero one) adds nothing; None lets a backbone take its cheaper first layer
    if encode_forces and corruption.atoms.any():
        condition = batch["forces"] * corruption.atoms.unsqueeze(-1).to(batch["forces"].dtype) / force_scale
    out = model(noisy, compute_forces=forces_weight > 0, force_condition=condition)
    supervised = None if label_corrupted else ~corruption.structures
    loss_e = energy_loss(out, batch, mask=supervised, kind=energy_kind)
    loss = energy_weight * loss_e
    metrics = {"loss_energy": loss_e.detach()}
    clean = ~corruption.atoms if label_corrupted else ~corruption.structures[batch["batch"]]
    if forces_weight > 0:
        loss_f = forces_loss(out, batch, atom_mask=clean, kind=forces_kind)
        loss = loss + forces_weight * loss_f
        metrics["loss_forces"] = loss_f.detach()
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


class DensObjective:
    """Training objective with DeNS mixed into energy + force regression."""

    def __init__(self, cfg, energy_weight: float, forces_weight: float, cutoff: float, force_rms: float = 1.0,
                 forces_kind: str = "mse", energy_kind: str = "mse", energy_std: float = 1.0):
        self.cfg = cfg
        self.energy_weight, self.forces_weight, self.cutoff = energy_weight, forces_weight, cutoff
        self.force_scale = (force_rms if cfg.normalize_forces else 1.0) / cfg.encoding_scale
        self.forces_kind, self.energy_kind = forces_kind, energy_kind
        # published loss: (λ_E·L_E + λ_F·L_F)/std(E) + λ_DeNS·L_DeNS; ours keeps L_E, L_F in eV, so the
        # same balance is λ_E·L_E + λ_F·L_F + std(E)·λ_DeNS·L_DeNS (an overall factor Adam ignores)
        self.weight_unit = energy_std if cfg.weight_units == "energy_std" else 1.0

    def weight(self, progress: float) -> float:
        """Effective λ_DeNS on the eV-scale loss, decayed linearly to zero over training when ``decay`` is set."""
        w = self.cfg.weight * self.weight_unit
        return w * (1.0 - progress) if self.cfg.decay else w

    def __call__(self, model, batch: dict, progress: float = 0.0, generator: torch.Generator | None = None):
        if generator is None:
            generator = torch.Generator(device=batch["positions"].device)
        c = self.cfg
        corruption = sample_corruption(batch, c.p, c.ratio, c.sigma, c.per_batch, generator)
        loss, metrics = dens_loss(model, batch, corruption, c.sigma, self.energy_weight, self.forces_weight,
                                  self.weight(progress), self.cutoff, self.force_scale, self.forces_kind, self.energy_kind,
                                  label_corrupted=c.label_corrupted, encode_forces=c.encode_forces)
        metrics["dens_weight"] = torch.tensor(self.weight(progress))
        metrics["dens_fraction"] = corruption.structures.float().mean()
        return loss, metrics
