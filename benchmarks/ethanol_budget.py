"""Ethanol (rMD17 DFT) under a fixed wall-time budget: forcefit backbones vs MACE, side by side.

    python benchmarks/ethanol_budget.py [--minutes 10] [--sizes 50 950] [--models painn equivariant-ace] [--with-mace]
    python benchmarks/ethanol_budget.py --dataset acac [--models ...] [--with-mace]

Train on 50 and on 950 frames of ../shared/data/ethanol/train.xyz (validate on
50 others, test on the rest; with 950 training frames only 50 remain, so 25
validate and 25 test), then print test energy/force MAE, training structures
per second and MD steps per second for one molecule through the ASE calculator.
With --with-mace, MACE (32x0e+32x1o, r_max 5, float32) runs on the same files
and budget in its own virtual environment, and ratios to it are printed.
With --dataset acac the same comparison runs on acetylacetone: train on 450 frames
of acac/train_300K.xyz (50 others validate), test on all of acac/test_MD_300K.xyz.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import md_steps_per_second, print_table, save_json, split_for, train_forcefit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="training wall-time budget per run")
    p.add_argument("--dataset", choices=["ethanol", "acac"], default="ethanol")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="training-set sizes (ethanol: 50 950; acac: 450)")
    p.add_argument("--models", nargs="+", default=["painn"], help="forcefit backbones to run")
    p.add_argument("--with-mace", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None, help="default benchmarks/results/<dataset>_budget.json")
    args = p.parse_args()
    args.sizes = args.sizes or ([50, 950] if args.dataset == "ethanol" else [450])
    args.json = args.json or Path(f"benchmarks/results/{args.dataset}_budget.json")

    work = args.workdir or Path(tempfile.mkdtemp(prefix=f"{args.dataset}_budget_"))
    rows = []
    for n in args.sizes:
        paths, e0s = split_for(args.dataset, n, args.seed, work / f"split_{n}")
        mace = None
        if args.with_mace:
            from mace_baseline import run_mace

            mace = run_mace(paths["train"], paths["valid"], paths["test"], e0s, args.minutes, seed=args.seed,
                            workdir=work / f"mace_{n}", threads=args.threads)
            rows.append({"model": "MACE", "n_train": n, **mace, "md_steps_per_s_eager": mace["md_steps_per_s"]})  # MACE runs eager
        for model in args.models:
            r = train_forcefit(paths, e0s, work / f"{model}_{n}", args.minutes, model=model, seed=args.seed, threads=args.threads)
            r["md_steps_per_s_eager"] = md_steps_per_second(r["model_path"], paths["test"])
            r["md_steps_per_s"] = md_steps_per_second(r["model_path"], paths["test"], compile=True)
            row = {"model": model, "n_train": n, **r}
            if mace:
                row["forces_vs_mace"] = r["test_forces_mae_meV_per_A"] / mace["test_forces_mae_meV_per_A"]
                row["train_speed_vs_mace"] = r["train_structures_per_s"] / mace["train_structures_per_s"]
                row["md_speed_vs_mace"] = r["md_steps_per_s"] / mace["md_steps_per_s"]
            rows.append(row)
            save_json(args.json, rows)
    title = "ethanol (rMD17 PBE/def2-SVP)" if args.dataset == "ethanol" else "acetylacetone (PBE-D3/def2-SVP, 300 K)"
    print_table(f"{title}, {args.minutes:g}-minute budget, {args.threads} threads", rows, [
        ("model", "model", ""), ("n_train", "train frames", "d"), ("epochs", "epochs", ""),
        ("test_energy_mae_meV_per_atom", "E MAE meV/atom", ".2f"), ("test_forces_mae_meV_per_A", "F MAE meV/Å", ".1f"),
        ("train_structures_per_s", "train structs/s", ".0f"), ("md_steps_per_s_eager", "MD steps/s eager", ".0f"), ("md_steps_per_s", "MD steps/s compiled", ".0f"),
        ("forces_vs_mace", "F MAE / MACE", ".2f"), ("train_speed_vs_mace", "train speed / MACE", ".1f"),
        ("md_speed_vs_mace", "MD speed / MACE", ".1f"),
    ])
    print(f"results: {args.json}")


if __name__ == "__main__":
    main()
