"""Higher-order equivariant backbone: message passing with an ACE many-body product (MACE-style).

Why this design: MACE showed that two message-passing layers whose node update
is an element-dependent *polynomial* of the aggregated neighbour density A
(products of A with itself up to correlation order ν, so body order ν + 1 per
layer) match deeper two-body models at a fraction of the cost. This module
reimplements that idea for small molecules on a CPU, where a 9-atom pass is
dominated by how many kernels (and autograd nodes) are launched, not by
arithmetic:

- Node features are ``C x 0e + C x 1o + C x 2e (+ C x 3o)`` (degrees
  0..l_max, parity (−1)^l), one ``(D, N, C)`` tensor, D = (l_max+1)²
  (layout and primitives in ``irreps_ops.py``).
- Messages: ``A_i = (1/avg_nbrs) Σ_j Σ_paths R_p(r_ij) · CG_p(W h_j ⊗ Y(r̂_ij))``
  with one radial weight per (path, channel) from an MLP on a Bessel basis,
  times a smooth polynomial cutoff (``radial.py``): an e3nn ``uvu`` product.
- Many-body product, Horner-style like MACE's symmetric contraction:
  ``X ← Σ_p w_p[z]·CG_p(X ⊗ A) + u[z]⊙X`` repeated ν − 1 times from X = A,
  with element-dependent weights: all products of A up to degree ν.
- ``h ← W·B + W'·h`` (residual), optionally a gate nonlinearity.
- Energy: a linear readout of the scalars after each layer, an MLP after the last.

Exact O(3) equivariance: only parity-preserving CG paths are used and the edge
harmonics have parity (−1)^l, so rotations *and* reflections commute with the
model (tests/test_equivariant_ace.py checks both, in float64).

Seams (same as every backbone, see ``base.py``):
- ``force_condition`` (N, 3): embedded at every degree 0..l_max with
  ``encode_vector`` and added to the initial node features through one
  learnable linear map per degree (no bias: zero rows add exactly nothing).
  The first layer's messages are linear in its input, so the condition's part
  is computed only on edges leaving atoms with a non-zero condition (DeNS
  corrupts a few percent of atoms) and added to the scalar-input messages.
- ``vector_heads`` (the direct-force head): per-atom 1o outputs read from the
  last layer's l = 1 features through a gated linear readout, returned in
  Cartesian (x, y, z) (the l = 1 → xyz map is read from e3nn, whose l = 1
  order changed in 0.6).
- ``make_vector_head()``: an auxiliary vector head (DeNS noise) built *outside*
  the backbone: one more two-body equivariant message pass over the features
  the last layer reads (``features`` in the output), then the same gated
  readout. Adding one changes neither the backbone's parameters nor their
  initialisation, and the last layer stays scalar-only.
- ``energy_heads``: one energy readout per level of theory (``node_energy``
  is then (N, heads)).

Speed (measurements in benchmarks/NOTES.md): all CG paths of a product are
one dense tensor; the radial MLP is shared by the layers (one output matmul
for all layers, weights expanded per CG column on the parameter, not per
edge); the first layer skips its input linear (a reparametrisation of the
embedding) and its l1 > 0 paths, except on edges from conditioned atoms; the
last layer only computes the degrees something reads (l = 0, or l ≤ 1 with
vector heads).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from e3nn import o3
from torch import nn

from .base import encode_vector
from .irreps_ops import (
    ChannelwiseTensorProduct,
    DegreewiseLinear,
    SpeciesDegreewiseLinear,
    SphericalHarmonicsPolynomial,
    degree_of_component,
    num_components,
)
from .radial import BesselBasis, PolynomialCutoff

#: 1/√E[silu(x)²] for x ~ N(0, 1): keeps the second moment through a SiLU layer at init
SILU_GAIN = 1.679


class ManyBodyProduct(nn.Module):
    """Element-dependent polynomial of A up to degree ``correlation`` (MACE's symmetric contraction, Horner form).

    X ← Σ_p w_p[z]·CG_p(X ⊗ A) + u[z]⊙X, ν − 1 times from X = A: correlation ν
    costs ν − 1 products instead of enumerating every ν-fold coupling. The
    u⊙X term rides in the same product as a path with a constant operand row,
    so each step is one outer product, two matmuls and one weight product.
    The first step couples A with itself, so only paths with l1 ≤ l2 are kept.
    Only the last step is cut to the output degrees.
    """

    def __init__(self, num_species: int, channels: int, l_max: int, l_out_max: int, correlation: int, l_mid: int | None = None):
        super().__init__()
        if correlation < 1:
            raise ValueError(f"correlation must be ≥ 1, got {correlation}")
        self.correlation, self.d_out = correlation, num_components(l_out_max)
        l_mid = l_max if l_mid is None else l_mid  # degrees kept between the steps
        self.products = nn.ModuleList()
        self.weights = nn.ParameterList()
        for k in range(correlation - 1):
            last = k == correlation - 2
            tp = ChannelwiseTensorProduct(l_max if k == 0 else l_mid, l_max, l_out_max if last else l_mid, symmetric=k == 0, with_constant=True)
            self.products.append(tp)
            self.register_buffer(f"column_index_{k}", tp.path_of_column, persistent=False)
            # (P, species, C); init: the constant (linear) path passes X through at unit gain
            # (undoing the 1/√fan_in path normalisation), the products start small and random
            w = torch.randn(tp.num_paths, num_species, channels) / math.sqrt(tp.num_paths)
            for p, path in enumerate(tp.paths):
                if path[1] < 0:
                    w[p] = math.sqrt(sum(1 for q in tp.paths if q[2] == path[2]))
            self.weights.append(nn.Parameter(w))

    def forward(self, a: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """a (D, N, C) → (D_out, N, C)."""
        if self.correlation == 1:
            return a[: self.d_out]
        y = torch.cat([a, torch.ones_like(a[:1])])  # A with the constant row
        x = a
        for k, (tp, w) in enumerate(zip(self.products, self.weights)):
            wq = w.index_select(0, getattr(self, f"column_index_{k}")).index_select(1, species)  # (Q, N, C)
            x = tp(x, y, wq)
        return x


@dataclass
class SparseCondition:
    """First-layer input that is zero on most atoms (DeNS force encoding of the corrupted ones)."""

    features: torch.Tensor  # (D, N, C), zero rows outside the conditioned atoms
    edges: torch.Tensor  # (E_c,) indices of the edges whose neighbour (sender) is conditioned
    radial: torch.Tensor  # (E_c, Q, C) the first layer's full radial weights on those edges


class InteractionLayer(nn.Module):
    """One message-passing layer: equivariant messages, neighbour sum, many-body product, residual."""

    def __init__(
        self,
        num_species: int,
        channels: int,
        l_max: int,
        l_out_max: int,
        correlation: int,
        avg_num_neighbors: float,
        gate: bool,
        first: bool,
        edge_l_max: int | None = None,
        species_self_connection: bool = False,
        product_l_max: int | None = None,
        path_mixing: bool = False,
    ):
        super().__init__()
        edge_l_max = l_max if edge_l_max is None else edge_l_max
        product_l_max = l_max if product_l_max is None else product_l_max
        self.l_max, self.l_out_max, self.channels, self.first = l_max, l_out_max, channels, first
        self.d, self.d_out = num_components(edge_l_max), num_components(l_out_max)  # A carries 0..edge_l_max
        # first layer: a linear map of the embedding (+ condition) is just another embedding: skip it
        self.linear_up = None if first else DegreewiseLinear(l_max, channels, channels)
        self.message = ChannelwiseTensorProduct(l_max, edge_l_max, edge_l_max, output_scale=1.0 / float(avg_num_neighbors))
        # A mixed per coupling path (MACE's linear over the path-resolved message) or after adding the paths;
        # a first layer's input is scalars, one path per degree, where both are the same
        self.path_mixing = path_mixing and not first
        if self.path_mixing:
            self.path_weights = nn.Parameter(torch.randn(self.message.num_paths, channels, channels) / math.sqrt(channels))
        else:
            self.linear_a = DegreewiseLinear(edge_l_max, channels, channels)
        self.product = ManyBodyProduct(num_species, channels, edge_l_max, l_out_max, correlation, l_mid=product_l_max)
        self.linear_out = DegreewiseLinear(l_out_max, channels, channels)
        self.species_self_connection = species_self_connection
        self.self_connection = (SpeciesDegreewiseLinear(l_out_max, num_species, channels, channels) if species_self_connection
                                else DegreewiseLinear(l_out_max, channels, channels))
        # SiLU on the scalars whatever l_out_max is (dropping a vector head must not change the energy)
        self.gate = gate
        if self.gate and l_out_max > 0:
            self.gate_linear = nn.Linear(channels, channels * l_out_max)
            index = (degree_of_component(l_out_max)[1:] - 1).unsqueeze(-1) * channels + torch.arange(channels)
            self.register_buffer("gate_index", index.reshape(-1), persistent=False)

    def forward(
        self,
        h: torch.Tensor,
        species: torch.Tensor,
        sh: torch.Tensor,
        radial: torch.Tensor,
        centre: torch.Tensor,
        neighbour: torch.Tensor,
        condition: "SparseCondition | None" = None,
    ) -> torch.Tensor:
        """h (D, N, C), or (N, C) scalars in a first layer; radial (E, Q, C) → (D_out, N, C).

        ``condition`` (first layer only) adds features that are non-zero on a few atoms:
        the message is linear in h, so their part is computed on just the edges that
        leave those atoms and added to the scalar messages of all edges.
        """
        scalars_only = h.dim() == 2
        n = h.shape[-2]
        if self.path_mixing:
            a = self.path_mixed_density(h, sh, radial, centre, neighbour)
        else:
            if scalars_only:
                msg = self.message.edge_scalar(h.index_select(0, neighbour), sh, radial)
            else:
                x = h if self.linear_up is None else self.linear_up(h)
                msg = self.message.edge(x.transpose(0, 1).index_select(0, neighbour), sh, radial)
            a = torch.zeros(n, self.d, self.channels, dtype=msg.dtype, device=msg.device).index_add_(0, centre, msg)
            if condition is not None:
                e = condition.edges
                x = condition.features.transpose(0, 1).index_select(0, neighbour.index_select(0, e))
                a = a.index_add(0, centre.index_select(0, e), self.message.edge(x, sh.index_select(0, e), condition.radial))
            a = self.linear_a(a.transpose(0, 1))
        out = self.linear_out(self.product(a, species))
        if condition is not None:
            dense = torch.cat([condition.features[:1] + h.unsqueeze(0), condition.features[1:]])  # (D, N, C), cheap per atom
            out = out + self.skip(dense[: self.d_out], species)
        elif scalars_only:
            sc = self.skip(h.unsqueeze(0), species)
            out = torch.cat([out[:1] + sc, out[1:]])
        else:
            out = out + self.skip(h[: self.d_out], species)
        if self.gate and self.d_out == 1:
            out = torch.nn.functional.silu(out)
        elif self.gate:
            s = out[0]
            g = torch.sigmoid(self.gate_linear(s)).index_select(-1, self.gate_index).view(n, self.d_out - 1, self.channels)
            out = torch.cat([torch.nn.functional.silu(s).unsqueeze(0), out[1:] * g.transpose(0, 1)])
        return out

    def path_mixed_density(self, h, sh, radial, centre, neighbour) -> torch.Tensor:
        """A (D, N, C) = Σ_p W_p · (Σ_j path p's message): one channel mixing per coupling path.

        The neighbour sum is kept per path (Q = Σ_p (2 l3 + 1) rows instead of D),
        then one batched matmul applies each path's matrix and the paths are added.
        """
        x = self.linear_up(h)
        msg = self.message.edge_paths(x.transpose(0, 1).index_select(0, neighbour), sh, radial)  # (E, Q, C)
        a = torch.zeros(h.shape[1], msg.shape[1], self.channels, dtype=msg.dtype, device=msg.device).index_add_(0, centre, msg)
        a = torch.bmm(a.transpose(0, 1), self.path_weights.index_select(0, self.message.path_of_column))  # (Q, N, C)
        return torch.matmul(self.message.path_sum, a.reshape(a.shape[0], -1)).view(self.d, h.shape[1], self.channels)

    def skip(self, h: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """The residual's channel mixing, per species when ``species_self_connection``."""
        return self.self_connection(h, species) if self.species_self_connection else self.self_connection(h)


class EquivariantACE(nn.Module):
    """MACE-style O(3)-equivariant many-body message-passing backbone (registry key ``equivariant-ace``).

    Args:
        num_species: number of species indices (0..num_species-1).
        cutoff: radial cutoff in Å (messages vanish smoothly there).
        vector_heads: names of extra per-atom 1o outputs ("forces" = direct forces).
        channels: multiplicity C of every degree (features C x 0e + C x 1o + ...).
        l_max: highest degree of the node features (2 default, 3 supported).
        edge_l_max: highest degree of the edge harmonics and so of the neighbour density A that the
            many-body product couples (default max(3, l_max), as MACE's max_ell = 3): the l = 3 part
            of A is what resolves angles finely enough to learn from 50 frames, and it costs far
            less than carrying l = 3 in the node features.
        num_layers: message-passing layers (2: receptive field 2 × cutoff).
        correlation: degree ν of the many-body product per layer (body order ν + 1).
        num_bessel: radial basis size.
        radial_hidden: width of the radial MLP (two hidden layers, SiLU).
        cutoff_p: exponent of the polynomial cutoff envelope.
        avg_num_neighbors: divisor of the neighbour sum (keeps A of order one).
        readout_hidden: width of the MLP that reads the energy after the last layer.
        gate: gate nonlinearity after each layer (SiLU on scalars, sigmoid gates on l > 0);
            off by default, as in MACE (the product is the nonlinearity).
        species_self_connection: one residual channel mixing per species (MACE's
            element-dependent skip) instead of one shared by all species.
        product_l_max: highest degree kept between the steps of the many-body product
            (default l_max; up to edge_l_max). MACE's symmetric contraction keeps every
            intermediate degree; cutting them to l_max makes the product cheaper but
            drops couplings such as (A_2 ⊗ A_2)_2 ⊗ A_2 → 0 when l_max = 1.
        path_mixing: from the second layer on, mix channels with one matrix per coupling
            path of the message before adding the paths (MACE's linear over the
            path-resolved message), instead of one matrix per degree after adding them.
    """

    def __init__(
        self,
        num_species: int,
        cutoff: float = 5.0,
        vector_heads: tuple[str, ...] = (),
        channels: int = 32,
        l_max: int = 2,
        edge_l_max: int | None = None,
        num_layers: int = 2,
        correlation: int = 3,
        num_bessel: int = 8,
        radial_hidden: int = 64,
        cutoff_p: int = 6,
        avg_num_neighbors: float = 8.0,
        readout_hidden: int = 16,
        gate: bool = False,
        species_self_connection: bool = False,
        product_l_max: int | None = None,
        path_mixing: bool = False,
        energy_heads: int = 1,
    ):
        super().__init__()
        if l_max < 1:
            raise ValueError(f"l_max must be ≥ 1 (got {l_max})")
        edge_l_max = max(3, l_max) if edge_l_max is None else int(edge_l_max)
        if edge_l_max < l_max:
            raise ValueError(f"edge_l_max must be ≥ l_max (got {edge_l_max} < {l_max})")
        product_l_max = l_max if product_l_max is None else int(product_l_max)
        if not l_max <= product_l_max <= edge_l_max:
            raise ValueError(f"product_l_max must be between l_max and edge_l_max ({l_max}..{edge_l_max}), got {product_l_max}")
        self.product_l_max = product_l_max
        if num_layers < 1:
            raise ValueError(f"num_layers must be ≥ 1 (got {num_layers})")
        self.num_species, self.cutoff, self.l_max, self.edge_l_max = int(num_species), float(cutoff), int(l_max), edge_l_max
        self.channels, self.num_layers = int(channels), int(num_layers)
        self.vector_heads = tuple(vector_heads)
        self.energy_heads = int(energy_heads)
        self.avg_num_neighbors, self.radial_hidden = float(avg_num_neighbors), int(radial_hidden)
        self.register_buffer("degree", degree_of_component(l_max), persistent=False)

        self.embedding = nn.Embedding(num_species, channels)
        self.condition_weights = nn.Parameter(torch.randn(l_max + 1, channels))  # one 1 → C linear map per degree

        self.spherical_harmonics = SphericalHarmonicsPolynomial(edge_l_max)
        self.bessel = BesselBasis(cutoff, num_bessel)
        self.envelope = PolynomialCutoff(cutoff, cutoff_p)

        last_l = 1 if self.vector_heads else 0
        self.layers = nn.ModuleList(
            InteractionLayer(
                num_species, channels, l_max, l_max if k < num_layers - 1 else last_l,
                correlation, avg_num_neighbors, gate, first=k == 0, edge_l_max=edge_l_max,
                species_self_connection=species_self_connection, product_l_max=product_l_max,
                path_mixing=path_mixing,
            )
            for k in range(num_layers)
        )
        self.num_paths = self.layers[0].message.num_paths
        # one radial trunk for all layers; its last matmul produces every layer's weights at once
        self.radial_trunk = nn.Sequential(
            nn.Linear(num_bessel, radial_hidden), nn.SiLU(), nn.Linear(radial_hidden, radial_hidden), nn.SiLU()
        )
        # (layers, H, P·C), no bias: the envelope multiplies the hidden layer, so all weights vanish at the cutoff
        self.radial_out = nn.Parameter(torch.randn(num_layers, radial_hidden, self.num_paths * channels) * SILU_GAIN / math.sqrt(radial_hidden))
        self._init_radial_trunk()
        first = self.layers[0].message
        self.register_buffer("scalar_path_of_column", first.path_of_column[first.scalar_columns], persistent=False)

        self.readouts = nn.ModuleList(nn.Linear(channels, self.energy_heads, bias=False) for _ in range(num_layers - 1))
        self.readout_mlp = nn.Sequential(nn.Linear(channels, readout_hidden), nn.SiLU(), nn.Linear(readout_hidden, self.energy_heads))
        if self.vector_heads:
            heads = len(self.vector_heads)
            self.vector_gate = nn.Linear(channels, heads * channels)
            self.vector_weights = nn.Parameter(torch.randn(heads, channels) / math.sqrt(channels))
            # e3nn's l = 1 basis is (y, z, x) up to 0.5 and (x, y, z) from 0.6: ask e3nn instead of assuming.
            # Y_1(v) = v @ B with B orthogonal, so Cartesian = (l = 1 vector) @ Bᵀ.
            basis = o3.spherical_harmonics(1, torch.eye(3, dtype=torch.float64), normalize=False, normalization="norm")
            self.register_buffer("l1_to_xyz", basis.T.contiguous().to(torch.get_default_dtype()), persistent=False)

    # ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _init_radial_trunk(self) -> None:
        """Second-moment-preserving init (as e3nn's FullyConnectedNet): radial weights of order one.

        PyTorch's default Linear init shrinks activations about 3× per layer, and
        the Bessel features are ~0.3 in size, so the per-edge weights started near
        0.05, the messages near 0.01 and the geometry barely reached the energy.
        Here the first layer sees unit-RMS Bessel features (scale measured on
        r ∈ [0.5, r_c]) and each later layer compensates SiLU's second moment.
        """
        r = torch.linspace(0.5, self.cutoff, 200, dtype=self.radial_out.dtype)
        bessel_rms = self.bessel(r).pow(2).mean().sqrt().clamp_min(1e-6)
        linears = [m for m in self.radial_trunk if isinstance(m, nn.Linear)]
        for k, lin in enumerate(linears):
            gain = 1.0 / bessel_rms if k == 0 else SILU_GAIN
            nn.init.normal_(lin.weight, std=float(gain) / math.sqrt(lin.in_features))
            nn.init.zeros_(lin.bias)

    def radial_weights(self, r: torch.Tensor, condition_edges: torch.Tensor | None = None):
        """Per layer (E, Q_k, C): MLP(Bessel(r)) * envelope(r), one weight per (path, channel), spread over its CG columns.

        The first layer gets only its scalar-input columns (its input is the species
        embedding); ``condition_edges`` also get all of its columns, returned second.
        The trunk's last hidden layer is returned third, for auxiliary heads.
        One matmul per layer (not one for all plus a split: the split's backward
        is a full-size concatenation), then a per-edge gather from paths to columns.
        """
        hidden = self.radial_trunk(self.bessel(r)) * self.envelope(r).unsqueeze(-1)
        out, conditioned = [], None
        for k, layer in enumerate(self.layers):
            w = torch.matmul(hidden, self.radial_out[k]).view(len(r), self.num_paths, self.channels)
            if k == 0 and condition_edges is not None:
                conditioned = w.index_select(0, condition_edges).index_select(1, layer.message.path_of_column)
            out.append(w.index_select(1, self.scalar_path_of_column if k == 0 else layer.message.path_of_column))
        return out, conditioned, hidden

    def condition_features(self, force_condition: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(D, N, C): the encoded condition through one 1 → C linear map per degree (zero where the condition is)."""
        enc = torch.cat(encode_vector(force_condition.to(dtype), self.l_max), dim=-1)  # (N, D)
        return enc.T.unsqueeze(-1) * self.condition_weights.index_select(0, self.degree).unsqueeze(1)

    def forward(
        self,
        species: torch.Tensor,
        edge_index: torch.Tensor,
        edge_vec: torch.Tensor,
        force_condition: torch.Tensor | None = None,
    ) -> dict:
        centre, neighbour = edge_index[0], edge_index[1]
        r = torch.linalg.vector_norm(edge_vec, dim=-1)
        sh = self.spherical_harmonics(edge_vec / r.unsqueeze(-1))
        h = self.embedding(species)  # (N, C): the first layer knows its input is scalars
        edges = None
        if force_condition is not None:
            # only atoms with a non-zero condition send condition messages (DeNS: the corrupted ones)
            edges = torch.nonzero(force_condition.ne(0).any(-1).index_select(0, neighbour)).squeeze(-1)
        radial, conditioned, hidden = self.radial_weights(r, edges)
        condition = None
        if force_condition is not None:
            condition = SparseCondition(self.condition_features(force_condition, h.dtype), edges, conditioned)

        node_energy, last_input = None, h
        for k, layer in enumerate(self.layers):
            last_input = h
            h = layer(h, species, sh, radial[k], centre, neighbour, condition if k == 0 else None)
            readout = self.readouts[k] if k < self.num_layers - 1 else self.readout_mlp
            e = readout(h[0]).squeeze(-1)
            node_energy = e if node_energy is None else node_energy + e

        vectors = {}
        if self.vector_heads:
            n = h.shape[1]
            gates = torch.sigmoid(self.vector_gate(h[0])).view(n, len(self.vector_heads), self.channels)
            v = torch.einsum("mnc,nhc,hc->nhm", h[1:4], gates, self.vector_weights)  # (N, heads, 3), e3nn l = 1 basis
            v = v @ self.l1_to_xyz
            vectors = {name: v[:, k] for k, name in enumerate(self.vector_heads)}
        features = {"h": last_input, "species": species, "sh": sh, "hidden": hidden, "centre": centre, "neighbour": neighbour}
        return {"node_energy": node_energy, "vectors": vectors, "features": features}

    # ---- seams for objectives and fine-tuning (see models/base.py)
    #: parameter-name prefixes of the energy readout (what trains when the backbone is frozen)
    READOUT_PREFIXES = ("readouts.", "readout_mlp.")

    def make_vector_head(self) -> "AceVectorHead":
        """A new auxiliary vector head over this backbone's features (not registered in the backbone)."""
        return AceVectorHead(self.num_species, self.channels, self.radial_hidden, self.avg_num_neighbors)

    def species_parameters(self) -> dict[str, tuple[int, int]]:
        """Parameters indexed by species: name -> (dimension, rows per species) (new species get new rows)."""
        dims = {"embedding.weight": (0, 1)}
        for k, layer in enumerate(self.layers):
            for q in range(len(layer.product.weights)):
                dims[f"layers.{k}.product.weights.{q}"] = (1, 1)
            if layer.species_self_connection:
                dims[f"layers.{k}.self_connection.weight"] = (2, self.channels)
        return dims

    def energy_head_parameters(self) -> dict[str, int]:
        """Parameters with one slice per energy head (level of theory): name -> that dimension."""
        dims = {f"readouts.{k}.weight": 0 for k in range(len(self.readouts))}
        last = len(self.readout_mlp) - 1
        dims.update({f"readout_mlp.{last}.weight": 0, f"readout_mlp.{last}.bias": 0})
        return dims


class AceVectorHead(nn.Module):
    """An equivariant per-atom vector output outside the backbone (the DeNS noise head).

    One two-body message pass (l <= 1 in and out, edge harmonics to l = 2) over
    the features the backbone's last layer reads, with radial weights from the
    backbone's shared radial trunk, then a gated linear readout of the l = 1
    features. The published DeNS noise head is likewise a whole block on top of
    the shared network, not a linear map.
    """

    def __init__(self, num_species: int, channels: int, radial_hidden: int, avg_num_neighbors: float):
        super().__init__()
        self.channels = channels
        self.layer = InteractionLayer(num_species, channels, 1, 1, 1, avg_num_neighbors, gate=False, first=False, edge_l_max=2)
        self.radial = nn.Parameter(torch.randn(radial_hidden, self.layer.message.num_paths * channels) * SILU_GAIN / math.sqrt(radial_hidden))
        self.gate = nn.Linear(channels, channels)
        self.weights = nn.Parameter(torch.randn(channels) / math.sqrt(channels))
        basis = o3.spherical_harmonics(1, torch.eye(3, dtype=torch.float64), normalize=False, normalization="norm")
        self.register_buffer("l1_to_xyz", basis.T.contiguous().to(torch.get_default_dtype()), persistent=False)

    def forward(self, features: dict) -> torch.Tensor:
        h = features["h"]
        if h.dim() == 2:  # a one-layer backbone: its last layer reads the scalar embedding
            h = torch.cat([h.unsqueeze(0), h.new_zeros(3, *h.shape)])
        h = h[: num_components(1)]
        hidden = features["hidden"]
        message = self.layer.message
        w = torch.matmul(hidden, self.radial).view(hidden.shape[0], message.num_paths, self.channels)
        w = w.index_select(1, message.path_of_column)
        x = self.layer(h, features["species"], features["sh"][:, : num_components(2)], w, features["centre"], features["neighbour"])
        g = torch.sigmoid(self.gate(x[0]))
        v = torch.einsum("mnc,nc,c->nm", x[1:4], g, self.weights)
        return v @ self.l1_to_xyz.to(v.dtype)
