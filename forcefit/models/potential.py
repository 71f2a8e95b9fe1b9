"""The Potential: a backbone plus physics (E0 shift, data scaling, ZBL) and forces.

E = Σ_i [scale·ε_i + shift + E0(z_i)] (+ ZBL), F = −∂E/∂x by autograd (the
default), or a direct per-atom vector head scaled by ``scale``.
"""
from __future__ import annotations

import torch
from torch import nn

from .scatter import scatter_sum
from .zbl import ZBLRepulsion


class Potential(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        species: list[int],
        e0s: dict[int, float] | None = None,
        scale: float = 1.0,
        shift: float = 0.0,
        zbl: bool = False,
        direct_forces: bool = False,
    ):
        super().__init__()
        self.backbone = backbone
        self.species = [int(z) for z in species]
        self.direct_forces = direct_forces
        if direct_forces and "forces" not in getattr(backbone, "vector_heads", {}):
            raise ValueError("direct_forces needs a backbone built with a 'forces' vector head")
        index = torch.full((119,), -1, dtype=torch.long)
        index[torch.tensor(self.species)] = torch.arange(len(self.species))
        self.register_buffer("z_to_index", index, persistent=False)
        e0s = e0s or {}
        self.register_buffer("e0", torch.tensor([float(e0s.get(z, 0.0)) for z in self.species]))
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("shift", torch.tensor(float(shift)))
        self.zbl = ZBLRepulsion() if zbl else None

    @property
    def cutoff(self) -> float:
        return self.backbone.cutoff

    def forward(self, batch: dict, compute_forces: bool = True, force_condition: torch.Tensor | None = None) -> dict:
        """Energies (G,), forces (N,3) and any extra vector heads for a flat batch."""
        positions = batch["positions"]
        conservative = compute_forces and not self.direct_forces
        if conservative and not positions.requires_grad:
            positions = positions.detach().requires_grad_(True)
        i, j = batch["edge_index"]
        edge_vec = positions[j] - positions[i] + batch["edge_shift"]
        species = self.z_to_index[batch["numbers"]]
        out = self.backbone(species, batch["edge_index"], edge_vec, force_condition)
        node_energy = out["node_energy"] * self.scale + self.shift + self.e0[species]
        if self.zbl is not None:
            node_energy = node_energy + self.zbl(batch["numbers"], batch["edge_index"], edge_vec.norm(dim=-1))
        num_graphs = batch["ptr"].shape[0] - 1
        energy = scatter_sum(node_energy, batch["batch"], num_graphs)
        # Only the direct-force head is in force units; other heads (e.g. DeNS noise ε/σ) are unitless.
        vectors = {k: v * self.scale if k == "forces" else v for k, v in out["vectors"].items()}
        result = {"energy": energy, "node_energy": node_energy, "vectors": vectors, "positions": positions}
        if conservative:
            (grad,) = torch.autograd.grad(energy.sum(), positions, create_graph=self.training)
            result["forces"] = -grad
        elif self.direct_forces:
            result["forces"] = vectors["forces"]
        return result
