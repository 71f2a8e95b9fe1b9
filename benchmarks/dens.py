"""DeNS on and off, side by side: same model, same frames, same seeds.

    python benchmarks/dens.py [--datasets ethanol950 ethanol50 acac] [--model NAME]
                              [--epochs 60] [--minutes 5] [--seeds 0 1] [--loss published|mse]
                              [--variants '{}' '{"weight": 1}' ...] [--parallel]

Two comparisons per dataset: at equal epochs (--epochs) and at equal wall time
(--minutes). Prints test force/energy MAE, the relative change with DeNS,
the training-time overhead (seconds per epoch, DeNS / plain; from training throughput
when a run was resumed) and the MD speed of the exported DeNS model over the plain one
(the noise head and force encoding are not exported, so it should be 1). --workdir keeps the runs, so a stopped run can be
continued by calling the same command again. --parallel runs the
runs of one seed at the same time, one process each (use --threads 1 and no more
runs than cores): both see the same machine load, and a long pair takes half the wall time.
Datasets: ethanol (rMD17) with 950 or 50 training frames, acetylacetone
(train_300K.xyz → test_MD_300K.xyz). Both runs of a pair use the same supervised loss:
by default the published DeNS recipe (energy MAE + force L2 norm, λ_E:λ_F = 1:80);
--loss mse runs both with MSE 1:100 (where λ_DeNS = 5 swamps the force term).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import ase.io
import numpy as np

from common import map_jobs, md_steps_per_second, print_table, save_json, split_for, train_job


def dataset(name: str, seed: int, work: Path) -> tuple[dict, Path]:
    """ethanol50 / ethanol950 (rMD17 frames) or acac (450 of train_300K.xyz → test_MD_300K.xyz)."""
    if name.startswith("ethanol"):
        return split_for("ethanol", int(name.removeprefix("ethanol")), seed, work / f"{name}_{seed}")
    if name == "acac":
        return split_for("acac", 450, seed, work / f"acac_{seed}")
    raise SystemExit(f"unknown dataset {name}")


def md_speeds(model_paths: list[str], structure: Path, steps: int, repeats: int = 3) -> list[float]:
    """Median MD steps/s of each exported model, taken in turns so that machine load hits all alike."""
    times = [[] for _ in model_paths]
    for _ in range(repeats):
        for k, path in enumerate(model_paths):
            times[k].append(md_steps_per_second(path, structure, steps=steps))
    return [float(np.median(t)) for t in times]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["ethanol950", "ethanol50", "acac"])
    p.add_argument("--model", default="painn")
    p.add_argument("--epochs", type=int, default=60, help="equal-epoch comparison (0 to skip)")
    p.add_argument("--minutes", type=float, default=5.0, help="equal-wall-time comparison (0 to skip)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--loss", choices=["published", "mse"], default="published",
                   help="supervised loss of both runs: published DeNS recipe (energy MAE + force L2 norm, 1:80) or MSE 1:100")
    p.add_argument("--variants", nargs="+", default=["{}"],
                   help='DeNS settings to compare with the one plain run, as JSON, e.g. \'{}\' \'{"weight": 1}\' \'{"p": 0.1}\'')
    p.add_argument("--options", default="{}", help='model options for both runs, as JSON, e.g. \'{"channels": 64}\'')
    p.add_argument("--training", default="{}", help='extra training settings for both runs, as JSON, e.g. \'{"grad_clip": null}\'')
    p.add_argument("--md-steps", type=int, default=200,
                   help="MD steps per timing of each exported model (DeNS must cost nothing at MD time; 0 to skip)")
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/dens.json"))
    p.add_argument("--parallel", action="store_true", help="train the runs of one seed concurrently, one process each")
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep the runs here (default: a fresh temporary folder); calling again with the same folder "
                        "reads the finished runs and resumes the unfinished ones from their last checkpoint")
    args = p.parse_args()
    variants = [json.loads(v) for v in args.variants]
    options = json.loads(args.options)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="dens_bench_"))
    loss = ({"energy_loss": "mae", "forces_loss": "l2", "energy_weight": 1.0, "forces_weight": 80.0} if args.loss == "published"
            else {"energy_loss": "mse", "forces_loss": "mse", "energy_weight": 1.0, "forces_weight": 100.0})
    loss = {**loss, **json.loads(args.training)}
    rows = []
    modes = [m for m in (("epochs", args.epochs), ("minutes", args.minutes)) if m[1]]
    for name in args.datasets:
        for mode, amount in modes:
            budget = {"max_epochs": int(amount), "minutes": None} if mode == "epochs" else {"max_epochs": 100000, "minutes": amount}
            runs = [("plain", None)] + [("defaults" if not v else json.dumps(v), v) for v in variants]  # (label, DeNS settings)
            results = {label: [] for label, _ in runs}
            for seed in args.seeds:
                paths, e0s = dataset(name, seed, work)
                jobs = [dict(paths=paths, e0s=e0s, out=work / f"{name}_{mode}_{seed}_{k}", minutes=budget["minutes"],
                             model=args.model, options=options, seed=seed, dens=dens_settings, max_epochs=budget["max_epochs"],
                             threads=args.threads, training=loss) for k, (_, dens_settings) in enumerate(runs)]
                pair = list(map_jobs(train_job, jobs, args.parallel))
                # a resumed run's wall time covers only its last part: compare training throughput instead
                n_train = len(ase.io.read(paths["train"], ":")) if any(r.get("resumed") for r in pair) else None
                if args.md_steps:
                    for r, speed in zip(pair, md_speeds([r["model_path"] for r in pair], paths["test"], args.md_steps)):
                        r["md_steps_per_s"] = speed
                for (label, _), r in zip(runs, pair):
                    r["s_per_epoch"] = (n_train / r["train_structures_per_s"] if n_train
                                        else r["wall_minutes"] * 60 / max(r["epochs"], 1))
                    results[label].append(r)
            mean = {label: {k: float(np.mean([r[k] for r in rs])) for k in rs[0] if k != "model_path"} for label, rs in results.items()}
            plain = mean["plain"]
            for label, _ in runs[1:]:
                dens = mean[label]
                rows.append({
                    "dataset": name, "budget": f"{amount:g} {mode}", "seeds": len(args.seeds), "dens": label,
                    "F_plain": plain["test_forces_mae_meV_per_A"], "F_dens": dens["test_forces_mae_meV_per_A"],
                    "F_change_pct": 100 * (dens["test_forces_mae_meV_per_A"] / plain["test_forces_mae_meV_per_A"] - 1),
                    "E_plain": plain["test_energy_mae_meV_per_atom"], "E_dens": dens["test_energy_mae_meV_per_atom"],
                    "E_change_pct": 100 * (dens["test_energy_mae_meV_per_atom"] / plain["test_energy_mae_meV_per_atom"] - 1),
                    "epochs_plain": plain["epochs"], "epochs_dens": dens["epochs"],
                    "overhead_pct": 100 * (dens["s_per_epoch"] / plain["s_per_epoch"] - 1),
                    "md_plain": plain.get("md_steps_per_s"), "md_dens": dens.get("md_steps_per_s"),
                    "md_ratio": dens["md_steps_per_s"] / plain["md_steps_per_s"] if args.md_steps else None,
                })
            save_json(args.json, rows)
    print_table(f"DeNS vs plain training, model {args.model}, {args.loss} loss", rows, [
        ("dataset", "data", ""), ("budget", "budget", ""), ("seeds", "seeds", "d"), ("dens", "DeNS settings", ""),
        ("F_plain", "F MAE plain", ".1f"), ("F_dens", "F MAE DeNS", ".1f"), ("F_change_pct", "ΔF %", "+.1f"),
        ("E_plain", "E MAE plain", ".2f"), ("E_dens", "E MAE DeNS", ".2f"), ("E_change_pct", "ΔE %", "+.1f"),
        ("epochs_plain", "epochs plain", ".0f"), ("epochs_dens", "epochs DeNS", ".0f"), ("overhead_pct", "time/epoch overhead %", "+.1f"),
        ("md_ratio", "MD speed DeNS/plain", ".2f"),
    ])
    print("(MAE in meV/Å and meV/atom on the test frames; negative Δ means DeNS is better)")


if __name__ == "__main__":
    main()
