"""Backbones by name, imported lazily so a missing optional piece only fails when chosen."""
from __future__ import annotations

import importlib

BACKBONES: dict[str, str] = {
    "painn": "forcefit.models.painn:PaiNN",
    "equivariant-ace": "forcefit.models.equivariant_ace:EquivariantACE",
}


def backbone_class(name: str):
    if name not in BACKBONES:
        raise ValueError(f"unknown model '{name}'; choose one of: {', '.join(sorted(BACKBONES))}")
    module, cls = BACKBONES[name].split(":")
    return getattr(importlib.import_module(module), cls)
