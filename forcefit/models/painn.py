"""PaiNN (Schütt et al., ICML 2021): the fast backbone with scalar and vector (l ≤ 1) features.

Cheap because every operation is a per-channel scaling of vectors or an MLP on
scalars: no Clebsch–Gordan products. It carries degrees l = 0 and 1, so the
DeNS force encoding enters as (|f|/√3) into the scalars and f itself into
the vectors.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .radial import BesselBasis, PolynomialCutoff
from .scatter import scatter_sum


def _norm(v: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Differentiable |v| over the Cartesian axis (dim 1), safe at zero."""
    return torch.sqrt((v * v).sum(dim=1) + eps)


class PaiNNMessage(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.phi = nn.Sequential(nn.Linear(features, features), nn.SiLU(), nn.Linear(features, 3 * features))
        self.features = features

    def forward(self, s, v, edge_index, unit, filters):
        """``filters`` (E, 3F): this layer's radial filter, already multiplied by the cutoff envelope."""
        i, j = edge_index
        x = self.phi(s)[j] * filters
        x_s, x_vv, x_vs = torch.split(x, self.features, dim=-1)
        dv = torch.addcmul(v[j] * x_vv.unsqueeze(1), unit.unsqueeze(-1), x_vs.unsqueeze(1))
        n = s.shape[0]
        return s + scatter_sum(x_s, i, n), v + scatter_sum(dv, i, n)


class PaiNNUpdate(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.uv = nn.Linear(features, 2 * features, bias=False)
        self.mlp = nn.Sequential(nn.Linear(2 * features, features), nn.SiLU(), nn.Linear(features, 3 * features))
        self.features = features

    def forward(self, s, v):
        uv, vv = torch.split(self.uv(v), self.features, dim=-1)
        a = self.mlp(torch.cat([s, _norm(vv)], dim=-1))
        a_vv, a_sv, a_ss = torch.split(a, self.features, dim=-1)
        return s + a_ss + a_sv * (uv * vv).sum(dim=1), v + a_vv.unsqueeze(1) * uv


class GatedVectorHead(nn.Module):
    """Equivariant per-atom vector output: gated mix of the vector channels (scalars gate)."""

    def __init__(self, features: int):
        super().__init__()
        self.mix = nn.Linear(features, features, bias=False)
        self.gate = nn.Sequential(nn.Linear(2 * features, features), nn.SiLU(), nn.Linear(features, features))
        self.out = nn.Linear(features, 1, bias=False)

    def forward(self, s, v):
        w = self.mix(v)
        g = self.gate(torch.cat([s, _norm(w)], dim=-1))
        return self.out(w * g.unsqueeze(1)).squeeze(-1)


class PaiNN(nn.Module):
    """PaiNN backbone following the contract in ``forcefit.models.base``."""

    def __init__(
        self,
        num_species: int,
        cutoff: float = 5.0,
        features: int = 64,
        num_layers: int = 3,
        num_basis: int = 16,
        vector_heads: tuple[str, ...] = (),
        energy_heads: int = 1,
    ):
        super().__init__()
        self.cutoff, self.l_max, self.features = float(cutoff), 1, features
        self.num_species, self.energy_heads = int(num_species), int(energy_heads)
        self.embedding = nn.Embedding(num_species, features)
        self.radial = BesselBasis(cutoff, num_basis)
        self.envelope = PolynomialCutoff(cutoff)
        # one linear map gives every layer's radial filter (a single matmul per step)
        self.filters = nn.Linear(num_basis, num_layers * 3 * features)
        self.messages = nn.ModuleList(PaiNNMessage(features) for _ in range(num_layers))
        self.updates = nn.ModuleList(PaiNNUpdate(features) for _ in range(num_layers))
        self.readout = nn.Sequential(nn.Linear(features, features // 2), nn.SiLU(), nn.Linear(features // 2, self.energy_heads))
        # Start at ε_i = 0, i.e. E = Σ (shift + E0): the mean energy is right from step one and the
        # network only learns deviations (otherwise a random per-atom offset takes many epochs to remove).
        nn.init.zeros_(self.readout[-1].weight)
        nn.init.zeros_(self.readout[-1].bias)
        self.vector_heads = nn.ModuleDict({name: GatedVectorHead(features) for name in vector_heads})
        # DeNS force encoding: one learnable linear map per degree (l = 0 scalar, l = 1 vector).
        self.encode_l0 = nn.Linear(1, features, bias=False)
        self.encode_l1 = nn.Linear(1, features, bias=False)

    def forward(self, species, edge_index, edge_vec, force_condition=None):
        n = species.shape[0]
        s = self.embedding(species)
        v = torch.zeros(n, 3, self.features, dtype=s.dtype, device=s.device)
        if force_condition is not None:
            magnitude = force_condition.norm(dim=-1, keepdim=True) / math.sqrt(3.0)
            s = s + self.encode_l0(magnitude)
            v = v + self.encode_l1(force_condition.unsqueeze(-1))
        r = edge_vec.norm(dim=-1)
        unit = edge_vec / r.unsqueeze(-1)
        filters = (self.filters(self.radial(r)) * self.envelope(r).unsqueeze(-1)).chunk(len(self.messages), dim=-1)
        for message, update, w in zip(self.messages, self.updates, filters):
            s, v = message(s, v, edge_index, unit, w)
            s, v = update(s, v)
        return {
            "node_energy": self.readout(s).squeeze(-1),
            "vectors": {name: head(s, v) for name, head in self.vector_heads.items()},
            "features": {"s": s, "v": v},
        }

    # ---- seams for objectives and fine-tuning (see models/base.py)
    #: parameter-name prefixes of the energy readout (what trains when the backbone is frozen)
    READOUT_PREFIXES = ("readout.",)

    def make_vector_head(self) -> "PaiNNAuxiliaryHead":
        """A new auxiliary vector head over the final features (not registered in the backbone)."""
        return PaiNNAuxiliaryHead(self.features)

    def species_parameters(self) -> dict[str, tuple[int, int]]:
        """Parameters indexed by species: name -> (dimension, rows per species)."""
        return {"embedding.weight": (0, 1)}

    def energy_head_parameters(self) -> dict[str, int]:
        """Parameters with one slice per energy head (level of theory): name -> that dimension."""
        return {"readout.2.weight": 0, "readout.2.bias": 0}


class PaiNNAuxiliaryHead(GatedVectorHead):
    """A gated vector readout of PaiNN's final (scalar, vector) features, outside the backbone."""

    def forward(self, features: dict) -> torch.Tensor:
        return super().forward(features["s"], features["v"])
