"""Dense channel-wise Clebsch–Gordan products, per-degree linear maps and spherical harmonics.

The higher-order backbone stores node features as one tensor ``(D, N, C)``:
for every component d of degrees l = 0..l_max (parity (−1)^l: 0e, 1o, 2e, 3o),
``D = (l_max + 1)²`` in e3nn's real spherical-harmonic basis, an (N atoms × C
channels) matrix. In e3nn notation the features are ``C x 0e + C x 1o + C x 2e``,
only laid out component-major.

Why not ``e3nn.o3.TensorProduct`` / ``o3.Linear``? For a 9-atom molecule every
tensor is tiny, so a forward/backward pass costs about 5–10 µs per kernel
launched (and as much again per autograd node), not arithmetic. e3nn's
generic modules issue a few kernels per path and per irrep; here:
- a per-degree linear map is one batched matmul over components (the layout
  puts each component's (N, C) matrix contiguous);
- every path of a product is one slice of one dense Clebsch–Gordan tensor
  built once from ``o3.wigner_3j``, so a whole product is two matmuls and one
  elementwise weight, whatever the number of paths (11 at l_max = 2, 20+ at 3).
The dense tensors multiply structural zeros, the right trade below a few
hundred atoms on a CPU.

Only parity-preserving paths (l1 + l2 + l3 even) are built, so with inputs of
parity (−1)^l the outputs again have parity (−1)^l and everything is
O(3)-equivariant (rotations and reflections).
"""
from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import nn

#: l2 value marking the "constant" operand row (``ChannelwiseTensorProduct(..., with_constant=True)``)
CONSTANT = -1


def num_components(l_max: int) -> int:
    """D = Σ_{l ≤ l_max} (2l + 1)."""
    return (l_max + 1) ** 2


def degree_of_component(l_max: int) -> torch.Tensor:
    """(D,) long: the degree l of each component (0, 1, 1, 1, 2, ...)."""
    return torch.cat([torch.full((2 * l + 1,), l, dtype=torch.long) for l in range(l_max + 1)])


def component_slice(l: int) -> slice:
    return slice(l * l, (l + 1) * (l + 1))


def cg_paths(l1_max: int, l2_max: int, l3_max: int, symmetric: bool = False, with_constant: bool = False) -> list[tuple[int, int, int]]:
    """Parity-preserving coupling paths (l1, l2) → l3 with the triangle rule.

    ``symmetric`` keeps only l1 ≤ l2: for the product of a tensor with itself the
    (l2, l1) path is the same function as (l1, l2) (the CG tensor with l1+l2+l3
    even is symmetric under the swap), so it would only duplicate a weight.
    ``with_constant`` adds a path (l1, CONSTANT) → l1 per degree: x times the
    constant 1, i.e. a per-channel linear term folded into the same product.
    """
    paths = []
    for l1 in range(l1_max + 1):
        for l2 in range(l2_max + 1):
            if symmetric and l2 < l1:
                continue
            for l3 in range(abs(l1 - l2), min(l1 + l2, l3_max) + 1):
                if (l1 + l2 + l3) % 2 == 0:
                    paths.append((l1, l2, l3))
    if with_constant:
        paths += [(l, CONSTANT, l) for l in range(min(l1_max, l3_max) + 1)]
    return paths


def dense_cg(paths: list[tuple[int, int, int]], l1_max: int, l2_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clebsch–Gordan blocks of all paths side by side, and the path of each output column.

    Returns ``cg`` (D1, D2 [+1 constant row], Q) where Q = Σ_p (2 l3_p + 1):
    path p's 3j symbol fills its (l1, l2) rows and its own block of 2 l3 + 1
    output columns; and ``path_of_column`` (Q,) long. Keeping each path's
    output separate (instead of adding it straight into its l3 slots) is what
    lets a per-path weight be applied afterwards as one elementwise product.

    Component normalisation (as e3nn's ``irrep_normalization="component"``): the
    3j symbol is scaled by √(2 l3 + 1) so unit-variance components in give
    unit-variance components out; each output degree is further divided by
    √(number of paths into it) so that summing paths keeps that variance.
    """
    d1 = num_components(l1_max)
    d2 = num_components(l2_max) + (1 if any(p[1] == CONSTANT for p in paths) else 0)
    q = sum(2 * l3 + 1 for _, _, l3 in paths)
    cg = torch.zeros(d1, d2, q, dtype=torch.float64)
    path_of_column = torch.zeros(q, dtype=torch.long)
    fan_in = {l3: sum(1 for p in paths if p[2] == l3) for _, _, l3 in paths}
    col = 0
    for k, (l1, l2, l3) in enumerate(paths):
        cols = slice(col, col + 2 * l3 + 1)
        if l2 == CONSTANT:
            cg[component_slice(l1), d2 - 1, cols] = torch.eye(2 * l1 + 1, dtype=torch.float64) / math.sqrt(fan_in[l3])
        else:
            block = o3.wigner_3j(l1, l2, l3, dtype=torch.float64) * math.sqrt(2 * l3 + 1) / math.sqrt(fan_in[l3])
            cg[component_slice(l1), component_slice(l2), cols] = block
        path_of_column[cols] = k
        col += 2 * l3 + 1
    return cg, path_of_column


def path_sum_matrix(paths: list[tuple[int, int, int]], l3_max: int) -> torch.Tensor:
    """(D3, Q) 0/1 matrix adding every path's output block into its l3 components."""
    q = sum(2 * l3 + 1 for _, _, l3 in paths)
    out = torch.zeros(num_components(l3_max), q, dtype=torch.float64)
    col = 0
    for _, _, l3 in paths:
        out[component_slice(l3), col : col + 2 * l3 + 1] = torch.eye(2 * l3 + 1, dtype=torch.float64)
        col += 2 * l3 + 1
    return out


class ChannelwiseTensorProduct(nn.Module):
    """out[c] = Σ_p w[p, c] · CG_p(x[c] ⊗ y[c]): an e3nn ``uvu``/``uuu`` product with weights given per call.

    The weights come from outside (a radial MLP per edge for messages, a
    species table for the many-body product) as one value per output column
    and channel, (…, Q, C): ``column_index`` expands a per-path parameter to
    columns, best done on the parameter itself (its size does not grow with
    the number of atoms). The module holds only constant buffers, so
    ``.double()`` converts them.

    Two entry points because the operands come in two layouts:
    - ``edge(x, y, w)``: x (E, D1, C) gathered neighbour features, y (E, D2)
      edge harmonics shared by all channels: y is contracted into the CG tensor
      first, then one batched matmul with x.
    - ``forward(x, y, w)``: x (D1, N, C), y (D2, N, C) node features (the
      many-body product A ⊗ A), one outer product and one matmul.
    """

    def __init__(
        self,
        l1_max: int,
        l2_max: int,
        l3_max: int,
        symmetric: bool = False,
        with_constant: bool = False,
        output_scale: float = 1.0,
    ):
        super().__init__()
        self.l1_max, self.l2_max, self.l3_max = l1_max, l2_max, l3_max
        self.paths = cg_paths(l1_max, l2_max, l3_max, symmetric, with_constant)
        self.num_paths = len(self.paths)
        cg, path_of_column = dense_cg(self.paths, l1_max, l2_max)
        cg = cg * output_scale  # e.g. 1/avg_num_neighbors for a neighbour sum, folded in for free
        self.d1, self.d2, self.num_columns = cg.shape
        self.d3 = num_components(l3_max)
        dtype = torch.get_default_dtype()
        self.register_buffer("path_of_column", path_of_column, persistent=False)
        # (D2, Q·D1): y @ this → M[e, q, a] for edge()
        self.register_buffer("cg_edge", cg.permute(1, 2, 0).reshape(self.d2, -1).to(dtype).contiguous(), persistent=False)
        # (Q, D1·D2): this @ (x ⊗ y) for forward()
        self.register_buffer("cg_pair", cg.reshape(self.d1 * self.d2, -1).T.to(dtype).contiguous(), persistent=False)
        self.register_buffer("path_sum", path_sum_matrix(self.paths, l3_max).to(dtype), persistent=False)
        # x with only its l = 0 row: the paths (0, l, l) map y's components one-to-one to the output
        scalar_paths = [k for k, p in enumerate(self.paths) if p[0] == 0]
        expected = [(0, l, l) for l in range(min(l2_max, l3_max) + 1)]
        self.has_scalar_path = l2_max == l3_max and [self.paths[k] for k in scalar_paths] == expected
        if self.has_scalar_path:
            cols = torch.nonzero(torch.isin(path_of_column, torch.tensor(scalar_paths))).squeeze(-1)
            self.register_buffer("scalar_columns", cols, persistent=False)
            scale = cg[0, torch.arange(self.d3), cols]  # CG(0, l, l) diagonal: 1/√fan_in · output_scale
            self.register_buffer("scalar_scale", scale.to(dtype), persistent=False)

    def column_index(self, channels: int) -> torch.Tensor:
        """Flat index turning per-(path, channel) weights (P·C) into per-(column, channel) (Q·C)."""
        return (self.path_of_column.unsqueeze(-1) * channels + torch.arange(channels, device=self.path_of_column.device)).reshape(-1)

    def edge_scalar(self, x0: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``edge`` for x carrying only l = 0: x0 (E, C), y (E, D2), w (E, D3, C) on ``scalar_columns`` → (E, D3, C).

        Same CG entries (same normalisation) as ``edge`` on zero-padded x, so
        both agree up to rounding; costs two elementwise products.
        """
        return (y * self.scalar_scale).unsqueeze(-1) * w * x0.unsqueeze(1)

    def edge(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x (E, D1, C), y (E, D2), w (E, Q, C) → (E, D3, C)."""
        return torch.matmul(self.path_sum, self.edge_paths(x, y, w))

    def edge_paths(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``edge`` before the paths are added: every path's output block apart, (E, Q, C)."""
        m = torch.matmul(y, self.cg_edge).view(-1, self.num_columns, self.d1)
        return torch.bmm(m, x) * w

    def forward(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x (D1, N, C), y (D2, N, C), w (Q, N, C) → (D3, N, C)."""
        _, n, c = x.shape
        outer = (x.unsqueeze(1) * y.unsqueeze(0)).view(self.d1 * self.d2, n * c)
        t = torch.matmul(self.cg_pair, outer).view(self.num_columns, n, c) * w
        return torch.matmul(self.path_sum, t.view(self.num_columns, n * c)).view(self.d3, n, c)


class DegreewiseLinear(nn.Module):
    """Channel mixing with one weight matrix per degree (``o3.Linear`` on C x 0e + C x 1o + ...).

    Mixing channels with the same matrix for all 2l+1 components of a degree
    commutes with rotations; no bias (a bias on l > 0 would break
    equivariance, and the l = 0 offset is left to the readouts). Applied as
    one batched matmul over components: x (D, N, C_in) @ W[l(d)] (D, C_in, C_out).
    """

    def __init__(self, l_max: int, channels_in: int, channels_out: int):
        super().__init__()
        self.l_max = l_max
        self.weight = nn.Parameter(torch.randn(l_max + 1, channels_in, channels_out) / math.sqrt(channels_in))
        self.register_buffer("degree", degree_of_component(l_max), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (d, N, C_in) with d ≤ (l_max+1)² leading components → (d, N, C_out)."""
        return torch.bmm(x, self.weight.index_select(0, self.degree[: x.shape[0]]))


class SpeciesDegreewiseLinear(nn.Module):
    """``DegreewiseLinear`` with one weight set per species (MACE's element-dependent self-connection,
    an e3nn tensor product with the one-hot species): x (d, N, C_in), species (N,) → (d, N, C_out).

    All species' maps are one batched matmul (S × the flops of one, still tiny),
    then each atom keeps its own species' output.
    """

    def __init__(self, l_max: int, num_species: int, channels_in: int, channels_out: int):
        super().__init__()
        self.l_max, self.num_species, self.channels_out = l_max, num_species, channels_out
        self.weight = nn.Parameter(torch.randn(l_max + 1, channels_in, num_species * channels_out) / math.sqrt(channels_in))
        self.register_buffer("degree", degree_of_component(l_max), persistent=False)

    def forward(self, x: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        d, n, _ = x.shape
        y = torch.bmm(x, self.weight.index_select(0, self.degree[:d])).view(d, n, self.num_species, self.channels_out)
        return y[:, torch.arange(n, device=x.device), species]


class SphericalHarmonicsPolynomial(nn.Module):
    """e3nn's component-normalised real spherical harmonics of unit vectors, as one matmul.

    On the unit sphere Y_l is a homogeneous polynomial of degree l, so every
    Y_l, l ≤ l_max, is a fixed linear map of the monomials u^⊗k, k ≤ l_max.
    The map is fitted once (float64 minimum-norm least squares on random points, exact to
    ~1e-14) against ``o3.spherical_harmonics`` itself, so the basis is e3nn's
    whatever its version. Cost: 2–3 products, one concatenation, one matmul,
    instead of e3nn's dozens of small kernels.
    """

    def __init__(self, l_max: int):
        super().__init__()
        self.l_max = l_max
        gen = torch.Generator().manual_seed(0)
        u = torch.randn(512, 3, generator=gen, dtype=torch.float64)
        u = u / u.norm(dim=-1, keepdim=True)
        target = o3.spherical_harmonics(list(range(l_max + 1)), u, normalize=False, normalization="component")
        feats = self._monomials(u)
        coeff = torch.zeros(feats.shape[-1], target.shape[-1], dtype=torch.float64)
        start = 1
        coeff[0, 0] = target[0, 0]
        for l in range(1, l_max + 1):  # degree-l harmonics from degree-l monomials only
            width = 3**l
            sol = torch.linalg.pinv(feats[:, start : start + width]) @ target[:, component_slice(l)]  # min-norm (monomials repeat)
            coeff[start : start + width, component_slice(l)] = sol
            start += width
        err = (feats @ coeff - target).abs().max().item()
        if err > 1e-10:
            raise RuntimeError(f"spherical-harmonic fit failed (max error {err:.1e})")
        self.register_buffer("coeff", coeff.to(torch.get_default_dtype()), persistent=False)

    def _monomials(self, u: torch.Tensor) -> torch.Tensor:
        parts = [torch.ones_like(u[:, :1]), u]
        p = u
        for _ in range(2, self.l_max + 1):
            p = (p.unsqueeze(-1) * u.unsqueeze(-2)).reshape(len(u), -1)
            parts.append(p)
        return torch.cat(parts, dim=-1)

    def forward(self, unit: torch.Tensor) -> torch.Tensor:
        """unit (E, 3) unit vectors → (E, (l_max+1)²)."""
        return torch.matmul(self._monomials(unit), self.coeff)
