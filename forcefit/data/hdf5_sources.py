"""HDF5 files as frame sources, recognised by their layout: forcefit pools, ANI-1x and SPICE (converted to eV, Å).

Frames are yielded group by group, so packing a public data set needs the
memory of its largest group, not of the file.

- ANI-1x (Smith et al., Sci. Data 7, 134 (2020)): one group per formula with
  ``atomic_numbers`` (n,), ``coordinates`` (F, n, 3) in Å and, per level of
  theory L (``wb97x_dz`` by default, or ``wb97x_tz``, ``ccsd(t)_cbs``, ...),
  ``L.energy`` (F,) in Hartree and ``L.forces`` (F, n, 3) in Hartree/Å. NaN
  marks a value not computed for a conformation; a conformation with neither
  is skipped. Frames are tagged level L.
- SPICE (Eastman et al., Sci. Data 10, 11 (2023)): one group per molecule
  with ``atomic_numbers``, ``conformations`` (F, n, 3) in Bohr,
  ``dft_total_energy`` (F,) in Hartree, ``dft_total_gradient`` (F, n, 3) in
  Hartree/Bohr (forces are minus the gradient) and ``subset`` (the frames'
  config_type). One level per file, tagged ``level`` (default ``spice``).

``Frame.index`` counts conformations through the file in group order
(skipped ones included), so it names the same conformation on every read.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
from ase.units import Bohr, Hartree

from .errors import DataError
from .frame import Frame
from .readers import check_values

HDF5_SUFFIXES = (".h5", ".hdf5")
ANI1X_DEFAULT_LEVEL = "wb97x_dz"
SPICE_DEFAULT_LEVEL = "spice"


def iter_hdf5_frames(path: str | Path, level: str | None = None) -> Iterator[Frame]:
    """Frames of a pool, ANI-1x or SPICE file; ``level`` picks the ANI-1x level or names the SPICE one."""
    path = Path(path)
    with open_hdf5(path) as h5:
        layout = _layout(h5, path)
        if layout == "ani1x":
            yield from _ani1x(h5, path, level)
        elif layout == "spice":
            yield from _spice(h5, path, level)
    if layout == "pool":
        from .packed import PackedFrames

        yield from PackedFrames(path)


def count_hdf5_frames(path: str | Path) -> int:
    """Frames in the file from its metadata alone (for ANI-1x, skipped conformations included): a progress total."""
    path = Path(path)
    with open_hdf5(path) as h5:
        layout = _layout(h5, path)
        if layout == "pool":
            return int(h5["frames/offsets"].shape[0]) - 1
        key = "coordinates" if layout == "ani1x" else "conformations"
        return sum(int(group[key].shape[0]) for group in h5.values() if isinstance(group, h5py.Group) and key in group)


def open_hdf5(path: Path, **options) -> h5py.File:
    """The file opened read-only (``options`` go to h5py.File); a missing, non-HDF5 or truncated file is a DataError naming it."""
    if not path.exists():
        raise DataError("no such file", file=str(path))
    try:
        return h5py.File(path, "r", **options)
    except OSError as exc:
        raise DataError(f"not a readable HDF5 file (truncated or corrupt?): {exc}", file=str(path)) from None


def _layout(h5: h5py.File, path: Path) -> str:
    from .packed import FORMAT

    if h5.attrs.get("format") == FORMAT:
        return "pool"
    first = next((name for name, item in h5.items() if isinstance(item, h5py.Group)), None)
    if first is None:
        raise DataError("an HDF5 file without groups: not a forcefit pool, ANI-1x or SPICE file", file=str(path))
    if "coordinates" in h5[first]:
        return "ani1x"
    if "conformations" in h5[first]:
        return "spice"
    raise DataError(f"not a forcefit pool (no 'format' attribute '{FORMAT}'), and group '/{first}' has neither 'coordinates' "
                    "(ANI-1x) nor 'conformations' (SPICE)", file=str(path), field=f"/{first}")


def _ani1x(h5: h5py.File, path: Path, level: str | None) -> Iterator[Frame]:
    level = level or ANI1X_DEFAULT_LEVEL
    index = 0
    for name, group in h5.items():
        e_key, f_key = f"{level}.energy", f"{level}.forces"
        if e_key not in group and f_key not in group:
            levels = sorted({key.rsplit(".", 1)[0] for key in group if key.endswith((".energy", ".forces"))})
            raise DataError(f"no '{e_key}' or '{f_key}'; levels in this group: {', '.join(levels) or 'none'}",
                            file=str(path), field=f"/{name}")
        numbers, positions = _structures(group, name, path, "coordinates", 1.0)
        energies = _array(group, name, e_key, path, (len(positions),), Hartree)
        forces = _array(group, name, f_key, path, positions.shape, Hartree)
        yield from _frames(path, index, numbers, positions, energies, forces, level, "default")
        index += len(positions)


def _spice(h5: h5py.File, path: Path, level: str | None) -> Iterator[Frame]:
    level = level or SPICE_DEFAULT_LEVEL
    index = 0
    for name, group in h5.items():
        numbers, positions = _structures(group, name, path, "conformations", Bohr)
        energies = _array(group, name, "dft_total_energy", path, (len(positions),), Hartree)
        gradient = _array(group, name, "dft_total_gradient", path, positions.shape, Hartree / Bohr)
        if energies is None and gradient is None:
            raise DataError("neither 'dft_total_energy' nor 'dft_total_gradient'", file=str(path), field=f"/{name}")
        config_type = str(np.ravel(group["subset"].asstr()[()])[0]) if "subset" in group else "default"
        yield from _frames(path, index, numbers, positions, energies, None if gradient is None else -gradient, level, config_type)
        index += len(positions)


def _structures(group, name: str, path: Path, key: str, unit: float) -> tuple[np.ndarray, np.ndarray]:
    """atomic_numbers (n,) and positions (F, n, 3) in Å of one group, checked against each other."""
    for needed in ("atomic_numbers", key):
        if needed not in group:
            raise DataError(f"group has no '{needed}' dataset", file=str(path), field=f"/{name}")
    numbers = np.asarray(group["atomic_numbers"][()], dtype=np.int64).reshape(-1)
    positions = np.asarray(group[key][()], dtype=np.float64) * unit
    if positions.ndim != 3 or positions.shape[1:] != (len(numbers), 3):
        raise DataError(f"shape {positions.shape}, expected (frames, {len(numbers)}, 3) for {len(numbers)} atoms",
                        file=str(path), field=f"/{name}/{key}")
    return numbers, positions


def _array(group, name: str, key: str, path: Path, shape: tuple, unit: float) -> np.ndarray | None:
    """A label dataset in eV units, or None when the group lacks it."""
    if key not in group:
        return None
    values = np.asarray(group[key][()], dtype=np.float64) * unit
    if values.shape != tuple(shape):
        raise DataError(f"shape {values.shape}, expected {tuple(shape)}", file=str(path), field=f"/{name}/{key}")
    return values


def _frames(path: Path, start: int, numbers, positions, energies, forces, level: str, config_type: str) -> Iterator[Frame]:
    """One Frame per conformation; NaN means 'not computed', and a conformation without any label is skipped."""
    for k in range(len(positions)):
        energy = None if energies is None or np.isnan(energies[k]) else float(energies[k])
        force = None if forces is None or np.isnan(forces[k]).any() else forces[k]
        if energy is None and force is None:
            continue
        frame = Frame(positions=positions[k], numbers=numbers, energy=energy, forces=force, config_type=config_type,
                      level=level, source=str(path), index=start + k)
        check_values(frame)
        yield frame
