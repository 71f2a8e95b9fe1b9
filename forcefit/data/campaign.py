"""Read a forcefit labelling campaign (an ASE database) as training frames.

The key names come from ``campaign_schema``, which the labelling engine
writes by too; the data layer itself never imports the engine.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .campaign_schema import LEVELS, MARKER, is_campaign, level_keys
from .errors import DataError
from .frame import Frame


def campaign_levels(db) -> dict:
    """Level name -> method settings, as recorded in the campaign's metadata."""
    return dict(db.metadata.get(LEVELS, {}))


def read_campaign(path: str | Path, level: str | None = None) -> list[Frame]:
    """Frames labelled at ``level`` (energy, forces; Frame.level = level).

    ``level=None`` is allowed when the campaign has exactly one level.
    Structures without a label at that level (not yet labelled, or failed)
    are skipped; a campaign with no labelled frame at that level is an error.
    ``Frame.index`` is the database row id, stable across runs.
    """
    from ase.db import connect

    path = str(path)
    try:
        db = connect(path, use_lock_file=False)
        meta = db.metadata
    except Exception as exc:  # sqlite / psycopg errors of many types
        raise DataError(f"cannot open as an ASE database ({type(exc).__name__}: {exc})", file=path) from exc
    if not is_campaign(meta):
        raise DataError(f"not a forcefit labelling campaign (metadata lacks '{MARKER}')", file=path)
    levels = campaign_levels(db)
    available = ", ".join(sorted(levels)) or "none"
    if level is None:
        if len(levels) != 1:
            raise DataError(f"campaign has {len(levels)} levels of theory ({available}); choose one with --level", file=path, field="level")
        level = next(iter(levels))
    elif level not in levels:
        raise DataError(f"no level '{level}' in this campaign; available levels: {available}", file=path, field="level")

    keys = level_keys(level)
    key = keys.label
    frames = []
    total = 0
    for row in db.select():
        total += 1
        if not row.get(keys.has):
            continue
        label = row.data.get(key)
        if label is None or "energy" not in label or "forces" not in label:
            raise DataError("row is flagged as labelled but its label data is missing", file=path, frame=row.id, field=key)
        atoms = row.toatoms()
        fixed = None
        for constraint in atoms.constraints:
            if type(constraint).__name__ == "FixAtoms":
                fixed = np.zeros(len(atoms), dtype=bool)
                fixed[constraint.get_indices()] = True
        frames.append(
            Frame(
                positions=np.asarray(row.positions, dtype=np.float64),
                numbers=np.asarray(row.numbers, dtype=np.int64),
                cell=np.asarray(row.cell, dtype=np.float64),
                pbc=np.asarray(row.pbc, dtype=bool),
                energy=float(label["energy"]),
                forces=np.asarray(label["forces"], dtype=np.float64),
                config_type=str(row.get("config_type", "default")),
                level=level,
                weight=float(row.get("weight", 1.0)),
                equilibrium=bool(row.get("equilibrium", 0)),
                fixed=fixed,
                temperature=float(row.temperature) if row.get("temperature") is not None else None,  # MD samples keep theirs
                source=path,
                index=row.id,
            )
        )
    if not frames:
        raise DataError(f"no structure is labelled at level '{level}' yet ({total} structures in the campaign)", file=path, field="level")
    return frames
