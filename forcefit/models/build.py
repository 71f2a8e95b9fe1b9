"""Build a Potential from a plain, serialisable architecture description (what the model file stores)."""
from __future__ import annotations

from .potential import DEFAULT_LEVEL, Potential
from .registry import backbone_class


def build_potential(architecture: dict) -> Potential:
    """``architecture`` keys: name, cutoff, options, species, e0s, scale, shift, zbl, direct_forces,
    vector_heads, levels, default_level, aux_heads (the last three optional).

    The backbone is built first and the auxiliary heads after it, so a model with
    auxiliary heads starts from the same backbone weights as one without (same seed).
    """
    a = architecture
    heads = tuple(a.get("vector_heads", ()))
    if a.get("direct_forces") and "forces" not in heads:
        heads = heads + ("forces",)
    levels = list(a.get("levels") or [DEFAULT_LEVEL])
    backbone = backbone_class(a["name"])(num_species=len(a["species"]), cutoff=a["cutoff"], vector_heads=heads,
                                         energy_heads=len(levels), **a.get("options", {}))
    e0s = a.get("e0s", {})
    if e0s and not all(isinstance(v, dict) for v in e0s.values()):
        e0s = {int(k): float(v) for k, v in e0s.items()}
    else:
        e0s = {lv: {int(k): float(v) for k, v in m.items()} for lv, m in e0s.items()}
    return Potential(
        backbone, a["species"], e0s, a.get("scale", 1.0), a.get("shift", 0.0), a.get("zbl", False), a.get("direct_forces", False),
        levels=levels, default_level=a.get("default_level"), aux_heads=tuple(a.get("aux_heads", ())),
    )
