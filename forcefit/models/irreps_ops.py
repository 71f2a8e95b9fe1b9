"""Dense channel-wise Clebsch–Gordan products and per-degree linear maps for small molecules.

The higher-order backbone stores node features as one tensor ``(N, C, D)``:
``C`` channels, each carrying every degree l = 0..l_max with parity (−1)^l
(0e, 1o, 2e, 3o, ...), concatenated along ``D = (l_max + 1)²`` in e3nn's real
spherical-harmonic basis (for l = 1 the order is y, z, x). In e3nn notation the
features are ``C x 0e + C x 1o + C x 2e (+ C x 3o)``, only laid out channel-major.

Why not ``e3nn.o3.TensorProduct``? For a 9-atom molecule every tensor is tiny,
so the cost of a forward/backward pass is the *number* of kernels launched,
not the arithmetic. e3nn's generic products issue a few kernels per path
(11 paths at l_max = 2, 20+ at l_max = 3); here every path of a product is one
slice of one dense Clebsch–Gordan tensor built once from ``o3.wigner_3j``, so a
whole product is 2–3 matmuls regardless of the path count. The dense tensor
multiplies many structural zeros, which is the right trade below a few
hundred atoms on a CPU.

Only parity-preserving paths (l1 + l2 + l3 even) are kept, so with inputs of
parity (−1)^l the outputs again have parity (−1)^l and everything stays
O(3)-equivariant (rotations and reflections).
"""
from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import nn


def num_components(l_max: int) -> int:
    """D = Σ_{l ≤ l_max} (2l + 1)."""
    return (l_max + 1) ** 2


def degree_of_component(l_max: int) -> torch.Tensor:
    """(D,) long: the degree l of each component (0, 1, 1, 1, 2, ...)."""
    return torch.cat([torch.full((2 * l + 1,), l, dtype=torch.long) for l in range(l_max + 1)])


def _component_slice(l: int) -> slice:
    return slice(l * l, (l + 1) * (l + 1))


def cg_paths(l1_max: int, l2_max: int, l3_max: int, symmetric: bool = False) -> list[tuple[int, int, int]]:
    """Parity-preserving coupling paths (l1, l2) → l3 with the triangle rule.

    ``symmetric`` keeps only l1 ≤ l2: for the product of a tensor with itself the
    (l2, l1) path is the same function as (l1, l2) (the CG tensor with l1+l2+l3
    even is symmetric under the swap), so it would only duplicate a weight.
    """
    paths = []
    for l1 in range(l1_max + 1):
        for l2 in range(l2_max + 1):
            if symmetric and l2 < l1:
                continue
            for l3 in range(abs(l1 - l2), min(l1 + l2, l3_max) + 1):
                if (l1 + l2 + l3) % 2 == 0:
                    paths.append((l1, l2, l3))
    return paths


def dense_cg(paths: list[tuple[int, int, int]], l1_max: int, l2_max: int, l3_max: int) -> torch.Tensor:
    """(D1, D2, P, D3) tensor: path p's Clebsch–Gordan block at its (l1, l2, l3) slots.

    Component normalisation (as e3nn's ``irrep_normalization="component"``): the
    3j symbol is scaled by √(2 l3 + 1) so unit-variance components in give
    unit-variance components out; each output degree is further divided by
    √(number of paths into it) so that summing paths keeps that variance.
    """
    d1, d2, d3 = num_components(l1_max), num_components(l2_max), num_components(l3_max)
    cg = torch.zeros(d1, d2, len(paths), d3, dtype=torch.float64)
    fan_in = {l3: sum(1 for p in paths if p[2] == l3) for l3 in range(l3_max + 1)}
    for k, (l1, l2, l3) in enumerate(paths):
        block = o3.wigner_3j(l1, l2, l3, dtype=torch.float64) * math.sqrt(2 * l3 + 1) / math.sqrt(fan_in[l3])
        cg[_component_slice(l1), _component_slice(l2), k, _component_slice(l3)] = block
    return cg


class ChannelwiseTensorProduct(nn.Module):
    """out[c] = Σ_p w[c, p] · CG_p(x[c] ⊗ y[c]): an e3nn ``uvu``/``uuu`` product, weights given per call.

    The weights come from outside (a radial MLP per edge for messages, a
    species table for the many-body product), so the module itself holds only
    the constant CG tensor (a buffer, so ``.double()`` converts it).

    Two entry points because the second operand has two shapes:
    - ``with_shared(x, y, w)``: y (B, D2) is the same for every channel (edge
      spherical harmonics): contract y into the CG tensor first, one matmul, then
      one batched matmul with x.
    - ``forward(x, y, w)``: y (B, C, D2) per channel (the many-body product A ⊗ A).
    """

    def __init__(self, l1_max: int, l2_max: int, l3_max: int, symmetric: bool = False):
        super().__init__()
        self.l1_max, self.l2_max, self.l3_max = l1_max, l2_max, l3_max
        self.paths = cg_paths(l1_max, l2_max, l3_max, symmetric)
        self.num_paths = len(self.paths)
        self.d1, self.d2, self.d3 = num_components(l1_max), num_components(l2_max), num_components(l3_max)
        cg = dense_cg(self.paths, l1_max, l2_max, l3_max).to(torch.get_default_dtype())
        # (D2, D1 * P * D3): ready for y @ cg in with_shared
        self.register_buffer("cg_y_first", cg.permute(1, 0, 2, 3).reshape(self.d2, -1).contiguous(), persistent=False)
        # (D1 * D2, P * D3): ready for (x ⊗ y) @ cg in forward
        self.register_buffer("cg_flat", cg.reshape(self.d1 * self.d2, -1).contiguous(), persistent=False)

    def _weigh(self, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        # t (B, C, P*D3), w (B, C, P) → Σ_p w·t_p, as a batched (1×P)·(P×D3) product
        b, c = t.shape[:2]
        out = torch.matmul(w.reshape(b * c, 1, self.num_paths), t.reshape(b * c, self.num_paths, self.d3))
        return out.reshape(b, c, self.d3)

    def with_shared(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x (B, C, D1), y (B, D2), w (B, C, P) → (B, C, D3)."""
        m = torch.matmul(y, self.cg_y_first).reshape(-1, self.d1, self.num_paths * self.d3)
        return self._weigh(torch.bmm(x, m), w)

    def forward(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x (B, C, D1), y (B, C, D2), w (B, C, P) → (B, C, D3)."""
        b, c = x.shape[:2]
        outer = (x.unsqueeze(-1) * y.unsqueeze(-2)).reshape(b, c, self.d1 * self.d2)
        return self._weigh(torch.matmul(outer, self.cg_flat), w)


class DegreewiseLinear(nn.Module):
    """Channel mixing with one weight matrix per degree (``o3.Linear`` on C x 0e + C x 1o + ...).

    Mixing channels with the same matrix for all 2l+1 components of a degree
    commutes with rotations; no bias (a bias on l > 0 would break equivariance
    and one on l = 0 is left to the readouts). Weight expanded to (D, C_in, C_out)
    and applied as a single batched matmul over components.
    """

    def __init__(self, l_in_max: int, l_out_max: int, channels_in: int, channels_out: int):
        super().__init__()
        self.l_max = min(l_in_max, l_out_max)
        self.d_in, self.d_out = num_components(l_in_max), num_components(l_out_max)
        self.weight = nn.Parameter(torch.randn(self.l_max + 1, channels_in, channels_out) / math.sqrt(channels_in))
        self.register_buffer("degree", degree_of_component(self.l_max), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, C_in, D_in) → (N, C_out, D_out); degrees above l_out_max dropped, missing ones zero."""
        d = num_components(self.l_max)
        w = self.weight[self.degree]  # (d, C_in, C_out)
        out = torch.einsum("ncd,dco->nod", x[..., :d], w)
        if d < self.d_out:
            out = torch.nn.functional.pad(out, (0, self.d_out - d))
        return out
