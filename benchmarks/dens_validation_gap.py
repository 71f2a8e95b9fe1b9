"""Validation force MAE of a DeNS pair at equal epochs, from a dens.py work folder (finished or not).

    python benchmarks/dens_validation_gap.py benchmarks/runs/dens_ethanol950_1500 [--every 50]

The test MAE only exists once a run ends; a pair that is stopped and resumed
(``dens.py --workdir``) can be read while it trains. For every dataset/budget/seed
in the folder, prints the validation force MAE of the plain run (suffix _0) and of
each DeNS run (_1, _2, ...) at the epochs both have validated, with the relative
change, and writes ``validation_gap.png`` (both curves) into the folder.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from common import print_table

from forcefit.training import metrics_history


def validation_curve(run: Path) -> dict[int, float]:
    """{epoch: validation force MAE (meV/Å)} from a run's CSV log (with the rows before a resume)."""
    return {int(r["epoch"]): float(r["val_forces_mae"]) for r in metrics_history.rows(run / "logs") if r.get("val_forces_mae")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workdir", type=Path)
    p.add_argument("--every", type=int, default=50, help="print every N-th epoch (and the last shared one)")
    args = p.parse_args()
    plain_runs = sorted(args.workdir.glob("*_0"))
    plain_runs = [r for r in plain_runs if (r / "logs").exists()]
    if not plain_runs:
        raise SystemExit(f"{args.workdir}: no runs (folders NAME_0 with logs/) found")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    rows = []
    for plain in plain_runs:
        stem = plain.name[:-2]
        base = validation_curve(plain)
        ax.plot(list(base), list(base.values()), label=f"{stem} plain")
        for other in sorted(args.workdir.glob(f"{stem}_*")):
            if other == plain:
                continue
            curve = validation_curve(other)
            ax.plot(list(curve), list(curve.values()), label=f"{stem} DeNS ({other.name[-1]})")
            shared = sorted(set(base) & set(curve))
            picked = [e for e in shared if (e + 1) % args.every == 0] + shared[-1:]
            for e in sorted(set(picked)):
                rows.append({"run": other.name, "epoch": e + 1, "plain": base[e], "dens": curve[e],
                             "change": 100 * (curve[e] / base[e] - 1)})
    ax.set(xlabel="epoch", ylabel="validation force MAE (meV/Å)", yscale="log", title="DeNS vs plain, equal epochs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.workdir / "validation_gap.png", dpi=120)
    print_table(f"validation force MAE at equal epochs ({args.workdir})", rows, [
        ("run", "DeNS run", ""), ("epoch", "epoch", "d"), ("plain", "plain", ".2f"), ("dens", "DeNS", ".2f"),
        ("change", "Δ %", "+.1f"),
    ])
    print(f"curves: {args.workdir / 'validation_gap.png'}")


if __name__ == "__main__":
    main()
