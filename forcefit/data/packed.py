"""A packed pool: frames of many files in one HDF5 file, written in chunks and read back one frame at a time.

Pretraining pools outgrow memory, so ``pack`` streams its sources into the
file chunk by chunk (memory: one chunk, plus the largest non-HDF5 source,
which ``read_frames`` reads whole) and ``PackedFrames`` reads only the
slices of the frame asked for. Statistics are computed once, while packing
(``pool_stats``). Frames come back bit for bit as they were read, with
``Frame.source`` and ``Frame.index`` naming the original file and frame.

Layout (format ``forcefit-pool``, version 2; F frames, N atoms in all)::

    /                 attributes: format, format_version, forcefit_version, stats (JSON, see pool_stats)
    /atoms/           per atom, the frames' atoms one after another
        positions     (N, 3) float64, Å
        numbers       (N,) int8
        forces        (N, 3) float64, eV/Å (NaN in frames without forces)
        fixed         (N,) bool, atoms that never move
    /frames/          per frame
        offsets       (F+1,) int64: frame k's atoms are rows offsets[k]:offsets[k+1] of /atoms
        energy        (F,) float64, eV (NaN where has_energy is false)
        has_energy, has_forces, has_fixed     (F,) bool (has_fixed false: Frame.fixed is None)
        cell (F, 3, 3) float64, pbc (F, 3) bool, weight (F,) float64, equilibrium (F,) bool
        level, source, config_type            (F,) int32: indices into /levels, /sources, /config_types
        index         (F,) int64: the frame's index in its source file
        temperature   (F,) float64, K: the temperature of the MD that sampled the frame (NaN: not given);
                      version 2 on (a version-1 pool reads back with no temperatures)
    /levels, /sources, /config_types          UTF-8 string lists

Datasets are chunked and resizable (no compression, for fast random access).
"""
from __future__ import annotations

import json
import operator
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np

from .._version import __version__
from ..atomic_file import atomic_path
from .errors import DataError
from .frame import FLAGS, Frame
from .hdf5_sources import HDF5_SUFFIXES, count_hdf5_frames, iter_hdf5_frames, open_hdf5
from .pool_stats import DEFAULT_NEIGHBOR_CUTOFF, PoolStats, stats_from_json
from .readers import read_frames

FORMAT = "forcefit-pool"
FORMAT_VERSION = 2
CHUNK_ATOMS = 8192  # rows per chunk of the per-atom datasets (positions: 192 KiB)
CHUNK_FRAMES = 2048  # rows per chunk of the per-frame datasets (cell: 144 KiB)
MAX_ATOMIC_NUMBER = 118  # numbers are stored as int8

# dataset name -> (dtype, shape of one row)
PER_ATOM = {"positions": (np.float64, (3,)), "numbers": (np.int8, ()), "forces": (np.float64, (3,)), "fixed": (np.bool_, ())}
PER_FRAME = {
    "energy": (np.float64, ()), "has_energy": (np.bool_, ()), "has_forces": (np.bool_, ()), "has_fixed": (np.bool_, ()),
    "cell": (np.float64, (3, 3)), "pbc": (np.bool_, (3,)), "weight": (np.float64, ()), "equilibrium": (np.bool_, ()),
    "level": (np.int32, ()), "source": (np.int32, ()), "config_type": (np.int32, ()), "index": (np.int64, ()),
    "temperature": (np.float64, ()),
}
SINCE_VERSION = {"temperature": 2}  # per-frame datasets a pool of an earlier format version lacks
NAMES = {"level": "levels", "source": "sources", "config_type": "config_types"}  # per-frame index -> its string list


def parse_source(spec: str | Path) -> tuple[Path, str | None]:
    """``campaign.db:dft`` -> (campaign.db, 'dft'); a path that exists as written is taken whole."""
    text = str(spec)
    if Path(text).exists() or ":" not in text:
        return Path(text), None
    head, level = text.rsplit(":", 1)
    return Path(head), level or None


def pack(
    sources: Sequence[str | Path],
    out: str | Path,
    level: str | None = None,
    level_of: Mapping[str | Path, str] | None = None,
    neighbor_cutoff: float = DEFAULT_NEIGHBOR_CUTOFF,
    progress: Callable[[int, int | None], None] | None = None,
) -> dict:
    """Read every source and write them as one pool file, whole or not at all; returns the pool's statistics.

    Sources are anything ``read_frames`` reads (ANI-1x, SPICE and other pools
    streamed group by group). The level of theory to read from a campaign or
    an ANI-1x file is the one written as ``PATH:LEVEL``, else ``level_of[PATH]``,
    else ``level``. ``progress(frames_written, expected_total or None)`` is
    called as frames are written. A bad frame raises the reader's DataError.
    """
    level_of = {str(Path(p)): lv for p, lv in (level_of or {}).items()}
    plan = []
    for spec in sources:
        path, named = parse_source(spec)
        if not path.exists():
            raise DataError("no such file", file=str(path))
        plan.append((path, named or level_of.get(str(path), level)))
    if not plan:
        raise DataError("no sources to pack", field="sources")
    count = _ProgressCount(plan, progress)
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as h5:
        writer = _PoolWriter(h5, neighbor_cutoff)
        for k, (path, source_level) in enumerate(plan):
            if path.suffix.lower() in HDF5_SUFFIXES:
                frames = iter_hdf5_frames(path, source_level)
            else:
                frames = read_frames(path, level=source_level)
                count.known(k, len(frames))
            written = 0
            for frame in frames:
                writer.add(frame)
                written += 1
                count.advance()
            if not written:
                raise DataError("contains no frames", file=str(path))
        stats = writer.close()
    count.finish()
    return stats


class _ProgressCount:
    """Frames written and the expected total: HDF5 sources count from their metadata, others once read, unread ones
    are estimated from their file size at the frames per byte of the sources read so far."""

    EVERY = 256  # frames between reports

    def __init__(self, plan, report):
        self.report, self.done = report, 0
        self.hdf5 = [path.suffix.lower() in HDF5_SUFFIXES for path, _ in plan]
        self.sizes = [path.stat().st_size for path, _ in plan]
        self.counts = [count_hdf5_frames(path) if h5 and report else None for (path, _), h5 in zip(plan, self.hdf5)]
        self.expected = self._expected()

    def known(self, k: int, frames: int) -> None:
        self.counts[k] = frames
        self.expected = self._expected()

    def _expected(self) -> int | None:
        unread = sum(size for size, c in zip(self.sizes, self.counts) if c is None)
        known = sum(c for c in self.counts if c is not None)
        if not unread:
            return known
        read = [(c, size) for c, size, h5 in zip(self.counts, self.sizes, self.hdf5) if c is not None and not h5]
        if not read:
            return None
        return known + round(unread * sum(c for c, _ in read) / max(sum(size for _, size in read), 1))

    def advance(self) -> None:
        self.done += 1
        if self.report and self.done % self.EVERY == 0:
            self.report(self.done, max(self.expected, self.done) if self.expected is not None else None)

    def finish(self) -> None:
        if self.report:
            self.report(self.done, self.done)


class _PoolWriter:
    """Buffers frames and appends them to the resizable datasets a chunk at a time."""

    def __init__(self, h5: h5py.File, neighbor_cutoff: float):
        self.h5 = h5
        self.stats = PoolStats(neighbor_cutoff)
        self.names: dict[str, dict[str, int]] = {kind: {} for kind in NAMES.values()}
        self.buffer: list[Frame] = []
        self.buffered_atoms = 0
        self.atoms_written = 0
        for group, specs, chunk in (("atoms", PER_ATOM, CHUNK_ATOMS), ("frames", PER_FRAME, CHUNK_FRAMES)):
            for name, (dtype, row) in specs.items():
                h5.create_dataset(f"{group}/{name}", shape=(0, *row), maxshape=(None, *row), chunks=(chunk, *row), dtype=dtype)
        h5.create_dataset("frames/offsets", data=np.zeros(1, dtype=np.int64), maxshape=(None,), chunks=(CHUNK_FRAMES,))

    def add(self, frame: Frame) -> None:
        if frame.n_atoms and not 0 <= frame.numbers.min() <= frame.numbers.max() <= MAX_ATOMIC_NUMBER:
            raise DataError(f"atomic numbers must lie in 0..{MAX_ATOMIC_NUMBER}", frame.source, frame.index, "numbers")
        self.stats.add(frame)
        self.buffer.append(frame)
        self.buffered_atoms += frame.n_atoms
        if self.buffered_atoms >= CHUNK_ATOMS or len(self.buffer) >= CHUNK_FRAMES:
            self._flush()

    def _index(self, kind: str, name: str) -> int:
        names = self.names[kind]
        return names.setdefault(name, len(names))

    def _flush(self) -> None:
        frames = self.buffer
        if not frames:
            return
        nan3 = np.full((1, 3), np.nan)
        per_atom = {
            "positions": np.concatenate([f.positions for f in frames]),
            "numbers": np.concatenate([f.numbers for f in frames]).astype(np.int8),
            "forces": np.concatenate([nan3.repeat(f.n_atoms, 0) if f.forces is None else f.forces for f in frames]),
            "fixed": np.concatenate([np.zeros(f.n_atoms, bool) if f.fixed is None else f.fixed for f in frames]),
        }
        per_frame = {
            "energy": [np.nan if f.energy is None else f.energy for f in frames],
            "has_energy": [f.energy is not None for f in frames],
            "has_forces": [f.forces is not None for f in frames],
            "has_fixed": [f.fixed is not None for f in frames],
            "cell": [f.cell for f in frames],
            "pbc": [f.pbc for f in frames],
            "weight": [f.weight for f in frames],
            "equilibrium": [bool(f.equilibrium) for f in frames],
            "level": [self._index("levels", f.level) for f in frames],
            "source": [self._index("sources", f.source) for f in frames],
            "config_type": [self._index("config_types", f.config_type) for f in frames],
            "index": [f.index for f in frames],
            "temperature": [np.nan if f.temperature is None else f.temperature for f in frames],
        }
        for group, values, specs in (("atoms", per_atom, PER_ATOM), ("frames", per_frame, PER_FRAME)):
            for name, (dtype, _row) in specs.items():
                _append(self.h5[f"{group}/{name}"], np.asarray(values[name], dtype=dtype))
        ends = self.atoms_written + np.cumsum([f.n_atoms for f in frames])
        _append(self.h5["frames/offsets"], ends.astype(np.int64))
        self.atoms_written = int(ends[-1])
        self.buffer, self.buffered_atoms = [], 0

    def close(self) -> dict:
        """Write the last chunk, the string lists and the attributes; returns the statistics."""
        self._flush()
        for kind, names in self.names.items():
            self.h5.create_dataset(kind, data=list(names), dtype=h5py.string_dtype())
        stats = self.stats.result()
        self.h5.attrs.update(format=FORMAT, format_version=FORMAT_VERSION, forcefit_version=__version__, stats=json.dumps(stats))
        return stats


def _append(dataset: h5py.Dataset, values: np.ndarray) -> None:
    start = dataset.shape[0]
    dataset.resize(start + len(values), axis=0)
    dataset[start:] = values


class PackedFrames(Sequence):
    """The frames of a pool file, read from disk when asked for: ``len``, ``pool[k]`` (a Frame), slices (lists), iteration.

    ``pool[k]`` reads only frame k's slices; iteration reads about a chunk at
    a time. Only the frame offsets, the string lists and the statistics are
    held in memory. The HDF5 file is opened lazily in each process (a DataLoader
    worker, forked or spawned, opens its own), and the object pickles as
    its path. Opening checks the layout: a file that is not a pool, lacks a
    group or dataset, or has offsets inconsistent with its arrays raises
    DataError naming the file and the dataset.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._pid = None
        self._open()

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.path, self._pid = state["path"], None

    def _open(self) -> None:
        # no chunk cache: the data is uncompressed, so reads go straight to the file (and the OS cache), and HDF5's
        # default 1 MiB per dataset would cost every DataLoader worker some 20 MB
        h5 = open_hdf5(self.path, rdcc_nbytes=0)
        try:
            version = self._check_format(h5)
            self._datasets = {f"{group}/{name}": self._dataset(h5, f"{group}/{name}", dtype, row)
                              for group, specs in (("atoms", PER_ATOM), ("frames", PER_FRAME)) for name, (dtype, row) in specs.items()
                              if version >= SINCE_VERSION.get(name, 1)}
            offsets = self._dataset(h5, "frames/offsets", np.int64, ())
            self.offsets = self._read(offsets, "frames/offsets", slice(None))
            self._check_offsets()
            self.names = {kind: [str(s) for s in self._read(self._dataset(h5, kind, str, ()).asstr(), kind, slice(None))]
                          for kind in NAMES.values()}
            if "stats" not in h5.attrs:
                self._missing("/", "attribute 'stats'")
            self._stats = stats_from_json(h5.attrs["stats"])
        except BaseException:
            h5.close()
            raise
        self._h5, self._pid = h5, os.getpid()

    def _check_format(self, h5: h5py.File) -> int:
        """The file's format version, after checking that it is a pool this forcefit reads."""
        found = h5.attrs.get("format")
        if found != FORMAT:
            what = "no 'format' attribute" if found is None else f"'format' attribute {found!r}"
            raise DataError(f"not a forcefit pool: the file has {what}, expected {FORMAT!r}", file=str(self.path), field="/")
        version = int(h5.attrs.get("format_version", 0))
        if not 1 <= version <= FORMAT_VERSION:
            raise DataError(f"pool format version {version}; this forcefit reads versions 1 to {FORMAT_VERSION} "
                            "(a newer forcefit wrote it?)", file=str(self.path), field="/")
        return version

    def _missing(self, group: str, what: str) -> None:
        raise DataError(f"the pool has no {what} (damaged file?)", file=str(self.path), field=group)

    def _dataset(self, h5: h5py.File, name: str, dtype, row: tuple) -> h5py.Dataset:
        group = name.rsplit("/", 1)[0] if "/" in name else ""
        if group and not isinstance(h5.get(group), h5py.Group):
            self._missing(f"/{group}", f"group '/{group}'")
        dataset = h5.get(name)
        if not isinstance(dataset, h5py.Dataset):
            self._missing(f"/{name}", f"dataset '/{name}'")
        if dtype is str:
            right_type, expected = h5py.check_string_dtype(dataset.dtype) is not None, "strings"
        else:
            right_type, expected = dataset.dtype == np.dtype(dtype), str(np.dtype(dtype))
        if dataset.ndim == 0 or dataset.shape[1:] != row or not right_type:
            raise DataError(f"has shape {dataset.shape} and dtype {dataset.dtype}, expected rows of shape {row} holding {expected}",
                            file=str(self.path), field=f"/{name}")
        return dataset

    def _check_offsets(self) -> None:
        offsets, where = self.offsets, dict(file=str(self.path), field="/frames/offsets")
        if len(offsets) == 0 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
            raise DataError("offsets must start at 0 and never decrease", **where)
        frames, atoms = len(offsets) - 1, int(offsets[-1])
        for name, dataset in self._datasets.items():
            expected = atoms if name.startswith("atoms/") else frames
            if dataset.shape[0] != expected:
                raise DataError(f"has {dataset.shape[0]} rows, but /frames/offsets describes {frames} frames with {atoms} atoms "
                                f"(expected {expected})", file=str(self.path), field=f"/{name}")

    def _read(self, dataset, name: str, rows):
        try:
            return dataset[rows]
        except OSError as exc:
            raise DataError(f"cannot read rows {rows} ({exc}): truncated or damaged file?", file=str(self.path), field=f"/{name}") from None

    def _ensure_open(self) -> None:
        """Reopen in a new process: an HDF5 handle must not cross a fork or a pickle."""
        if self._pid != os.getpid():
            self._open()

    @property
    def stats(self) -> dict:
        """The statistics computed while packing (``pool_stats.PoolStats.result``)."""
        self._ensure_open()
        return self._stats

    @property
    def levels(self) -> list[str]:
        self._ensure_open()
        return self.names["levels"]

    @property
    def sources(self) -> list[str]:
        self._ensure_open()
        return self.names["sources"]

    def __len__(self) -> int:
        self._ensure_open()
        return len(self.offsets) - 1

    def flags(self) -> dict[str, np.ndarray]:
        """``frame.frame_flags`` of every frame, from the per-frame arrays alone (no atom is read)."""
        self._ensure_open()
        return {name: self._read(self._datasets[f"frames/{name}"], f"frames/{name}", slice(None)).astype(bool)
                for name in FLAGS}

    def __getitem__(self, k):
        n = len(self)
        if isinstance(k, slice):
            start, stop, step = k.indices(n)
            if step == 1:
                return self._block(start, stop)
            return [self._block(i, i + 1)[0] for i in range(start, stop, step)]
        k = operator.index(k)
        k = k + n if k < 0 else k
        if not 0 <= k < n:
            raise IndexError(f"frame {k} out of range for a pool of {n} frames")
        return self._block(k, k + 1)[0]

    def __iter__(self):
        """Block by block (about a chunk each): a few large reads instead of sixteen small ones per frame."""
        k, n = 0, len(self)
        while k < n:
            end = np.searchsorted(self.offsets, self.offsets[k] + CHUNK_ATOMS, side="right") - 1
            stop = int(min(max(end, k + 1), k + CHUNK_FRAMES, n))
            yield from self._block(k, stop)
            k = stop

    def _block(self, start: int, stop: int) -> list[Frame]:
        """Frames start..stop-1, reading each dataset once, as one slice."""
        if stop <= start:
            return []
        first = int(self.offsets[start])
        rows = {"atoms": slice(first, int(self.offsets[stop])), "frames": slice(start, stop)}
        a = {name: self._read(self._datasets[f"atoms/{name}"], f"atoms/{name}", rows["atoms"]) for name in PER_ATOM}
        f = {name: self._read(self._datasets[f"frames/{name}"], f"frames/{name}", rows["frames"]) for name in PER_FRAME
             if f"frames/{name}" in self._datasets}
        temperatures = f.get("temperature", np.full(stop - start, np.nan))
        bad = np.flatnonzero(~np.isnan(temperatures) & ~(np.isfinite(temperatures) & (temperatures > 0)))
        if bad.size:
            raise DataError(f"frame {start + int(bad[0])} has temperature {temperatures[bad[0]]}; a temperature is a finite "
                            "positive number of kelvin, or NaN for none", file=str(self.path), field="/frames/temperature")
        numbers = a["numbers"].astype(np.int64)
        frames = []
        for j, k in enumerate(range(start, stop)):
            atoms = slice(int(self.offsets[k]) - first, int(self.offsets[k + 1]) - first)
            frames.append(Frame(
                positions=a["positions"][atoms],
                numbers=numbers[atoms],
                cell=f["cell"][j],
                pbc=f["pbc"][j],
                energy=float(f["energy"][j]) if f["has_energy"][j] else None,
                forces=a["forces"][atoms] if f["has_forces"][j] else None,
                config_type=self._name("config_type", f["config_type"][j], k),
                level=self._name("level", f["level"][j], k),
                weight=float(f["weight"][j]),
                equilibrium=bool(f["equilibrium"][j]),
                fixed=a["fixed"][atoms] if f["has_fixed"][j] else None,
                temperature=None if np.isnan(temperatures[j]) else float(temperatures[j]),
                source=self._name("source", f["source"][j], k),
                index=int(f["index"][j]),
            ))
        return frames

    def _name(self, key: str, i, k: int) -> str:
        names, i = self.names[NAMES[key]], int(i)
        if not 0 <= i < len(names):
            raise DataError(f"frame {k} refers to entry {i} of /{NAMES[key]}, which has {len(names)}", file=str(self.path),
                            field=f"/frames/{key}")
        return names[i]

    def close(self) -> None:
        """Close the file now (it reopens on the next access)."""
        if self._pid == os.getpid():
            self._h5.close()
        self._pid = None
