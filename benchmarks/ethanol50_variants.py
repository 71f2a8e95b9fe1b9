"""10-minute runs of one backbone on 50 ethanol frames, each with a changed setting (issue: 50-frame accuracy).

    python benchmarks/ethanol50_variants.py --variants '{}' '{"options": {"channels": 16}}' \
        '{"training": {"energy_loss": "mae", "forces_loss": "l2", "energy_weight": 9, "forces_weight": 80}}'

Each variant is JSON with optional ``options`` (model options) and ``training`` (training settings).
Runs go one after another (or side by side with --parallel, one process each: use no more
variants than cores) on the same frames and seed; the table shows the test force MAE on the
900 held-out frames. For the MACE reference, run ethanol_budget.py --with-mace --sizes 50.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import map_jobs, print_table, save_json, split_for, train_job


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=["{}"])
    p.add_argument("--model", default="equivariant-ace")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/ethanol50_variants.json"))
    p.add_argument("--parallel", action="store_true", help="run the variants concurrently, one process each")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ethanol50_variants_"))
    paths, e0s = split_for("ethanol", 50, args.seed, work / "split")
    variants = [json.loads(text) for text in args.variants]
    for text, variant in zip(args.variants, variants):
        unknown = set(variant) - {"options", "training"}
        if unknown:
            raise SystemExit(f"variant {text}: unknown keys {sorted(unknown)} (use 'options' and 'training')")
    jobs = [dict(paths=paths, e0s=e0s, out=work / f"run_{k}", minutes=args.minutes, model=args.model, seed=args.seed,
                 threads=args.threads, options=v.get("options"), training=v.get("training")) for k, v in enumerate(variants)]
    rows = []
    for text, r in zip(args.variants, map_jobs(train_job, jobs, args.parallel)):
        rows.append({"variant": text, **{key: v for key, v in r.items() if key != "model_path"}})
        save_json(args.json, rows)
    print_table(f"{args.model} on 50 ethanol frames, {args.minutes:g} minutes, seed {args.seed}", rows, [
        ("variant", "variant", ""), ("test_forces_mae_meV_per_A", "F MAE meV/Å", ".1f"),
        ("test_energy_mae_meV_per_atom", "E MAE meV/atom", ".2f"), ("epochs", "epochs", "d"),
        ("train_structures_per_s", "structures/s", ".0f"),
    ])


if __name__ == "__main__":
    main()
