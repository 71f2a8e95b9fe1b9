"""Build a Potential from a plain, serialisable architecture description (what the model file stores)."""
from __future__ import annotations

from .potential import Potential
from .registry import backbone_class


def build_potential(architecture: dict) -> Potential:
    """``architecture`` keys: name, cutoff, options, species, e0s, scale, shift, zbl, direct_forces, vector_heads."""
    a = architecture
    heads = tuple(a.get("vector_heads", ()))
    if a.get("direct_forces") and "forces" not in heads:
        heads = heads + ("forces",)
    backbone = backbone_class(a["name"])(num_species=len(a["species"]), cutoff=a["cutoff"], vector_heads=heads, **a.get("options", {}))
    e0s = {int(k): float(v) for k, v in a.get("e0s", {}).items()}
    return Potential(
        backbone, a["species"], e0s, a.get("scale", 1.0), a.get("shift", 0.0), a.get("zbl", False), a.get("direct_forces", False)
    )
