"""The backbone contract every model follows, and the force encoding DeNS feeds through it.

A backbone maps species and edge vectors to per-atom outputs:

    forward(species, edge_index, edge_vec, force_condition=None) -> {
        "node_energy": (N,) per-atom energy in normalised units ((N, H) with H energy heads),
        "vectors": {name: (N, 3)} one entry per requested vector head,
        "features": whatever the backbone's own auxiliary heads read,
    }

- ``species`` (N,) are indices 0..num_species-1 (the Potential maps Z to them).
- ``edge_index`` (2, E) rows are (centre i, neighbour j); ``edge_vec`` (E, 3)
  is r_ij = x_j − x_i (+ periodic shift), already differentiable in positions.
- ``force_condition`` (N, 3), optional: a per-atom vector embedded at every
  degree the backbone carries (DeNS force encoding); zero rows mean "no input".
- Constructor arguments common to all: ``num_species``, ``cutoff``,
  ``vector_heads`` (names of equivariant per-atom vector outputs that belong to
  the model; the name "forces" is used for a direct-force head) and
  ``energy_heads`` (one energy readout per level of theory).
- Seams for objectives and fine-tuning: ``make_vector_head()`` builds an
  auxiliary vector head *outside* the backbone (the Potential owns it) that
  reads ``features``, so adding one never changes the backbone's parameters or
  their initialisation; ``species_parameters()`` names the parameters indexed
  by species (name -> (dimension, rows per species)) and
  ``energy_head_parameters()`` those with one slice per energy head (name ->
  dimension); ``READOUT_PREFIXES`` names the energy readout's parameters (what
  trains when a fine-tuning run freezes the backbone).
- Attributes: ``cutoff`` (Å) and ``l_max`` (highest degree carried). An option
  whose default is ``None`` and is resolved at construction keeps the resolved
  value in an attribute of the same name (so ``resolved_options`` can record it).
"""
from __future__ import annotations

import inspect
import math

import torch
from e3nn import o3


COMMON_ARGUMENTS = ("num_species", "cutoff", "vector_heads", "energy_heads")


def resolved_options(backbone: torch.nn.Module, options: dict) -> dict:
    """Every constructor option with the value ``backbone`` was built with: the user's, else the default.

    A model file stores these, so a later change of a default cannot change the
    model an old file rebuilds. Defaults of ``None`` resolved at construction
    are read back from the attribute of the same name.
    """
    resolved = {}
    for name, param in inspect.signature(type(backbone).__init__).parameters.items():
        if name == "self" or name in COMMON_ARGUMENTS or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        value = options.get(name, param.default)
        if value is None and getattr(backbone, name, None) is not None:
            value = getattr(backbone, name)
        if value is not param.empty:
            resolved[name] = value
    return resolved


def encode_vector(vector: torch.Tensor, l_max: int) -> list[torch.Tensor]:
    """Embed vectors at degrees 0..l_max as (|v|/√3)·Y_l(v/|v|), component-normalised.

    Returns one tensor (N, 2l+1) per degree, in e3nn's real spherical-harmonic
    basis (for l = 1 that is the (y, z, x) order). Zero vectors give zeros at
    every degree, so atoms without a condition contribute nothing.
    """
    norm = vector.norm(dim=-1, keepdim=True)
    unit = vector / norm.clamp_min(1e-12)
    scale = norm / math.sqrt(3.0)
    out = []
    for l in range(l_max + 1):
        y = o3.spherical_harmonics(l, unit, normalize=False, normalization="component")
        out.append(scale * y)
    return out
