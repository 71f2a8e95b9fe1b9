"""ASTEROID's bias estimate and weights (METHODS.md section 3, steps 2-3).

For every cheap frame i, b_i = mean over atoms and components of
|F_θ0(x_i) − F_cheap(x_i)|, with θ0 the model trained on the accurate frames
alone (eV/Å), and w_i = exp(−b_i/γ): frames where the cheap method disagrees
with what the accurate data taught θ0 count less in pretraining.

Forcefit's weighted losses divide by Σw (a weighted mean), where the method's
loss divides by the number of frames: the two differ by the constant Σw/N,
which Adam's updates do not see.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..atomic_file import atomic_path, write_text_atomic
from ..data import Frame


def frame_bias(frames: list[Frame], predicted_forces: list) -> np.ndarray:
    """b_i (eV/Å) of each frame: mean |F_θ0 − F_label| over its atoms and components, from θ0's predicted forces."""
    missing = [f for f in frames if f.forces is None]
    if missing:
        from ..data import DataError

        raise DataError("a cheap frame needs forces to estimate its bias", missing[0].source, missing[0].index, "forces")
    return np.array([float(np.abs(np.asarray(p) - f.forces).mean()) for p, f in zip(predicted_forces, frames)])


def bias_weights(bias: np.ndarray, gamma: float) -> np.ndarray:
    """w_i = exp(−b_i/γ) (b and γ in eV/Å), divided by the largest weight, exp(−min b/γ).

    The losses are weighted means (Σ w·error / Σ w), so a common factor cancels exactly; dividing it
    out keeps a small γ or a large bias from underflowing every weight to zero."""
    if gamma <= 0:
        raise ValueError(f"gamma must be positive, got {gamma}")
    bias = np.asarray(bias, dtype=np.float64)
    return np.exp(-(bias - bias.min()) / gamma)


def weighted_frames(frames: list[Frame], weights: np.ndarray, energies: np.ndarray | None = None,
                    drop_energy: bool = False) -> list[Frame]:
    """The frames with ``weight`` = w_i (times any weight they had), and optionally replaced or dropped energies."""
    out = []
    for k, f in enumerate(frames):
        energy = None if drop_energy else (float(energies[k]) if energies is not None else f.energy)
        out.append(replace(f, weight=f.weight * float(weights[k]), energy=energy))
    return out


def write_bias_report(bias: np.ndarray, weights: np.ndarray, gamma: float, folder: Path) -> dict:
    """bias.json (summary and per-frame values) and bias.png (histograms of b_i and w_i)."""
    folder.mkdir(parents=True, exist_ok=True)
    summary = {"gamma_eV_per_A": gamma, "frames": int(len(bias)),
               "bias_mean_eV_per_A": float(np.mean(bias)), "bias_median_eV_per_A": float(np.median(bias)),
               "bias_min_eV_per_A": float(np.min(bias)), "bias_max_eV_per_A": float(np.max(bias)),
               "weight_mean": float(np.mean(weights)), "weight_min": float(np.min(weights)),
               "weight_max": float(np.max(weights)),
               "effective_frames": float(weights.sum() ** 2 / max((weights**2).sum(), 1e-300))}
    write_text_atomic(folder / "bias.json", json.dumps({**summary, "bias": bias.tolist(), "weights": weights.tolist()}))
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.hist(1000 * bias, bins=40, color="C0")
    left.set_xlabel("bias b_i: force MAE of θ0 against the cheap label (meV/Å)")
    left.set_ylabel("cheap frames")
    right.hist(weights, bins=40, color="C1")
    right.set_xlabel(f"weight w_i = exp(−b_i/γ), γ = {gamma:g} eV/Å")
    right.set_title(f"effective frames {summary['effective_frames']:.0f} of {len(bias)}", fontsize=9)
    with atomic_path(folder / "bias.png") as tmp:
        fig.savefig(tmp, dpi=110)
    return summary
