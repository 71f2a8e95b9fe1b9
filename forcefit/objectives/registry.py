"""Objectives by name (``objective: {kind: NAME}``), imported lazily, as ``models/registry.py`` does for backbones."""
from __future__ import annotations

from ..lazy_registry import resolve

OBJECTIVES: dict[str, str] = {
    "supervised": "forcefit.objectives.supervised:Supervised",
    "dens": "forcefit.objectives.dens:Dens",
    "force-centric": "forcefit.objectives.force_centric:ForceCentric",
    "score-matching": "forcefit.objectives.score_matching:ScoreMatching",
}


def objective_class(kind: str):
    return resolve(OBJECTIVES, kind, "objective")


def parse_objective(entry) -> "object":
    """A config entry (a dict with ``kind``, or an already validated config) → that objective's validated config."""
    if hasattr(entry, "kind") and not isinstance(entry, dict):
        return entry
    if isinstance(entry, str):
        entry = {"kind": entry}
    if not isinstance(entry, dict) or "kind" not in entry:
        raise ValueError(f"an objective is a mapping with a 'kind' ({', '.join(sorted(OBJECTIVES))}), got {entry!r}")
    return objective_class(entry["kind"]).Config.model_validate(entry)


def build_objectives(configs: list, context) -> list:
    """The objectives of a run, in config order."""
    return [objective_class(c.kind)(c, context) for c in configs]
