"""The Potential: a backbone plus physics (E0s, data scaling, ZBL), forces, levels and auxiliary heads.

E = Σ_i [scale·ε_i^(l) + shift_l + E0_l(z_i)] (+ ZBL) for the level l of the
structure, F = −∂E/∂x by autograd (the default), or a direct per-atom vector
head scaled by ``scale``.

Levels of theory: a multi-level model has one energy readout per level in the
backbone (``energy_heads``) and one set of E0s and one shift per level here;
everything else is shared. A batch names each structure's level by index
(``batch["level"]``); without it, or where it is −1, the model predicts
``default_level``.

Auxiliary heads (the DeNS noise head) live here, outside the backbone, and are
built after it: a run that adds one starts from exactly the backbone weights a
run without it starts from, and export simply leaves them out.
"""
from __future__ import annotations

import torch
from torch import nn

from .scatter import scatter_sum
from .zbl import ZBLRepulsion

DEFAULT_LEVEL = "default"


class Potential(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        species: list[int],
        e0s: dict | None = None,
        scale: float = 1.0,
        shift: float | dict[str, float] = 0.0,
        zbl: bool = False,
        direct_forces: bool = False,
        levels: list[str] | None = None,
        default_level: str | None = None,
        aux_heads: tuple[str, ...] = (),
    ):
        """``e0s``: {Z: eV} for every level, or {level: {Z: eV}}; ``shift``: eV/atom, or {level: eV/atom}."""
        super().__init__()
        self.backbone = backbone
        self.species = [int(z) for z in species]
        self.levels = list(levels or [DEFAULT_LEVEL])
        if len(set(self.levels)) != len(self.levels):
            raise ValueError(f"levels must be distinct, got {self.levels}")
        self.default_level = default_level if default_level is not None else self.levels[-1]
        if self.default_level not in self.levels:
            raise ValueError(f"default level '{self.default_level}' is not one of the levels {self.levels}")
        heads = getattr(backbone, "energy_heads", 1)
        if heads != len(self.levels):
            raise ValueError(f"the backbone has {heads} energy readout(s) for {len(self.levels)} level(s)")
        self.direct_forces = direct_forces
        if direct_forces and "forces" not in getattr(backbone, "vector_heads", {}):
            raise ValueError("direct_forces needs a backbone built with a 'forces' vector head")
        index = torch.full((119,), -1, dtype=torch.long)
        index[torch.tensor(self.species)] = torch.arange(len(self.species))
        self.register_buffer("z_to_index", index, persistent=False)
        per_level_e0 = per_level(e0s or {}, self.levels, is_level_map=lambda d: all(isinstance(v, dict) for v in d.values()) and bool(d))
        self.register_buffer("e0", torch.tensor([[float(per_level_e0[lv].get(z, per_level_e0[lv].get(str(z), 0.0))) for z in self.species]
                                                 for lv in self.levels]))
        shifts = per_level(shift, self.levels, is_level_map=lambda d: isinstance(d, dict))
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("shift", torch.tensor([float(shifts[lv]) for lv in self.levels]))
        self.zbl = ZBLRepulsion() if zbl else None
        make_head = getattr(backbone, "make_vector_head", None)
        if aux_heads and make_head is None:
            raise ValueError(f"backbone {type(backbone).__name__} cannot build auxiliary vector heads")
        self.aux_heads = nn.ModuleDict({name: make_head() for name in aux_heads})

    @property
    def cutoff(self) -> float:
        return self.backbone.cutoff

    def level_index(self, level: str | None) -> int:
        """Index of a level name (None: the default level); a clear error for a level the model lacks."""
        level = self.default_level if level is None else level
        if level not in self.levels:
            raise ValueError(f"level '{level}' is not one of this model's levels: {', '.join(self.levels)}")
        return self.levels.index(level)

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
        default = self.levels.index(self.default_level)
        level = batch.get("level")
        if level is None:
            atom_level = torch.full_like(species, default)
        else:  # −1: the default level
            atom_level = torch.where(level < 0, default, level).index_select(0, batch["batch"])
        eps = out["node_energy"]
        if eps.dim() == 2:  # one column per level
            eps = eps.gather(1, atom_level.unsqueeze(1)).squeeze(1)
        node_energy = eps * self.scale + self.shift.index_select(0, atom_level) + self.e0[atom_level, species]
        if self.zbl is not None:
            node_energy = node_energy + self.zbl(batch["numbers"], batch["edge_index"], edge_vec.norm(dim=-1))
        num_graphs = batch["ptr"].shape[0] - 1
        energy = scatter_sum(node_energy, batch["batch"], num_graphs)
        # Only the direct-force head is in force units; other heads (e.g. DeNS noise ε/σ) are unitless.
        vectors = {k: v * self.scale if k == "forces" else v for k, v in out["vectors"].items()}
        for name, head in self.aux_heads.items():
            vectors[name] = head(out["features"])
        result = {"energy": energy, "node_energy": node_energy, "vectors": vectors, "positions": positions}
        if conservative:
            (grad,) = torch.autograd.grad(energy.sum(), positions, create_graph=self.training)
            result["forces"] = -grad
        elif self.direct_forces:
            result["forces"] = vectors["forces"]
        return result


def per_level(value, levels: list[str], is_level_map) -> dict:
    """``value`` for every level: a {level: v} map is checked against ``levels``; anything else is shared."""
    if isinstance(value, dict) and is_level_map(value):
        missing = [lv for lv in levels if lv not in value]
        if missing:
            raise ValueError(f"no value for level(s) {missing} (given for {sorted(value)})")
        return value
    return {lv: value for lv in levels}
