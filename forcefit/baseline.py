"""Δ-learning: a cheap method (the baseline) that a model file carries, so predictions are baseline + learned correction.

Train on ``subtract_baseline(frames, "gfn2")`` (accurate − cheap labels)
with the ordinary ``train()``, then ``attach_baseline(model.pt, "gfn2")``:
the ASE calculator, ``evaluate``, ``forcefit eval``, ``md`` and ``compare``
add the baseline's energy and forces to the network's, so a Δ model is used
like any other. The baseline is computed exactly as the labelling engine
computes labels (``forcefit.labeling``: one fresh SCF per structure, the
single retry with safer settings), so the baseline subtracted in training
and the one added at inference are the same function of the geometry.

The baseline's charge and multiplicity come from its own settings (e.g.
``{"method": "gfn2", "charge": 1}``), never from the structure: frames carry
no charges, and the correction is only valid for the state it was trained on.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from .data.errors import DataError
from .data.frame import Frame
from .extras import require
from .labeling.calculators import make_method
from .labeling.method import Method, Structure
from .labeling.tasks import Task, run_task
from .labeling.xtb import XTB_NAMES

_CHOICES = f"{', '.join(XTB_NAMES)} or an import path module:factory"


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A cheap method by name ("gfn2", "gfn1", "ipea1" or an ASE calculator factory "module:factory") and its settings.

    ``settings`` are those of the labelling method (``forcefit.labeling.make_method``),
    e.g. ``charge`` or ``accuracy`` for xTB; an import path takes none.
    """

    method: str
    settings: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, entry: "str | dict | Baseline") -> "Baseline":
        """A Baseline from a name, a model-file entry ``{"method": ..., **settings}`` or a Baseline; DataError for a bad name."""
        if isinstance(entry, Baseline):
            return entry
        if isinstance(entry, dict):
            settings = dict(entry)
            name = settings.pop("method", None)
        else:
            name, settings = entry, {}
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"a baseline needs a method name ({_CHOICES}), got {name!r}", field="baseline")
        name = name.strip()
        if ":" not in name:
            if name.lower() not in XTB_NAMES:
                raise DataError(f"unknown baseline method '{name}'; choose {_CHOICES}", field="baseline")
            name = name.lower()
        return cls(name, settings)

    def entry(self) -> dict:
        """What a model file stores: ``{"method": ..., **settings}`` (plain values)."""
        return {"method": self.method, **self.settings}

    @cached_property
    def reference(self) -> Method:
        """The labelling method that computes it, checked once (missing tblite, bad import path or setting: a clear error)."""
        if self.method in XTB_NAMES:
            require("tblite.interface", f"the {XTB_NAMES[self.method]} baseline")
        return make_method(self.method, **self.settings)

    def check(self) -> None:
        """Build and check the method now rather than at the first structure."""
        _ = self.reference

    def compute(self, numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray | None = None, pbc: np.ndarray | None = None,
                file: str | None = None, frame: int | None = None) -> tuple[float, np.ndarray]:
        """(energy eV, forces eV/Å) of one structure; a failure after the safer retry is a DataError naming ``file`` and ``frame``."""
        structure = Structure(
            numbers=np.asarray(numbers, dtype=np.int64), positions=np.asarray(positions, dtype=np.float64),
            cell=np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64),
            pbc=np.zeros(3, dtype=bool) if pbc is None else np.asarray(pbc, dtype=bool),
        )
        with _one_openmp_thread() if self.method in XTB_NAMES else nullcontext():
            outcome = run_task(self.reference, Task(0, structure))
            if outcome.label is None and outcome.retryable:
                outcome = run_task(self.reference, Task(0, structure, attempt=2, safer=True))
        if outcome.label is None:
            raise DataError(f"the baseline {self.reference.describe()} failed: {outcome.error}", file=file, frame=frame, field="baseline")
        return float(outcome.label["energy"]), np.asarray(outcome.label["forces"], dtype=np.float64)


@contextmanager
def _one_openmp_thread():
    """xTB runs on one OpenMP thread (``forcefit.labeling.threads``), and tblite and torch share one
    OpenMP runtime: the network (or a training run started later) gets its thread count back after.
    Other baselines (any ASE calculator, maybe a torch model) run with the caller's threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def baseline_labels(frames: Sequence[Frame], method: "str | dict | Baseline") -> list[tuple[float, np.ndarray]]:
    """The baseline's (energy eV, forces eV/Å) on each frame, in order."""
    baseline = Baseline.of(method)
    return [baseline.compute(f.numbers, f.positions, f.cell, f.pbc, file=f.source, frame=f.index) for f in frames]


def subtract_baseline(frames: Sequence[Frame], method: "str | dict | Baseline") -> list[Frame]:
    """New frames whose energy and forces are label − baseline (each only where the frame has it); all else unchanged."""
    out = []
    for f, (energy, forces) in zip(frames, baseline_labels(frames, method)):
        out.append(dataclasses.replace(
            f,
            energy=None if f.energy is None else f.energy - energy,
            forces=None if f.forces is None else np.asarray(f.forces, dtype=np.float64) - forces,
        ))
    return out


def baseline_of(potential) -> Baseline | None:
    """The baseline a loaded model file carries (``potential.metadata["baseline"]``), or None."""
    entry = (getattr(potential, "metadata", None) or {}).get("baseline")
    return None if entry is None else Baseline.of(entry)


def attach_baseline(model_path: str | Path, method: "str | dict | Baseline", out_path: str | Path | None = None) -> Path:
    """Write the model file ``model_path`` with a baseline entry to ``out_path`` (default: in place), atomically.

    The network must have been trained on labels with exactly this baseline
    subtracted (``subtract_baseline``). Attaching the baseline the file already
    carries is a no-op rewrite (a rerun pipeline step); another one is refused.
    Returns the path written.
    """
    from .atomic_file import atomic_torch_save
    from .model_file import FORMAT_VERSION, ModelFileError, read_model_file

    baseline = Baseline.of(method)
    baseline.check()  # the package, import path and settings work here, before a file promises them
    payload = read_model_file(model_path)
    if payload.get("baseline") not in (None, baseline.entry()):
        raise ModelFileError(f"{model_path}: already carries the baseline {payload['baseline']}; "
                             f"a Δ model of a Δ model is not supported (attach to the plain model file)")
    payload.update(baseline=baseline.entry(), format_version=FORMAT_VERSION)
    out = Path(out_path if out_path is not None else model_path)
    atomic_torch_save(payload, out)
    return out
