"""Evaluation: predictions on frames, error metrics (overall and per config_type), a table and parity plots.

Units: the code works in eV and eV/Å; metrics are reported in meV, meV/atom
and meV/Å because that is how the field quotes them. Frames lacking a label
are skipped for the metrics of that label only, and the counts say how many
were used, so an energy MAE over 3 frames is never mistaken for one over 3000.
A Δ model's predictions include its baseline (``forcefit.baseline``).
"""
from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from .baseline import baseline_labels, baseline_of
from .data.batch import batch_from_frames
from .data.frame import Frame
from .data.validate import unknown_elements
from .metrics import error_sums, summarise

METRIC_KEYS = (
    "n_frames", "n_energy", "n_forces",
    "energy_mae", "energy_mae_per_atom", "energy_rmse", "energy_rmse_per_atom",
    "forces_mae", "forces_rmse",
)


@contextmanager
def _inference(potential: torch.nn.Module, device: str | torch.device):
    """Eval mode on ``device`` for the duration, then the caller's mode and device back.

    Eval mode matters: in training mode the Potential keeps the force graph
    (create_graph) and any dropout-like layer would make predictions noisy.
    """
    was_training = potential.training
    params = list(potential.parameters()) + list(potential.buffers())
    home = params[0].device if params else torch.device("cpu")
    potential.to(device).eval()
    try:
        yield potential
    finally:
        potential.to(home).train(was_training)


def _check_species(potential, frames: Sequence[Frame]) -> None:
    present = set()
    for f in frames:
        present.update(int(z) for z in np.unique(f.numbers))
    unknown = unknown_elements(present, potential.species)
    if unknown:
        raise ValueError(f"frames contain {unknown}")


def predict(potential, frames: Sequence[Frame], batch_size: int = 32, device: str = "cpu", dtype: torch.dtype | None = None,
            level: str | None = None) -> dict:
    """Predicted energy (eV) per frame and forces (eV/Å) per atom.

    Returns ``{"energy": (F,) array, "forces": list of (n_i, 3) arrays,
    "n_atoms": (F,) array}`` in the order of ``frames``. ``dtype`` defaults
    to the potential's parameter dtype. Frames are batched only for speed:
    each graph is independent, so results do not depend on ``batch_size``
    beyond floating-point summation order. ``level``: which level of theory a
    multi-level model predicts (default: the model's default level). A Δ model
    (a model file with a baseline) predicts network + baseline, as in MD.
    """
    frames = list(frames)
    _check_species(potential, frames)
    level_index = potential.level_index(level) if hasattr(potential, "level_index") else None
    if dtype is None:
        dtype = next(iter(potential.parameters())).dtype
    energies: list[np.ndarray] = []
    forces: list[np.ndarray] = []
    with _inference(potential, device) as model:
        for start in range(0, len(frames), batch_size):
            chunk = frames[start:start + batch_size]
            batch = batch_from_frames(chunk, model.cutoff, dtype)
            batch = {k: v.to(device) for k, v in batch.items()}
            if level_index is not None:
                batch["level"] = torch.full_like(batch["level"], level_index)
            out = model(batch, compute_forces=True)
            energies.append(out["energy"].detach().to("cpu", torch.float64).numpy())
            f = out["forces"].detach().to("cpu", torch.float64).numpy()
            bounds = batch["ptr"].cpu().numpy()
            forces.extend(f[bounds[k]:bounds[k + 1]].copy() for k in range(len(chunk)))
    energy = np.concatenate(energies) if energies else np.zeros(0)
    baseline = baseline_of(potential)
    if baseline is not None:
        for k, (base_energy, base_forces) in enumerate(baseline_labels(frames, baseline)):
            energy[k] += base_energy
            forces[k] += base_forces
    return {
        "energy": energy,
        "forces": forces,
        "n_atoms": np.array([f.n_atoms for f in frames], dtype=np.int64),
    }


def _metrics(frames: Sequence[Frame], predictions: dict, indices: Sequence[int]) -> dict:
    """Error statistics over the frames at ``indices`` (None where no frame has the label); definitions in ``forcefit.metrics``."""
    e_err, n_at, f_err = [], [], []
    for k in indices:
        frame = frames[k]
        if frame.energy is not None:
            e_err.append(predictions["energy"][k] - frame.energy)
            n_at.append(frame.n_atoms)
        if frame.forces is not None:
            f_err.append((np.asarray(predictions["forces"][k]) - np.asarray(frame.forces)).ravel())
    sums = error_sums(e_err, n_at, np.concatenate(f_err) if f_err else [], len(f_err))
    return {"n_frames": len(indices), **summarise(sums)}


def compute_metrics(frames: Sequence[Frame], predictions: dict) -> dict:
    """Energy/force errors overall and per ``config_type`` (meV, meV/atom, meV/Å).

    Keys: those of ``METRIC_KEYS`` (``n_energy``/``n_forces`` count frames with
    that label) plus ``by_config_type``: config_type → the same keys. Force
    errors are means over all Cartesian components of all labelled atoms.
    """
    frames = list(frames)
    if len(predictions["energy"]) != len(frames):
        raise ValueError(f"{len(predictions['energy'])} predictions for {len(frames)} frames")
    metrics = _metrics(frames, predictions, range(len(frames)))
    groups: dict[str, list[int]] = {}
    for k, frame in enumerate(frames):
        groups.setdefault(frame.config_type, []).append(k)
    metrics["by_config_type"] = {name: _metrics(frames, predictions, idx) for name, idx in sorted(groups.items())}
    return metrics


def metrics_table(metrics: dict, title: str = "Errors"):
    """A rich Table: one overall row, then one row per config_type."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("config_type")
    for header in ("frames", "E MAE\nmeV", "E MAE\nmeV/atom", "E RMSE\nmeV", "F MAE\nmeV/Å", "F RMSE\nmeV/Å"):
        table.add_column(header, justify="right")

    def cells(m: dict) -> list[str]:
        def fmt(x):
            return "—" if x is None else f"{x:.2f}"

        frames = str(m["n_frames"])
        if m["n_energy"] != m["n_frames"] or m["n_forces"] != m["n_frames"]:
            frames += f" (E {m['n_energy']}, F {m['n_forces']})"
        return [frames] + [fmt(m[k]) for k in ("energy_mae", "energy_mae_per_atom", "energy_rmse", "forces_mae", "forces_rmse")]

    table.add_row("all", *cells(metrics), style="bold", end_section=bool(metrics.get("by_config_type")))
    for name, m in metrics.get("by_config_type", {}).items():
        table.add_row(name, *cells(m))
    return table


def parity_plot(frames: Sequence[Frame], predictions: dict, path: str | Path, max_force_points: int = 200_000, seed: int = 0) -> Path:
    """PNG with energy-per-atom and force-component parity panels, coloured by config_type.

    Uses matplotlib's object API (Figure + Agg canvas), so no pyplot state or
    display is touched. Force points beyond ``max_force_points`` are subsampled
    for drawing only; the MAE in the titles uses every point.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    frames = list(frames)
    metrics = compute_metrics(frames, predictions)
    groups = sorted({f.config_type for f in frames})
    fig = Figure(figsize=(10, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax_e, ax_f = fig.subplots(1, 2)
    colours = {name: f"C{k % 10}" for k, name in enumerate(groups)}
    rng = np.random.default_rng(seed)
    total_components = sum(3 * f.n_atoms for f in frames if f.forces is not None)
    keep = min(1.0, max_force_points / max(total_components, 1))
    for name in groups:
        idx = [k for k, f in enumerate(frames) if f.config_type == name]
        e = [(frames[k].energy / frames[k].n_atoms, predictions["energy"][k] / frames[k].n_atoms) for k in idx if frames[k].energy is not None]
        if e:
            ref, pred = np.array(e).T
            ax_e.scatter(ref, pred, s=8, alpha=0.7, color=colours[name], label=name, rasterized=True)
        f = [(np.ravel(frames[k].forces), np.ravel(predictions["forces"][k])) for k in idx if frames[k].forces is not None]
        if f:
            ref = np.concatenate([a for a, _ in f])
            pred = np.concatenate([b for _, b in f])
            if keep < 1.0:
                mask = rng.random(ref.shape[0]) < keep
                ref, pred = ref[mask], pred[mask]
            ax_f.scatter(ref, pred, s=3, alpha=0.4, color=colours[name], label=name, rasterized=True)

    def finish(ax, label, unit, mae, n):
        lo, hi = ax.get_xlim()
        lo2, hi2 = ax.get_ylim()
        lo, hi = min(lo, lo2), max(hi, hi2)
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, zorder=0)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        ax.set_xlabel(f"reference {label}")
        ax.set_ylabel(f"predicted {label}")
        ax.set_title(f"{label}: MAE {'—' if mae is None else f'{mae:.2f}'} {unit} (n={n})")
        if ax.collections and len(groups) > 1:
            ax.legend(fontsize="small", markerscale=2)

    finish(ax_e, "energy (eV/atom)", "meV/atom", metrics["energy_mae_per_atom"], metrics["n_energy"])
    finish(ax_f, "force component (eV/Å)", "meV/Å", metrics["forces_mae"], metrics["n_forces"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def evaluate(potential, frames: Sequence[Frame], batch_size: int = 32, device: str = "cpu", dtype: torch.dtype | None = None,
             level: str | None = None) -> tuple[dict, dict]:
    """``predict`` then ``compute_metrics``: returns (metrics, predictions)."""
    frames = list(frames)
    predictions = predict(potential, frames, batch_size=batch_size, device=device, dtype=dtype, level=level)
    return compute_metrics(frames, predictions), predictions
