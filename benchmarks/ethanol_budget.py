"""Ethanol (rMD17 DFT) under a fixed wall-time budget: forcefit backbones vs MACE, side by side.

    python benchmarks/ethanol_budget.py [--minutes 10] [--sizes 50 950] [--models painn equivariant-ace] [--with-mace]
    python benchmarks/ethanol_budget.py --dataset acac [--models ...] [--with-mace]
    python benchmarks/ethanol_budget.py --sizes 50 --seeds 1 2 --parallel --threads 1 ...

Train on 50 and on 950 frames of ../shared/data/ethanol/train.xyz (validate on
50 others, test on the rest; with 950 training frames only 50 remain, so 25
validate and 25 test), then print test energy/force MAE, training structures
per second and MD steps per second for one molecule through the ASE calculator.
With --with-mace, MACE (32x0e+32x1o, r_max 5, float32) runs on the same files
and budget in its own virtual environment, and ratios to it are printed.
With --dataset acac the same comparison runs on acetylacetone: train on 450 frames
of acac/train_300K.xyz (50 others validate), test on all of acac/test_MD_300K.xyz.
--seeds draws a different split (and initialisation) per seed; with several seeds a
"mean" row per model gives the mean MAE and the ratio of mean MAEs to MACE's.
--parallel runs the seeds at the same time, one process each (use --threads 1 and
no more seeds than cores): each seed's runs still go one after another, so the
models of one seed see the same load.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from common import map_jobs, md_steps_per_second, print_table, save_json, split_for, train_forcefit


def _run_one(job: tuple) -> list[dict]:
    """One training-set size and seed: MACE (if asked) then each forcefit backbone, on the same split."""
    args, n, seed, work = job
    paths, e0s = split_for(args.dataset, n, seed, work / f"split_{n}")
    rows, mace = [], None
    if args.with_mace:
        from mace_baseline import run_mace

        mace = run_mace(paths["train"], paths["valid"], paths["test"], e0s, args.minutes, seed=seed,
                        workdir=work / f"mace_{n}", threads=args.threads)
        rows.append({"model": "MACE", "n_train": n, "seed": seed, **mace, "md_steps_per_s_eager": mace["md_steps_per_s"]})  # MACE runs eager
    for model in args.models:
        r = train_forcefit(paths, e0s, work / f"{model}_{n}", args.minutes, model=model, seed=seed, threads=args.threads)
        r["md_steps_per_s_eager"] = md_steps_per_second(r["model_path"], paths["test"])
        r["md_steps_per_s"] = md_steps_per_second(r["model_path"], paths["test"], compile=True)
        row = {"model": model, "n_train": n, "seed": seed, **r}
        if mace:
            row.update(_ratios(row, mace))
        rows.append(row)
    return rows


def _ratios(row: dict, mace: dict) -> dict:
    return {"forces_vs_mace": row["test_forces_mae_meV_per_A"] / mace["test_forces_mae_meV_per_A"],
            "train_speed_vs_mace": row["train_structures_per_s"] / mace["train_structures_per_s"],
            "md_speed_vs_mace": row["md_steps_per_s"] / mace["md_steps_per_s"]}


def _mean_rows(rows: list[dict]) -> list[dict]:
    """Per model and size, the mean over seeds; ratios to MACE are ratios of the means."""
    keys = ["epochs", "test_energy_mae_meV_per_atom", "test_forces_mae_meV_per_A", "train_structures_per_s",
            "md_steps_per_s_eager", "md_steps_per_s"]
    means = {}
    for row in rows:
        means.setdefault((row["model"], row["n_train"]), []).append(row)
    out = []
    for (model, n), group in means.items():
        out.append({"model": model, "n_train": n, "seed": "mean", **{k: float(np.mean([r[k] for r in group])) for k in keys}})
    mace = {r["n_train"]: r for r in out if r["model"] == "MACE"}
    for r in out:
        if r["model"] != "MACE" and r["n_train"] in mace:
            r.update(_ratios(r, mace[r["n_train"]]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="training wall-time budget per run")
    p.add_argument("--dataset", choices=["ethanol", "acac"], default="ethanol")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="training-set sizes (ethanol: 50 950; acac: 450)")
    p.add_argument("--models", nargs="+", default=["painn"], help="forcefit backbones to run")
    p.add_argument("--with-mace", action="store_true")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one split and initialisation per seed")
    p.add_argument("--parallel", action="store_true", help="run the seeds concurrently, one process each")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None, help="default benchmarks/results/<dataset>_budget.json")
    args = p.parse_args()
    args.sizes = args.sizes or ([50, 950] if args.dataset == "ethanol" else [450])
    args.json = args.json or Path(f"benchmarks/results/{args.dataset}_budget.json")

    work = args.workdir or Path(tempfile.mkdtemp(prefix=f"{args.dataset}_budget_"))
    rows = []
    for n in args.sizes:  # with --parallel the seeds run side by side, the sizes one after another
        jobs = [(args, n, seed, work / f"seed{seed}") for seed in args.seeds]
        for seed_rows in map_jobs(_run_one, jobs, args.parallel):
            rows += seed_rows
            save_json(args.json, rows)
    if len(args.seeds) > 1:
        rows += _mean_rows(rows)
    save_json(args.json, rows)
    title = "ethanol (rMD17 PBE/def2-SVP)" if args.dataset == "ethanol" else "acetylacetone (PBE-D3/def2-SVP, 300 K)"
    print_table(f"{title}, {args.minutes:g}-minute budget, {args.threads} threads", rows, [
        ("model", "model", ""), ("n_train", "train frames", "d"), ("seed", "seed", ""), ("epochs", "epochs", ".0f"),
        ("test_energy_mae_meV_per_atom", "E MAE meV/atom", ".2f"), ("test_forces_mae_meV_per_A", "F MAE meV/Å", ".1f"),
        ("train_structures_per_s", "train structs/s", ".0f"), ("md_steps_per_s_eager", "MD steps/s eager", ".0f"), ("md_steps_per_s", "MD steps/s compiled", ".0f"),
        ("forces_vs_mace", "F MAE / MACE", ".2f"), ("train_speed_vs_mace", "train speed / MACE", ".1f"),
        ("md_speed_vs_mace", "MD speed / MACE", ".1f"),
    ])
    print(f"results: {args.json}")


if __name__ == "__main__":
    main()
