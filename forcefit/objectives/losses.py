"""Composable loss terms on model outputs and batch labels (physical units: eV, Å)."""
from __future__ import annotations

import torch

from ..data.neighbors import rebuild_edges
from ..models.scatter import scatter_sum


def per_atom_energy_error(out: dict, batch: dict) -> torch.Tensor:
    """(Ê − E)/n per structure (G,), eV/atom."""
    return (out["energy"] - batch["energy"]) / batch["num_atoms"].to(out["energy"].dtype)


def energy_loss(out: dict, batch: dict, mask: torch.Tensor | None = None, kind: str = "mse") -> torch.Tensor:
    """Weighted mean over structures with energies of the per-atom energy error, squared (``'mse'``)
    or absolute (``'mae'``, the DeNS/Equiformer loss)."""
    w = batch["weight"] * batch["has_energy"].to(batch["weight"].dtype)
    if mask is not None:
        w = w * mask.to(w.dtype)
    err = per_atom_energy_error(out, batch)
    per_structure = err**2 if kind == "mse" else err.abs()
    return (w * per_structure).sum() / w.sum().clamp_min(1e-12)


def forces_loss(out: dict, batch: dict, atom_mask: torch.Tensor | None = None, kind: str = "mse") -> torch.Tensor:
    """Mean over atoms (of structures with forces, optionally masked) of the force error.

    ``kind='mse'`` averages squared components (MACE/NequIP); ``'l2'`` averages
    the per-atom Euclidean norm ‖F̂ − F‖ (the DeNS/Equiformer loss).
    """
    w = (batch["weight"] * batch["has_forces"].to(batch["weight"].dtype))[batch["batch"]]
    if atom_mask is not None:
        w = w * atom_mask.to(w.dtype)
    diff = out["forces"] - batch["forces"]
    per_atom = (diff**2).mean(dim=-1) if kind == "mse" else diff.norm(dim=-1)
    return (w * per_atom).sum() / w.sum().clamp_min(1e-12)


def graph_mean(values: torch.Tensor, batch: dict) -> torch.Tensor:
    """Mean of per-atom values within each structure (G,)."""
    n = batch["ptr"].shape[0] - 1
    return scatter_sum(values, batch["batch"], n) / batch["num_atoms"].to(values.dtype)


def per_component_mean(per_atom: torch.Tensor, atoms: torch.Tensor, batch: dict) -> torch.Tensor:
    """Weighted mean over frames of Σ_atoms(per_atom)/(3·counted atoms), frames weighted by their ``weight`` tag."""
    g = batch["ptr"].shape[0] - 1
    counted = atoms.to(per_atom.dtype)
    sums = scatter_sum(per_atom * counted, batch["batch"], g)
    n = scatter_sum(counted, batch["batch"], g)
    w = batch["weight"].to(per_atom.dtype) * (n > 0).to(per_atom.dtype)
    return (w * sums / (3 * n.clamp_min(1))).sum() / w.sum().clamp_min(1e-12)


def harmonic_denoising_loss(model, batch: dict, displacement: torch.Tensor, k: float, atoms: torch.Tensor,
                            cutoff: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over ``atoms`` of ‖F̂(x + δ) + k·δ‖² per component, δ being ``displacement`` on those atoms and zero
    elsewhere: the force a harmonic well of stiffness k (eV/Å²) about x would give. With k = k_B·T/σ² and Gaussian
    δ of width σ it is both force-centric denoising and denoising score matching. Returns (loss, target −k·δ)."""
    delta = displacement * atoms.unsqueeze(-1).to(displacement.dtype)
    noisy = rebuild_edges({**batch, "positions": batch["positions"] + delta}, cutoff)
    forces = model(noisy, compute_forces=True)["forces"]
    target = -k * delta
    return per_component_mean(((forces - target) ** 2).sum(-1), atoms, batch), target
