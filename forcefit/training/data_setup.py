"""Turn the data section of a run config into validated train/valid/test frames and statistics."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import RunConfig
from ..data import DataError, Frame, read_frames, resolve_e0s, split_indices, validate_frames


@dataclass
class RunData:
    train: list[Frame]
    valid: list[Frame]
    test: list[Frame]
    species: list[int]
    e0s: dict[int, float]
    shift: float  # mean per-atom energy after E0s (eV/atom)
    scale: float  # force RMS (eV/Å), or per-atom energy std without forces
    energy_std: float = 1.0  # std of the training structures' energies after E0s (eV): the published DeNS loss unit


def _read_all(paths, cfg) -> list[Frame]:
    frames: list[Frame] = []
    for path in paths:
        frames.extend(read_frames(path, energy_key=cfg.energy_key, forces_key=cfg.forces_key, level=cfg.level))
    return frames


def prepare_data(config: RunConfig) -> RunData:
    d, t = config.data, config.training
    if not d.train:
        raise DataError("no training data given (--train FILE or data.train in the config)", field="train")
    train = _read_all(d.train, d)
    if d.max_train is not None and d.max_train < len(train):
        (keep,) = split_indices(len(train), [d.max_train], seed=config.seed)
        train = [train[k] for k in keep]
    if d.valid:
        valid = _read_all(d.valid, d)
    else:
        if len(train) < 2:
            raise DataError(f"only {len(train)} training frame(s): too few to hold out a validation split", file=d.train[0], field="valid")
        valid_idx, train_idx = split_indices(len(train), [d.valid_fraction, None], seed=config.seed, source=d.train[0])
        valid, train = [train[k] for k in valid_idx], [train[k] for k in train_idx]
    test = _read_all(d.test, d) if d.test else []

    species = sorted({int(z) for f in train for z in f.numbers})
    need_e, need_f = t.energy_weight > 0, t.forces_weight > 0
    validate_frames(train, "train", need_e, need_f, species)
    validate_frames(valid, "valid", need_e, need_f, species)
    if d.test:
        validate_frames(test, "test", False, False, species)

    e0s = resolve_e0s(d.e0s, train, species)
    labelled = [f for f in train if f.energy is not None]
    totals = [f.energy - sum(e0s[int(z)] for z in f.numbers) for f in labelled]  # energy after E0s, eV
    residual = [t / f.n_atoms for t, f in zip(totals, labelled)]
    shift = float(np.mean(residual)) if residual else 0.0
    forces = [f.forces for f in train if f.forces is not None]
    if forces:
        scale = float(np.sqrt(np.mean(np.concatenate(forces) ** 2)))
    else:
        scale = float(np.std(residual)) if len(residual) > 1 else 1.0
    energy_std = float(np.std(totals)) if len(totals) > 1 else 1.0
    return RunData(train, valid, test, species, e0s, shift, max(scale, 1e-6), energy_std if energy_std > 0 else 1.0)
