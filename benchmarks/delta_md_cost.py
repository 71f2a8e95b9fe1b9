"""What a Δ model costs in MD: the same network with and without GFN2-xTB inside the model file.

    python benchmarks/delta_md_cost.py MODEL.pt STRUCTURE.xyz [--steps 200] [--threads 1] [--json OUT.json]

NVT Langevin (500 K, 0.5 fs) of one molecule through the ASE calculator, first with the plain model
file, then with a copy that carries the GFN2-xTB baseline (``forcefit.baseline.attach_baseline``),
after a short warm-up each. Reports MD steps per second of both and, for the Δ model, the share of
each call spent in the network and in the baseline (the calculator's own timers). The network's
weights do not matter for the cost, so any model file of the molecule will do.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import ase.io
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save_json  # noqa: E402


def md_rate(model_path: Path, atoms, steps: int, threads: int) -> tuple[float, object]:
    import torch
    from ase import units
    from ase.md.langevin import Langevin

    import forcefit

    torch.set_num_threads(threads)
    atoms = atoms.copy()
    atoms.calc = forcefit.load(model_path).calculator
    dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=500, friction=0.01, rng=np.random.default_rng(0))
    dyn.run(10)
    calc = atoms.calc
    calc.model_seconds = calc.baseline_seconds = 0.0  # time the measured steps only
    start = time.perf_counter()
    dyn.run(steps)
    return steps / (time.perf_counter() - start), calc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path)
    p.add_argument("structure", type=Path)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    from forcefit.baseline import attach_baseline

    atoms = ase.io.read(args.structure, 0)
    plain, _ = md_rate(args.model, atoms, args.steps, args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        delta_path = attach_baseline(args.model, "gfn2", Path(tmp) / "delta.pt")
        delta, calc = md_rate(delta_path, atoms, args.steps, args.threads)
    seconds = args.steps / delta
    result = {"model": str(args.model), "atoms": len(atoms), "steps": args.steps, "threads": args.threads,
              "md_steps_per_s_plain": plain, "md_steps_per_s_delta": delta, "delta_slowdown": plain / delta,
              "delta_network_share": calc.model_seconds / seconds, "delta_baseline_share": calc.baseline_seconds / seconds}
    print(f"{len(atoms)} atoms: plain {plain:.1f} steps/s, Δ (GFN2-xTB inside) {delta:.1f} steps/s "
          f"({plain / delta:.1f}× slower); of a Δ step, network {100 * result['delta_network_share']:.0f}%, "
          f"GFN2-xTB {100 * result['delta_baseline_share']:.0f}%")
    if args.json:
        save_json(args.json, result)


if __name__ == "__main__":
    main()
