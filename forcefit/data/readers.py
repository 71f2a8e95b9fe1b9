"""Readers: every format ASE reads, ASE databases (and labelling campaigns), MD17/rMD17 .npz, HDF5 (pools, ANI-1x, SPICE)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DataError
from .frame import Frame

KCAL_PER_MOL_IN_EV = 0.0433641042  # ase.units.kcal / ase.units.mol


def read_frames(
    path: str | Path,
    index: str = ":",
    energy_key: str = "energy",
    forces_key: str = "forces",
    level: str | None = None,
    level_key: str = "level",
) -> list[Frame]:
    """Read labelled frames from a file.

    Dispatches on the suffix: ``.npz`` is MD17/rMD17 (kcal/mol converted to eV),
    ``.db`` an ASE database or a forcefit labelling campaign (pick ``level``),
    ``.h5``/``.hdf5`` a packed pool, ANI-1x or SPICE file (``hdf5_sources``; ``level``
    picks the ANI-1x level), anything else goes through ``ase.io.read``; ``level_key`` names the per-frame
    info key that tags a frame's level of theory (``level`` by default). Values are checked for NaN/inf
    and shape here; requirements of a run (energy present, ...) in ``validate``.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("no such file", file=str(path))
    suffix = path.suffix.lower()
    if suffix == ".npz":
        frames = _read_md17(path)
    elif suffix == ".db":
        frames = _read_db(path, level, energy_key, forces_key)
    elif suffix in (".h5", ".hdf5"):
        from .hdf5_sources import iter_hdf5_frames

        frames = list(iter_hdf5_frames(path, level))
    else:
        frames = _read_ase(path, index, energy_key, forces_key, level_key)
    if not frames:
        raise DataError("contains no frames", file=str(path))
    for frame in frames:
        check_values(frame)
    return frames


def check_values(frame: Frame) -> None:
    """Reject NaN/inf and wrongly shaped arrays, naming the frame and field."""
    n = frame.n_atoms
    if frame.positions.shape != (n, 3):
        raise DataError(f"positions have shape {frame.positions.shape}, expected ({n}, 3)", frame.source, frame.index, "positions")
    if not np.all(np.isfinite(frame.positions)):
        raise DataError("positions contain NaN or infinite values", frame.source, frame.index, "positions")
    if frame.energy is not None and not np.isfinite(frame.energy):
        raise DataError(f"energy is {frame.energy}", frame.source, frame.index, "energy")
    if frame.forces is not None:
        if frame.forces.shape != (n, 3):
            raise DataError(f"forces have shape {frame.forces.shape}, expected ({n}, 3) for {n} atoms", frame.source, frame.index, "forces")
        if not np.all(np.isfinite(frame.forces)):
            raise DataError("forces contain NaN or infinite values", frame.source, frame.index, "forces")
    if frame.temperature is not None and not (np.isfinite(frame.temperature) and frame.temperature > 0):
        raise DataError(f"temperature must be a finite positive number of kelvin, got {frame.temperature}", frame.source,
                        frame.index, "temperature")
    if not np.isfinite(frame.weight) or frame.weight < 0:
        raise DataError(f"weight must be a finite non-negative number, got {frame.weight}", frame.source, frame.index, "weight")


def frame_from_atoms(atoms, source: str, index: int, energy_key: str = "energy", forces_key: str = "forces",
                     level_key: str = "level") -> Frame:
    """Convert an ASE Atoms (labels in info/arrays or a calculator) into a Frame."""
    energy = _numeric(lambda: _lookup_energy(atoms, energy_key), source, index, energy_key)
    forces = _numeric(lambda: _lookup_forces(atoms, forces_key), source, index, forces_key)
    fixed = None
    for constraint in atoms.constraints:
        if type(constraint).__name__ == "FixAtoms":
            fixed = np.zeros(len(atoms), dtype=bool)
            fixed[constraint.get_indices()] = True
    info = atoms.info
    return Frame(
        positions=np.asarray(atoms.get_positions(), dtype=np.float64),
        numbers=np.asarray(atoms.get_atomic_numbers(), dtype=np.int64),
        cell=np.asarray(atoms.get_cell()[:], dtype=np.float64),
        pbc=np.asarray(atoms.get_pbc(), dtype=bool),
        energy=energy,
        forces=forces,
        config_type=str(info.get("config_type", "default")),
        level=str(info.get(level_key, info.get("level_of_theory", "default"))),
        weight=_numeric(lambda: float(info.get("weight", info.get("config_weight", 1.0))), source, index, "weight"),
        equilibrium=bool(info.get("equilibrium", False)),
        fixed=fixed,
        temperature=_numeric(lambda: float(info["temperature"]) if "temperature" in info else None, source, index, "temperature"),
        source=source,
        index=index,
    )


def _numeric(read, source: str, index: int, field: str):
    """A label that is not a number (``energy=high``) is bad input naming its file, frame and field."""
    try:
        return read()
    except (TypeError, ValueError) as exc:
        raise DataError(f"not numeric ({exc})", source, index, field) from None


def _lookup_energy(atoms, key: str) -> float | None:
    if key in atoms.info:
        return float(atoms.info[key])
    if atoms.calc is not None and key == "energy":
        try:
            return float(atoms.calc.get_potential_energy(atoms))
        except Exception:  # calculator without an energy result
            return None
    return None


def _lookup_forces(atoms, key: str) -> np.ndarray | None:
    if key in atoms.arrays:
        return np.asarray(atoms.arrays[key], dtype=np.float64)
    if key in atoms.info:  # a wrongly shaped forces entry lands here
        return np.asarray(atoms.info[key], dtype=np.float64)
    if atoms.calc is not None and key == "forces":
        try:
            return np.asarray(atoms.calc.get_forces(atoms), dtype=np.float64)
        except Exception:
            return None
    return None


def _read_ase(path: Path, index: str, energy_key: str, forces_key: str, level_key: str = "level") -> list[Frame]:
    import ase.io

    try:
        images = ase.io.read(str(path), index=index)
    except Exception as exc:  # ASE raises many types; all mean "unreadable"
        raise DataError(f"cannot read as a structure file ({type(exc).__name__}: {exc})", file=str(path)) from exc
    if not isinstance(images, list):
        images = [images]
    return [frame_from_atoms(a, str(path), i, energy_key, forces_key, level_key) for i, a in enumerate(images)]


def _read_db(path: Path, level: str | None, energy_key: str = "energy", forces_key: str = "forces") -> list[Frame]:
    from ase.db import connect

    try:
        db = connect(str(path))
        is_campaign = db.metadata.get("forcefit_campaign", False)
    except Exception as exc:
        raise DataError(f"cannot open as an ASE database ({type(exc).__name__}: {exc})", file=str(path)) from exc
    if is_campaign:
        from .campaign import read_campaign

        return read_campaign(str(path), level)
    frames = []
    for i, row in enumerate(db.select()):
        atoms = row.toatoms()
        atoms.info.update(row.key_value_pairs)
        if forces_key in row.data:  # custom per-atom labels live in the row's data
            atoms.arrays[forces_key] = np.asarray(row.data[forces_key])
        frames.append(frame_from_atoms(atoms, str(path), i, energy_key, forces_key))
    return frames


def _read_md17(path: Path) -> list[Frame]:
    try:
        data = np.load(path)
    except Exception as exc:
        raise DataError(f"cannot read as .npz ({type(exc).__name__}: {exc})", file=str(path)) from exc
    keys = set(data.files)
    if {"nuclear_charges", "coords"} <= keys:  # rMD17
        z, r, e, f = "nuclear_charges", "coords", "energies", "forces"
    elif {"z", "R"} <= keys:  # original MD17
        z, r, e, f = "z", "R", "E", "F"
    else:
        raise DataError(f"not an MD17/rMD17 archive: keys {sorted(keys)}", file=str(path))
    numbers = np.asarray(data[z], dtype=np.int64)
    coords = np.asarray(data[r], dtype=np.float64)
    energies = np.asarray(data[e], dtype=np.float64).reshape(-1) * KCAL_PER_MOL_IN_EV if e in keys else None
    forces = np.asarray(data[f], dtype=np.float64) * KCAL_PER_MOL_IN_EV if f in keys else None
    for name, values in ((e, energies), (f, forces)):
        if values is not None and len(values) != len(coords):
            raise DataError(f"{len(values)} entries for {len(coords)} frames of '{r}'", file=str(path), field=name)
    return [
        Frame(
            positions=coords[i],
            numbers=numbers,
            energy=None if energies is None else float(energies[i]),
            forces=None if forces is None else forces[i],
            source=str(path),
            index=i,
        )
        for i in range(len(coords))
    ]
