"""Two models on the same frames, frame by frame, with a bootstrap interval on the relative change.

A test set of 25 frames gives one number per model; whether a 5-10%
difference between two models is more than the luck of which frames were
drawn needs the spread. Each model predicts every frame once; the frames are
then resampled with replacement (the same draw for both models, so the
comparison stays paired) and the relative change of the mean error,
B / A - 1, is recomputed per draw. Per frames file, and for all files
together, the result holds both models' force MAE (meV/Å) and energy MAE
(meV/atom), the change, its 95% percentile interval and the share of frames
on which B is better. A negative change means B is better.

``forcefit compare A.pt B.pt frames.xyz [more.xyz ...]`` prints it as a table.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

ALL_FILES = "all files"


def per_frame_errors(potential, frames: list) -> dict[str, np.ndarray]:
    """Per frame: summed |force error| (meV/Å) and its component count, |energy error| per atom (meV/atom)."""
    from .evaluate import predict

    pred = predict(potential, frames)
    return {
        "force_sum": np.array([1e3 * np.abs(np.asarray(p) - np.asarray(f.forces)).sum() for p, f in zip(pred["forces"], frames)]),
        "force_count": np.array([3.0 * f.n_atoms for f in frames]),
        "energy": np.array([1e3 * abs(e - f.energy) / f.n_atoms for e, f in zip(pred["energy"], frames)]),
    }


def paired_change(base: np.ndarray, other: np.ndarray, weight: np.ndarray, resamples: int, rng: np.random.Generator) -> dict:
    """Relative change of sum(error)/sum(weight), other/base - 1 in %, with a paired percentile bootstrap interval.

    Force MAE is summed error over summed component count, as forcefit's
    metrics compute it, so frames of different sizes weigh by their atoms.
    """
    draws = rng.integers(0, len(base), size=(resamples, len(base)))
    changes = 100 * (other[draws].sum(axis=1) / base[draws].sum(axis=1) - 1)
    lo, hi = np.percentile(changes, [2.5, 97.5])
    return {"base": float(base.sum() / weight.sum()), "other": float(other.sum() / weight.sum()),
            "change_pct": float(100 * (other.sum() / base.sum() - 1)), "ci_low_pct": float(lo), "ci_high_pct": float(hi),
            "other_better_frames": float(np.mean(other < base))}


def compare_errors(errors: dict[str, tuple[dict, dict]], resamples: int = 10000, seed: int = 0) -> list[dict]:
    """One row per frames file (and one for all together when there are several) from per-frame errors of A and B."""
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    errors = dict(errors)
    if len(errors) > 1:
        errors[ALL_FILES] = tuple({k: np.concatenate([e[m][k] for e in errors.values()]) for k in ("force_sum", "force_count", "energy")}
                                  for m in (0, 1))
    rng = np.random.default_rng(seed)
    rows = []
    for name, (base, other) in errors.items():
        force = paired_change(base["force_sum"], other["force_sum"], base["force_count"], resamples, rng)
        energy = paired_change(base["energy"], other["energy"], np.ones_like(base["energy"]), resamples, rng)
        rows.append({"frames": name, "n": len(base["energy"]), **{f"F_{k}": v for k, v in force.items()},
                     **{f"E_{k}": v for k, v in energy.items()}})
    return rows


def compare(model_a: str | Path, model_b: str | Path, frame_files: Sequence[str | Path], resamples: int = 10000,
            seed: int = 0, level: str | None = None) -> dict:
    """Compare model B against model A on labelled frames; returns ``{"baseline", "other", "resamples", "rows", "per_frame"}``.

    ``rows``: see ``compare_errors``. ``per_frame``: file -> per-frame force
    MAE (meV/Å) of A and of B, for the plot. Each model is loaded once; every
    frame must have energy and forces and only elements both models know
    (otherwise a DataError names the file, frame and field).
    """
    from .data import read_frames, validate_frames
    from .model_file import load_model

    if not frame_files:
        raise ValueError("give at least one frames file")
    models = [load_model(model_a), load_model(model_b)]
    errors: dict[str, tuple[dict, dict]] = {}
    for path in frame_files:
        frames = read_frames(path, level=level)
        for model in models:
            validate_frames(frames, str(path), species=model.species)
        errors[str(path)] = tuple(per_frame_errors(model, frames) for model in models)
    per_frame = {name: [(e["force_sum"] / e["force_count"]).tolist() for e in pair] for name, pair in errors.items()}
    return {"baseline": str(model_a), "other": str(model_b), "resamples": int(resamples),
            "rows": compare_errors(errors, resamples, seed), "per_frame": per_frame}


_COLUMNS = [("frames", "frames", ""), ("n", "n", "d"),
            ("F_base", "F MAE A", ".2f"), ("F_other", "F MAE B", ".2f"), ("F_change_pct", "ΔF %", "+.1f"),
            ("F_ci_low_pct", "95% low", "+.1f"), ("F_ci_high_pct", "95% high", "+.1f"), ("F_other_better_frames", "frames B better", ".2f"),
            ("E_base", "E MAE A", ".3f"), ("E_other", "E MAE B", ".3f"), ("E_change_pct", "ΔE %", "+.1f"),
            ("E_ci_low_pct", "95% low", "+.1f"), ("E_ci_high_pct", "95% high", "+.1f")]


def comparison_table(result: dict):
    """A rich Table of ``compare``'s rows (MAE in meV/Å and meV/atom; negative Δ: B is better)."""
    from rich.table import Table

    table = Table(title=f"B = {result['other']} against A = {result['baseline']} (paired bootstrap, {result['resamples']} resamples)",
                  caption="MAE in meV/Å and meV/atom; negative Δ means B is better")
    for _, header, fmt in _COLUMNS:
        table.add_column(header, justify="left" if not fmt else "right")
    for row in result["rows"]:
        table.add_row(*[format(row[key], fmt) for key, _, fmt in _COLUMNS])
    return table


def comparison_plot(result: dict, path: str | Path) -> Path:
    """PNG of per-frame force MAE, A on x and B on y, one colour per frames file, with the y = x line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .atomic_file import atomic_path

    fig = Figure(figsize=(5.2, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    values = []
    for k, (name, (a, b)) in enumerate(result["per_frame"].items()):
        ax.scatter(a, b, s=12, alpha=0.7, color=f"C{k % 10}", label=Path(name).name)
        values += list(a) + list(b)
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    ax.plot([lo, hi], [lo, hi], color="k", lw=1, label="y = x")
    ax.set_xlabel(f"A: {Path(result['baseline']).name}, force MAE per frame (meV/Å)")
    ax.set_ylabel(f"B: {Path(result['other']).name}, force MAE per frame (meV/Å)")
    overall = result["rows"][-1]
    ax.set_title(f"ΔF {overall['F_change_pct']:+.1f}% [{overall['F_ci_low_pct']:+.1f}, {overall['F_ci_high_pct']:+.1f}]; below the line B is better",
                 fontsize=9)
    ax.legend(fontsize=8)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    return path
