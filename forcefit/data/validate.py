"""Checks that a set of frames can serve a given run, with messages naming file, frame and field."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from ase.data import chemical_symbols

from .errors import DataError
from .frame import Frame

MIN_DISTANCE = 0.1  # Å: closer atoms are almost surely a unit or file error


def validate_frames(
    frames: Sequence[Frame],
    name: str,
    need_energy: bool = True,
    need_forces: bool = True,
    species: Iterable[int] | None = None,
    min_distance: float = MIN_DISTANCE,
    need_any_label: bool = False,
    levels: Sequence[str] | None = None,
    level_key: str = "level",
) -> None:
    """Raise DataError for the first frame that cannot be used by this run.

    ``name`` says which split the frames form (train/valid/test), so that an
    empty split is reported by name. ``need_any_label``: a frame must carry an
    energy or forces (one is enough: it trains on what it has). ``levels``: a
    frame's level of theory must be one of them (a multi-level model has a head
    for each).
    """
    if len(frames) == 0:
        raise DataError(f"the {name} split is empty", field=name)
    allowed = None if species is None else set(int(z) for z in species)
    for frame in frames:
        if need_energy and frame.energy is None:
            raise DataError("has no energy label, which training needs (set energy_key if it is stored under another name)", frame.source, frame.index, "energy")
        if need_forces and frame.forces is None:
            raise DataError("has no forces label, which training needs (set forces_key, or forces_weight: 0)", frame.source, frame.index, "forces")
        if need_any_label and frame.energy is None and frame.forces is None:
            raise DataError("has neither an energy nor forces, so it has nothing to train on (set energy_key/forces_key if "
                            "they are stored under other names)", frame.source, frame.index, "energy")
        if levels is not None and frame.level not in levels:
            raise DataError(f"has level '{frame.level}', which is not one of the model's levels ({', '.join(levels)}); "
                            f"tag each frame with its level in the '{level_key}' key", frame.source, frame.index, level_key)
        if allowed is not None:
            unknown = unknown_elements(frame.numbers, allowed)
            if unknown:
                raise DataError(f"contains {unknown}", frame.source, frame.index, "numbers")
        check_min_distance(frame, min_distance)


def unknown_elements(numbers: Iterable[int], species: Iterable[int]) -> str | None:
    """'element(s) X (Z=..), Y (Z=..) that the model does not know (model species: ...)' for numbers outside ``species``.

    The one wording of this check, used by validation, evaluation and the ASE calculator.
    """
    known = sorted({int(z) for z in species})
    missing = sorted({int(z) for z in numbers} - set(known))
    if not missing:
        return None
    names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in missing)
    return f"element(s) {names} that the model does not know (model species: {', '.join(chemical_symbols[z] for z in known)})"


def check_min_distance(frame: Frame, min_distance: float = MIN_DISTANCE) -> None:
    """Atoms closer than ``min_distance`` Å (periodic images included) are an error."""
    if frame.n_atoms < 2 and not frame.pbc.any():
        return
    from .neighbors import neighbor_list

    i, j, _shift, dist = neighbor_list(frame.positions, frame.cell, frame.pbc, min_distance, with_distances=True)
    if len(i):
        k = int(np.argmin(dist))
        raise DataError(
            f"atoms {i[k]} and {j[k]} are {dist[k]:.4f} Å apart (< {min_distance} Å): overlapping atoms or wrong units",
            frame.source, frame.index, "positions",
        )


def count_duplicates(frames: Sequence[Frame], decimals: int = 6) -> int:
    """How many frames repeat an earlier one (same level, elements and positions to 1e-6 Å)."""
    seen: set = set()
    duplicates = 0
    for frame in frames:
        key = (frame.level, frame.numbers.tobytes(), np.round(frame.positions, decimals).tobytes())
        duplicates += key in seen
        seen.add(key)
    return duplicates
