"""Build the pretraining pool the shipped model is trained on: GFN2-xTB minima and MD of the shipped molecules.

    python benchmarks/build_pool.py [--out benchmarks/runs/pretraining_pool] [--max-molecules N]
                                    [--conformers 2] [--md-frames 10] [--md-every 20]
                                    [--temperatures 300 500 800] [--workers 1] [--seed 0]

Per molecule of forcefit/data/pretraining_smiles.txt (the first --max-molecules): --conformers
RDKit conformers relaxed with GFN2-xTB (equilibrium frames), then from each minimum Langevin MD
at every temperature keeping --md-frames snapshots, one every --md-every steps of 0.5 fs; every
frame labelled with GFN2-xTB through a campaign (forcefit.data.pretraining_pool.build_pool).
Resumable: rerunning the same command skips the molecules done (or failed) and finishes the
labels; other settings into the same --out are refused. Writes --out/pool.h5 (the packed pool
for ``forcefit pretrain --pool``), pool.db (the campaign), molecules.jsonl and pool.json (the
summary printed at the end: molecules done and failed, frames, CPU seconds of sampling and
labelling). Measured on the shared 2-core machine: about 10 CPU s per molecule with the
defaults (4-18 s from acetic acid to leucine), so the whole list takes about an hour on one core.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # xTB on small molecules is fastest single-threaded


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("benchmarks/runs/pretraining_pool"))
    p.add_argument("--max-molecules", type=int, default=None, help="only the first N molecules of the list")
    p.add_argument("--conformers", type=int, default=2)
    p.add_argument("--md-frames", type=int, default=10, help="MD snapshots per conformer and temperature")
    p.add_argument("--md-every", type=int, default=20, help="MD steps between snapshots")
    p.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 500.0, 800.0])
    p.add_argument("--workers", type=int, default=1, help="processes sampling molecules in parallel")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from forcefit.data.pretraining_pool import SUMMARY, build_pool, smiles_list

    molecules = smiles_list()[: args.max_molecules]
    t0 = time.perf_counter()
    path = build_pool(args.out, smiles=molecules, conformers=args.conformers, temperatures=args.temperatures,
                      md_frames_per_temperature=args.md_frames, md_every=args.md_every, seed=args.seed,
                      workers=args.workers)
    summary = json.loads((args.out / SUMMARY).read_text())
    print(json.dumps({k: summary[k] for k in ("molecules", "frames", "cpu_seconds")}, indent=1))
    print(f"{path}: {summary['frames']['pool']} frames of {summary['molecules']['done']} molecules "
          f"({len(summary['molecules']['failed'])} failed); this run {time.perf_counter() - t0:.0f} s wall")


if __name__ == "__main__":
    main()
