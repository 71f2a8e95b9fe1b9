"""The pipeline's report: one row per recipe (test errors, labels used and their CPU cost), paired
comparisons on the test frames, and a plot of accuracy against labelling cost."""
from __future__ import annotations

import json
from pathlib import Path

from ..atomic_file import atomic_path, write_text_atomic
from .stages import RECIPE_MODEL, RECIPE_STAGES

BASELINE = "accurate-only"


def _labels_used(recipe: str, counts: dict) -> dict:
    accurate = counts.get("accurate_train", 0) + counts.get("accurate_valid", 0)
    cheap = {"pretrain-finetune": counts.get("cheap_train", 0) + counts.get("cheap_valid", 0),
             "asteroid": counts.get("cheap_train", 0) + counts.get("cheap_valid", 0),
             "multilevel": counts.get("cheap_train", 0) + counts.get("cheap_valid", 0),
             "delta": accurate}.get(recipe, 0)  # Δ-learning labels the accurate frames with the cheap method too
    unlabelled = counts.get("unlabelled", 0) if recipe == "asteroid-score" else 0
    return {"accurate_labels": accurate, "cheap_labels": cheap, "unlabelled_frames": unlabelled}


def _cost(used: dict, per_label: dict) -> float | None:
    """CPU-seconds of the labels (and sampled frames) a recipe used; None where a cost is unknown."""
    total = 0.0
    for count, source in ((used["accurate_labels"], "accurate"), (used["cheap_labels"], "cheap"),
                          (used["unlabelled_frames"], "unlabelled")):
        if count:
            rate = per_label.get(source)
            if rate is None:
                return None
            total += count * rate
    return total


def build_report(out: str | Path, recipes: list[str], resamples: int = 10000) -> dict:
    """Rows for every recipe whose last stage finished; paired test comparisons against accurate-only and
    (if both ran) asteroid against pretrain-finetune."""
    out = Path(out)
    info = json.loads((out / "data" / "data.json").read_text())
    per_label = info["cpu_seconds_per_label"]
    if per_label.get("accurate_valid") is None:
        per_label["accurate_valid"] = per_label.get("accurate")
    rows, models = [], {}
    for recipe in recipes:
        done = out / "stages" / RECIPE_MODEL[recipe] / "stage.json"
        if not done.exists():
            rows.append({"recipe": recipe, "status": "not run"})
            continue
        result = json.loads(done.read_text())
        metrics = result.get("metrics", {})
        used = _labels_used(recipe, info["counts"])
        seconds = sum(json.loads((out / "stages" / s / "stage.json").read_text()).get("seconds", 0.0)
                      for s in RECIPE_STAGES[recipe] if (out / "stages" / s / "stage.json").exists())
        models[recipe] = str(out / "stages" / RECIPE_MODEL[recipe] / "model.pt")
        rows.append({"recipe": recipe, "status": "done", "split": metrics.get("split"),
                     "forces_mae_meV_per_A": metrics.get("forces_mae"), "energy_mae_meV_per_atom": metrics.get("energy_mae_per_atom"),
                     **used, "label_cpu_seconds": _cost(used, per_label), "training_minutes": seconds / 60})
    base = next((r for r in rows if r["recipe"] == BASELINE and r["status"] == "done"), None)
    for r in rows:
        if base and r.get("forces_mae_meV_per_A") is not None:
            r["forces_vs_accurate_only"] = r["forces_mae_meV_per_A"] / base["forces_mae_meV_per_A"]
    paired = []
    test = out / "data" / "test.xyz"
    if test.exists():
        from ..compare import compare

        pairs = [(BASELINE, r) for r in models if r != BASELINE and BASELINE in models]
        if "asteroid" in models and "pretrain-finetune" in models:
            pairs.append(("pretrain-finetune", "asteroid"))
        for a, b in pairs:
            row = compare(models[a], models[b], [test], resamples=resamples)["rows"][-1]
            paired.append({"baseline": a, "other": b, "forces_change_pct": row["F_change_pct"],
                           "ci_low_pct": row["F_ci_low_pct"], "ci_high_pct": row["F_ci_high_pct"],
                           "other_better_frames": row["F_other_better_frames"]})
    report = {"rows": rows, "paired": paired, "cpu_seconds_per_label": per_label, "counts": info["counts"]}
    write_text_atomic(out / "report.json", json.dumps(report, indent=2))
    cost_plot(rows, out / "report.png")
    return report


def cost_plot(rows: list[dict], path: Path) -> Path | None:
    """Test force MAE against labelling CPU-seconds, one point per recipe."""
    points = [r for r in rows if r.get("forces_mae_meV_per_A") is not None]
    if not points:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for k, r in enumerate(points):
        x = r.get("label_cpu_seconds")
        if x is None:
            continue
        ax.scatter([x], [r["forces_mae_meV_per_A"]], color=f"C{k % 10}", s=40, label=r["recipe"])
        ax.annotate(r["recipe"], (x, r["forces_mae_meV_per_A"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("labelling cost (CPU-seconds, accurate + cheap)")
    ax.set_ylabel("test force MAE (meV/Å)")
    ax.set_title("accuracy against labelling cost", fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    return path


COLUMNS = [("recipe", "recipe", ""), ("forces_mae_meV_per_A", "F MAE meV/Å", ".1f"),
           ("forces_vs_accurate_only", "× accurate-only", ".2f"), ("energy_mae_meV_per_atom", "E MAE meV/atom", ".2f"),
           ("accurate_labels", "accurate labels", "d"), ("cheap_labels", "cheap labels", "d"),
           ("unlabelled_frames", "unlabelled", "d"), ("label_cpu_seconds", "label CPU-s", ".0f"),
           ("training_minutes", "train min", ".1f")]


def report_table(report: dict):
    from rich.table import Table

    table = Table(title="pipeline recipes on the test frames", caption="label CPU-s: measured labelling cost of the labels each recipe used")
    for _, header, fmt in COLUMNS:
        table.add_column(header, justify="left" if not fmt else "right")
    for row in report["rows"]:
        table.add_row(*[("—" if row.get(k) is None else format(row[k], fmt)) if k != "recipe" else row[k] for k, _, fmt in COLUMNS])
    return table
