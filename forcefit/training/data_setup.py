"""Turn the data section of a run config into validated train/valid/test frames and statistics."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from ..config import RunConfig
from ..data import DataError, Frame, read_frames, resolve_e0s, split_indices, validate_frames
from ..data.frame import frame_flags
from ..data.validate import count_duplicates
from ..objectives.base import FrameNeeds


@dataclass
class RunData:
    train: list[Frame]
    valid: list[Frame]
    test: list[Frame]
    species: list[int]
    e0s: dict[str, dict[int, float]]  # level -> {Z: eV}
    shift: dict[str, float]  # level -> mean per-atom energy after E0s (eV/atom)
    scale: float  # force RMS (eV/Å), or per-atom energy std without forces
    energy_std: float = 1.0  # std of the training structures' energies after E0s (eV): the published DeNS loss unit
    levels: list[str] = field(default_factory=lambda: ["default"])
    default_level: str = "default"
    multi_level: bool = False  # frames map to heads by their level (else every frame trains the one head)


def _read_all(paths, config: RunConfig) -> list[Frame]:
    """Frames of every file; a multi-level run reads each of its levels from a campaign (unless data.level picks one)."""
    d = config.data
    key = config.levels.key if config.levels else "level"
    frames: list[Frame] = []
    for path in paths:
        for level in _levels_to_read(path, config):
            frames.extend(read_frames(path, energy_key=d.energy_key, forces_key=d.forces_key, level=level, level_key=key))
    return frames


def _levels_to_read(path, config: RunConfig) -> list:
    """[data.level], or for a multi-level run reading a campaign without data.level, every head the campaign has."""
    if config.levels is None or config.data.level is not None or not str(path).endswith(".db"):
        return [config.data.level]
    from ase.db import connect

    from ..data.campaign import campaign_levels
    from ..data.campaign_schema import is_campaign

    try:
        db = connect(str(path))
        if not is_campaign(db.metadata):
            return [None]
        present = campaign_levels(db)
    except Exception:  # the reader reports an unreadable file with its name
        return [None]
    levels = [lv for lv in config.levels.heads if lv in present]
    if not levels:
        raise DataError(f"the campaign has none of the levels {config.levels.heads} (it has {', '.join(sorted(present)) or 'none'})",
                        file=str(path), field="level")
    return levels


def source_factors(sources, weights: dict[str, float]) -> dict[str, float]:
    """Source file -> the factor of the first pattern its file name matches (else 1); a pattern no source
    matches is an error (a typo would silently weigh nothing)."""
    from fnmatch import fnmatch
    from pathlib import Path

    sources = list(sources)
    unused = [p for p in weights if not any(fnmatch(Path(s).name, p) for s in sources)]
    if unused:
        raise DataError(f"data.source_weights: no training file matches {', '.join(unused)}", field="source_weights")
    return {s: next((w for p, w in weights.items() if fnmatch(Path(s).name, p)), 1.0) for s in sources}


def apply_source_weights(frames: list[Frame], weights: dict[str, float]) -> list[Frame]:
    """Each frame's weight times its source file's factor (``source_factors``)."""
    return SourceWeighted(frames, source_factors(dict.fromkeys(f.source for f in frames), weights))[:]


class SourceWeighted(Sequence):
    """A lazy sequence of frames (a packed pool) whose weights get their source's factor as each frame is read."""

    def __init__(self, frames: Sequence[Frame], factors: dict[str, float]):
        self.frames, self.factors = frames, factors

    def __len__(self) -> int:
        return len(self.frames)

    def _weighted(self, frame: Frame) -> Frame:
        from dataclasses import replace

        factor = self.factors.get(frame.source, 1.0)
        return frame if factor == 1.0 else replace(frame, weight=frame.weight * factor)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self._weighted(f) for f in self.frames[k]]
        return self._weighted(self.frames[k])

    def flags(self) -> dict[str, np.ndarray]:
        return frame_flags(self.frames)


class FrameSubset(Sequence):
    """Frames ``indices`` of a lazy sequence (a packed pool), read when asked for."""

    def __init__(self, frames: Sequence[Frame], indices):
        self.frames, self.indices = frames, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self.frames[i] for i in self.indices[k]]
        return self.frames[self.indices[k]]

    def flags(self) -> dict[str, np.ndarray]:
        return {name: values[self.indices] for name, values in frame_flags(self.frames).items()}


def _check_held_out(valid, test, species, needs: FrameNeeds, **checks) -> None:
    """Validation frames need the labels the objectives need; test frames only elements the model knows."""
    validate_frames(valid, "valid", needs.energy, needs.forces, species, need_any_label=needs.any_label, **checks)
    if test:
        validate_frames(test, "test", False, False, species, **checks)


def prepare_streamed(config: RunConfig, needs: FrameNeeds) -> RunData:
    """A packed pool as training data, never loaded whole: statistics from the pool file, a held-out
    validation share read once (or data.valid)."""
    from ..data.packed import PackedFrames

    d, t = config.data, config.training
    if len(d.train) != 1 or not str(d.train[0]).endswith((".h5", ".hdf5")):
        raise DataError("data.stream needs exactly one packed pool (.h5, from forcefit pack) as training data", field="train")
    if d.max_train or config.levels:
        raise DataError("data.stream does not combine with max_train or levels yet", field="stream")
    pool = PackedFrames(d.train[0])
    stats = pool.stats
    if d.source_weights:  # the pool's sources are the files it was packed from
        pool = SourceWeighted(pool, source_factors(pool.sources, d.source_weights))
    if d.valid:
        train, valid = pool, _read_all(d.valid, config)
    else:
        valid_idx, train_idx = split_indices(len(pool), [d.valid_fraction, None], seed=config.seed, source=str(d.train[0]))
        train, valid = FrameSubset(pool, train_idx), [pool[int(k)] for k in valid_idx]
    test = _read_all(d.test, config) if d.test else []
    species = [int(z) for z in stats["elements"]]
    _check_held_out(valid, test, species, needs)
    levels = list(stats["levels"])
    if d.e0s == "least_squares":
        fitted = stats["e0s"]
        if len(levels) == 1 and levels[0] in fitted:
            e0s = {int(z): float(v) for z, v in fitted[levels[0]].items()}
        else:
            if t.energy_weight > 0 and any(stats["levels"][lv]["with_energy"] for lv in levels):
                raise DataError(f"the pool mixes levels ({', '.join(levels)}) whose energies have different zeros; train "
                                "forces only (training.energy_weight: 0), as force-centric pretraining does", field="e0s")
            e0s = {z: 0.0 for z in species}
    else:
        e0s = resolve_e0s(d.e0s, [], species)
    level = levels[0] if len(levels) == 1 else "default"
    rank_zero_info(f"streaming {len(train)} training frames from {d.train[0]} ({len(levels)} level(s), "
                   f"{len(species)} elements); {len(valid)} validate")
    return RunData(train, valid, test, species, {level: e0s}, {level: 0.0}, float(stats.get("force_rms") or 1.0), 1.0,
                   [level], level, False)


def prepare_data(config: RunConfig, needs: FrameNeeds | None = None) -> RunData:
    """Read, split and check the frames against what the run's objectives ``needs``; E0s, shift and scale per level."""
    d, t = config.data, config.training
    needs = needs or FrameNeeds(energy=t.energy_weight > 0, forces=t.forces_weight > 0)
    if d.stream:
        return prepare_streamed(config, needs)
    if not d.train:
        raise DataError("no training data given (--train FILE or data.train in the config)", field="train")
    train = _read_all(d.train, config)
    if d.source_weights:
        train = apply_source_weights(train, d.source_weights)
    if d.max_train is not None and d.max_train < len(train):
        (keep,) = split_indices(len(train), [d.max_train], seed=config.seed)
        train = [train[k] for k in keep]
    if d.valid:
        valid = _read_all(d.valid, config)
    else:
        if len(train) < 2:
            raise DataError(f"only {len(train)} training frame(s): too few to hold out a validation split", file=d.train[0], field="valid")
        valid_idx, train_idx = split_indices(len(train), [d.valid_fraction, None], seed=config.seed, source=d.train[0])
        valid, train = [train[k] for k in valid_idx], [train[k] for k in train_idx]
    test = _read_all(d.test, config) if d.test else []

    if config.levels:
        levels, default_level, multi = list(config.levels.heads), config.levels.predict, True
    else:
        names = {f.level for f in train}
        levels = [names.pop() if len(names) == 1 else "default"]
        default_level, multi = levels[0], False
    species = sorted({int(z) for f in train for z in f.numbers})
    checks = dict(levels=levels if multi else None, level_key=config.levels.key if multi else "level")
    validate_frames(train, "train", needs.energy, needs.forces, species, need_any_label=needs.any_label, **checks)
    _check_held_out(valid, test, species, needs, **checks)
    duplicates = count_duplicates(train)
    if duplicates:
        rank_zero_warn(f"{duplicates} training frame(s) repeat an earlier frame (same level, elements and positions); "
                       "they are trained as often as they appear")

    e0s, shift, totals, per_atom = {}, {}, [], []
    for level in levels:
        frames = [f for f in train if f.level == level] if multi else train
        if not frames:
            raise DataError(f"no training frame has level '{level}', so its head has nothing to learn from", field="levels.heads")
        spec = config.levels.e0s.get(level, d.e0s) if multi else d.e0s
        if spec == "least_squares" and all(f.energy is None for f in frames):
            spec = "zero"  # nothing to fit (unlabelled frames, forces only): a fine-tuning run refits them
            rank_zero_info(f"no training frame{'' if not multi else f' of level {level}'} has an energy: E0s set to zero")
        e0s[level] = resolve_e0s(spec, frames, species)
        labelled = [f for f in frames if f.energy is not None]
        level_totals = [f.energy - sum(e0s[level][int(z)] for z in f.numbers) for f in labelled]  # energy after E0s, eV
        residual = [r / f.n_atoms for r, f in zip(level_totals, labelled)]
        shift[level] = float(np.mean(residual)) if residual else 0.0
        # one std over all levels: of each level's energies about its own mean when there are several
        totals += [r - shift[level] * f.n_atoms for r, f in zip(level_totals, labelled)] if multi else level_totals
        per_atom += [r - shift[level] for r in residual] if multi else residual
    forces = [f.forces for f in train if f.forces is not None]
    if forces:
        scale = float(np.sqrt(np.mean(np.concatenate(forces) ** 2)))
    else:
        scale = float(np.std(per_atom)) if len(per_atom) > 1 else 1.0
    energy_std = float(np.std(totals)) if len(totals) > 1 else 1.0
    return RunData(train, valid, test, species, e0s, shift, max(scale, 1e-6), energy_std if energy_std > 0 else 1.0,
                   levels, default_level, multi)
