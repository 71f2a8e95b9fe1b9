"""Learning-curve PNG from Lightning's CSV log."""
from __future__ import annotations

import csv
from pathlib import Path


def plot_learning_curve(metrics_csv: str | Path, path: str | Path) -> bool:
    """Validation energy/force MAE and training loss per epoch; False when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(metrics_csv)))
    series: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        for key in ("val_forces_mae", "val_energy_mae", "loss"):
            if row.get(key):
                series.setdefault(key, []).append((float(row["epoch"]), float(row[key])))
    if not series:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("val_forces_mae", "force MAE (meV/Å)"), ("val_energy_mae", "energy MAE (meV/atom)")):
        if key in series:
            x, y = zip(*series[key])
            axes[0].plot(x, y, label=label)
    axes[0].set(xlabel="epoch", yscale="log", title="validation (EMA weights)")
    axes[0].legend()
    if "loss" in series:
        x, y = zip(*series["loss"])
        axes[1].plot(x, y, lw=0.5)
        axes[1].set(xlabel="epoch", yscale="log", title="training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
