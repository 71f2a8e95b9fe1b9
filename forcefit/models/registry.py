"""Backbones by name, imported lazily so a missing optional piece only fails when chosen."""
from __future__ import annotations

from ..lazy_registry import resolve

BACKBONES: dict[str, str] = {
    "painn": "forcefit.models.painn:PaiNN",
    "equivariant-ace": "forcefit.models.equivariant_ace:EquivariantACE",
}


def backbone_class(name: str):
    return resolve(BACKBONES, name, "model")
