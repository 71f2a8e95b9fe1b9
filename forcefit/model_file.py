"""The trained-model file: one file with version, species, cutoff, units, levels, E0s, config and weights.

A Δ model also names its baseline, the cheap method its predictions are
added to (``forcefit.baseline``); ``load_model`` keeps it in
``potential.metadata["baseline"]``, where the calculator and ``evaluate`` find it.

Loads on CPU whatever device trained it. Training-only parts (auxiliary heads
such as the DeNS noise head, which live outside the backbone) are dropped at
export, so inference never pays for them. Never imports training code.
"""
from __future__ import annotations

from pathlib import Path

import torch

from . import pretrained
from ._version import __version__
from .atomic_file import atomic_torch_save
from .baseline import Baseline
from .models.base import resolved_options
from .models.build import build_potential
from .models.potential import Potential

FORMAT = "forcefit-model"
# 2: equivariant-ace files name their edge_l_max (its default changed from l_max to 3).
# 3: files record every backbone option, defaults resolved (an older forcefit may not know newer options).
# 4: levels of theory (one energy head, E0 set and shift each) and the level predicted by default.
# 5: an optional baseline (Δ-learning). Only files with one are written as 5, so an older forcefit
#    refuses them (rather than predicting the correction alone) and still reads all others.
FORMAT_VERSION = 5
_FORMAT_WITHOUT_BASELINE = 4
UNITS = {"energy": "eV", "length": "Å", "forces": "eV/Å"}
INFERENCE_HEADS = ("forces",)  # vector heads kept in exported models


class ModelFileError(ValueError):
    """A model file that cannot be loaded, with the reason."""


def save_model(potential: Potential, architecture: dict, path: str | Path, config: dict | None = None,
               baseline: "str | dict | Baseline | None" = None) -> None:
    """Write ``potential`` (weights + architecture, without auxiliary heads) atomically to ``path``.

    ``baseline`` (e.g. ``"gfn2"``): the network was trained on labels minus this cheap method,
    which inference adds back (``forcefit.baseline``).
    """
    arch = {k: v for k, v in architecture.items() if k != "aux_heads"}
    arch["vector_heads"] = tuple(h for h in architecture.get("vector_heads", ()) if h in INFERENCE_HEADS)
    arch["levels"], arch["default_level"] = list(potential.levels), potential.default_level
    arch["e0s"] = {lv: {z: float(potential.e0[t, k]) for k, z in enumerate(potential.species)} for t, lv in enumerate(potential.levels)}
    arch["shift"] = {lv: float(potential.shift[t]) for t, lv in enumerate(potential.levels)}
    arch["scale"] = float(potential.scale)
    arch["options"] = resolved_options(potential.backbone, arch.get("options", {}))  # a later default change cannot alter this model
    state = inference_state_dict(potential, arch)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION if baseline is not None else _FORMAT_WITHOUT_BASELINE,
        "forcefit_version": __version__,
        "species": list(potential.species),
        "levels": list(potential.levels),
        "default_level": potential.default_level,
        "cutoff": float(potential.cutoff),
        "units": UNITS,
        "dtype": str(next(potential.parameters()).dtype).replace("torch.", ""),
        "architecture": arch,
        "config": config or {},
        "state_dict": state,
    }
    if baseline is not None:
        payload["baseline"] = Baseline.of(baseline).entry()
    atomic_torch_save(payload, path)


def inference_state_dict(potential: Potential, inference_architecture: dict) -> dict[str, torch.Tensor]:
    """Weights of ``potential`` for the same model rebuilt without auxiliary heads.

    The result is loaded strictly into the inference model, so a mismatch fails here, at export.
    """
    target = build_potential(inference_architecture).to(next(potential.parameters()).dtype)
    trained = {k: v.detach().cpu() for k, v in potential.state_dict().items()}
    state = {k: trained[k] for k in target.state_dict() if k in trained}
    target.load_state_dict(state, strict=True)
    return state


def load_model(path: str | Path, device: str = "cpu") -> Potential:
    """Load a model file into an eval-mode Potential (on CPU unless ``device`` says otherwise).

    ``potential.levels`` lists its levels of theory; it predicts ``potential.default_level``
    unless a batch names another (``forcefit.load(..., level=...)`` for the calculator).
    """
    payload = read_model_file(path)
    try:
        potential = build_potential(payload["architecture"])
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: cannot rebuild the model this file describes ({exc})") from exc
    dtype = getattr(torch, payload.get("dtype", "float32"))
    potential = potential.to(dtype)
    missing, unexpected = potential.load_state_dict(payload["state_dict"], strict=False)
    if missing or unexpected:
        raise ModelFileError(f"{path}: weights do not match the architecture (missing {missing[:5]}, unexpected {unexpected[:5]})")
    potential.metadata = {k: v for k, v in payload.items() if k != "state_dict"}
    return potential.to(device).eval()


def read_model_file(path: str | Path) -> dict:
    """Read and check the file's format and version; say clearly why a file cannot be used.

    ``path`` may also name a model shipped with forcefit (``forcefit.pretrained``, e.g. ``organic-gfn2``).
    """
    try:
        path = pretrained.resolve(path)
    except FileNotFoundError as exc:  # a shipped name whose file this installation lacks
        raise ModelFileError(str(exc)) from None
    if not path.exists():
        shipped = ", ".join(pretrained.SHIPPED)
        raise ModelFileError(f"{path}: no such model file (nor the name of a model shipped with forcefit: {shipped})")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ModelFileError(f"{path}: not a readable model file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        hint = " (this looks like a training checkpoint; use the exported model.pt)" if isinstance(payload, dict) and "state_dict" in payload and "pytorch-lightning_version" in payload else ""
        raise ModelFileError(f"{path}: not a forcefit model file{hint}")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model file format {version} was written by forcefit {payload.get('forcefit_version')}; "
            f"this forcefit ({__version__}) reads formats up to {FORMAT_VERSION}: upgrade forcefit"
        )
    if "baseline" in payload:
        try:
            payload["baseline"] = Baseline.of(payload["baseline"]).entry()
        except ValueError as exc:
            raise ModelFileError(f"{path}: bad baseline entry {payload['baseline']!r} ({exc})") from None
    try:
        return _upgrade(payload)
    except ModelFileError as exc:
        raise ModelFileError(f"{path}: {exc}") from None


def _upgrade(payload: dict) -> dict:
    """Bring older formats up to the current one.

    1 → 2: equivariant-ace's edge harmonics went up to l_max before ``edge_l_max`` existed.
    2 → 3: nothing to change; options a format-2 file leaves out take today's defaults,
    which are the ones it was written with.
    3 → 4: one level ("default"): E0s and shift become per-level; the ``head_layer`` option
    of equivariant-ace (a head read through an extra layer) left the backbone with the heads.
    4 → 5: nothing to change; a file without a baseline has none.
    """
    if payload["format_version"] < 2 and payload.get("architecture", {}).get("name") == "equivariant-ace":
        arch = payload["architecture"]
        options = dict(arch.get("options", {}))
        options.setdefault("edge_l_max", options.get("l_max", 2))
        payload["architecture"] = dict(arch, options=options)
        payload["format_version"] = 2
    if payload["format_version"] < 4:
        arch = dict(payload["architecture"])
        options = dict(arch.get("options", {}))
        if options.pop("head_layer", False) and arch.get("vector_heads"):
            raise ModelFileError("this model file reads its direct-force head through equivariant-ace's head_layer, "
                                 "which this forcefit no longer has: retrain it")
        arch["options"] = options
        state = dict(payload["state_dict"])
        if state["e0"].dim() == 1:  # one level, stored flat
            arch["levels"], arch["default_level"] = ["default"], "default"
            arch["e0s"] = {"default": {int(k): float(v) for k, v in arch.get("e0s", {}).items()}}
            arch["shift"] = {"default": float(arch.get("shift", 0.0))}
            state["e0"], state["shift"] = state["e0"].reshape(1, -1), state["shift"].reshape(1)
            payload.update(levels=["default"], default_level="default")
        payload.update(architecture=arch, state_dict=state)
    payload["format_version"] = FORMAT_VERSION
    return payload
