"""ZBL screened nuclear repulsion: a physical prior that keeps atoms apart where data never goes."""
from __future__ import annotations

import torch
from ase.data import covalent_radii
from torch import nn

from .radial import PolynomialCutoff

COULOMB = 14.399645  # e²/(4πε0) in eV·Å
PHI_C = (0.18175, 0.50986, 0.28022, 0.02817)
PHI_D = (3.19980, 0.94229, 0.40290, 0.20162)


class ZBLRepulsion(nn.Module):
    """Universal ZBL pair repulsion, smoothly switched off at the sum of covalent radii."""

    def __init__(self):
        super().__init__()
        self.register_buffer("radii", torch.tensor(covalent_radii, dtype=torch.get_default_dtype()))
        self.envelope = PolynomialCutoff(1.0)

    def forward(self, numbers, edge_index, distances) -> torch.Tensor:
        """Per-atom repulsion energy (eV); each directed edge gives half of its pair."""
        i, j = edge_index
        zi, zj = numbers[i].to(distances.dtype), numbers[j].to(distances.dtype)
        a = 0.46850 / (zi**0.23 + zj**0.23)
        x = distances / a
        phi = sum(c * torch.exp(-d * x) for c, d in zip(PHI_C, PHI_D))
        r_max = (self.radii[numbers[i]] + self.radii[numbers[j]]).to(distances.dtype)
        pair = COULOMB * zi * zj / distances * phi * self.envelope(distances / r_max)
        out = torch.zeros(numbers.shape[0], dtype=distances.dtype, device=distances.device)
        return out.index_add(0, i, 0.5 * pair)
