"""forcefit: equivariant force fields from few expensive labels.

Python API (the command line does the same)::

    import forcefit
    result = forcefit.train(data={"train": "frames.xyz"}, training={"max_epochs": 50}, out="runs/x")
    ff = forcefit.load("runs/x/model.pt")
    atoms.calc = ff.calculator
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._version import __version__


@dataclass
class LoadedModel:
    """A trained model: the torch Potential, an ASE calculator using it, and the file's metadata."""

    model: Any
    calculator: Any
    metadata: dict


def train(config: Any = None, *, resume: bool = False, **sections):
    """Train from a RunConfig, a dict, or a YAML path; keyword sections (data=, model=, training=,
    objective=, finetune=, levels=, seed=, out=) override it. Returns a TrainResult (out, model_path, metrics).

    Fine-tune a model file: ``forcefit.train(data={"train": "dft50.xyz"}, finetune={"init": "pre/model.pt"})``.
    """
    from .config import RunConfig, build_config, load_yaml
    from .training.run import train as _train

    if isinstance(config, RunConfig):
        base = config.model_dump()
    elif isinstance(config, (str, Path)):
        base = load_yaml(config)
    else:
        base = dict(config or {})
    return _train(build_config(base, _paths_to_str(sections), source="forcefit.train"), resume=resume)


def _paths_to_str(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _paths_to_str(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_paths_to_str(v) for v in value]
    return value


def load(path: str | Path, device: str = "cpu", dtype: Any = None, compile: bool = False, level: str | None = None) -> LoadedModel:
    """Load a model file: ``.model`` (torch), ``.calculator`` (ASE), ``.metadata``.

    ``level``: for a model trained on several levels of theory, the one its
    calculator predicts (default: the level the file names as its default).
    The calculator runs in the dtype the model was trained in unless ``dtype``
    (e.g. ``torch.float64`` for tight energy conservation) says otherwise;
    ``compile=True`` trades a one-off compilation for faster MD. A Δ model (a file with a
    baseline, ``forcefit.baseline``) predicts network + baseline, here and in ``evaluate``.
    """
    from .model_file import load_model
    from .simulate.calculator import ForcefitCalculator

    potential = load_model(path, device=device)
    dtype = dtype or next(potential.parameters()).dtype
    calculator = ForcefitCalculator(potential, device=device, dtype=dtype, compile=compile, level=level)
    return LoadedModel(potential, calculator, potential.metadata)
