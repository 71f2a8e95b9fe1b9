"""ms per ForcefitCalculator call against a bare Potential call, for ethanol (9 atoms).

Usage: python benchmarks/calculator_overhead.py [--dtype float32|float64] [--threads N] [--repeats R] [--md-steps S]

Two measurements, because the CPUs this runs on are often shared:
1. interleaved: a bare call (one prebuilt batch, no neighbour list, no
   tensor building) alternating with a full calculator call (new positions
   every call, as in MD); medians and minima of each;
2. in-call split: inside each calculator call, the time spent in the
   Potential itself versus everything else (ASE bookkeeping, neighbour list,
   tensors, results). This compares the two parts of the same call, so load
   from other processes largely cancels.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning OpenMP workers distort timings on shared CPUs

import numpy as np
import torch
from ase.build import molecule

from forcefit.models.painn import PaiNN
from forcefit.models.potential import Potential
from forcefit.simulate.calculator import ForcefitCalculator


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--md-steps", type=int, default=200, help="Langevin steps for a steps/s figure (0: skip)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    potential = Potential(PaiNN(num_species=3), [1, 6, 8])
    torch.nn.init.normal_(potential.backbone.readout[-1].weight)  # a trained-like, non-zero readout (same cost)
    atoms = molecule("CH3CH2OH")
    calc = ForcefitCalculator(potential, dtype=getattr(torch, args.dtype))
    atoms.calc = calc
    moves = atoms.positions + 1e-3 * np.random.default_rng(0).standard_normal((64,) + atoms.positions.shape)
    batch = calc.build_batch(atoms)
    model = calc.potential

    inner: list[float] = []
    forward = model.forward

    def timed_forward(*a, **k):
        t0 = time.perf_counter()
        out = forward(*a, **k)
        inner.append(time.perf_counter() - t0)
        return out

    model.forward = timed_forward  # instance attribute: nn.Module.__call__ picks it up
    bare, full = [], []
    for k in range(args.repeats + 20):
        t0 = time.perf_counter()
        model(batch, compute_forces=True)
        bare.append(time.perf_counter() - t0)
        atoms.positions = moves[k % len(moves)]
        t0 = time.perf_counter()
        atoms.get_forces()
        full.append(time.perf_counter() - t0)
    bare_t = 1e3 * np.array(bare[20:])
    full_t = 1e3 * np.array(full[20:])
    model_in_call = 1e3 * np.array(inner[1::2][20:])  # every second forward is the calculator's
    rest = full_t - model_in_call

    print(f"ethanol, {len(atoms)} atoms, {batch['edge_index'].shape[1]} edges, PaiNN(3) defaults, "
          f"dtype {args.dtype}, torch threads {torch.get_num_threads()}, {args.repeats} calls")
    for label, f in (("median", np.median), ("minimum", np.min)):
        print(f"{label:8s} bare Potential {f(bare_t):.3f} ms | calculator {f(full_t):.3f} ms "
              f"({100 * (f(full_t) / f(bare_t) - 1):+.1f}%)")
    print(f"in-call  model {np.median(model_in_call):.3f} ms + rest {np.median(rest):.3f} ms "
          f"(min {rest.min():.3f}) -> overhead {100 * np.median(rest / model_in_call):.1f}% of the model call")
    if args.md_steps:
        from forcefit.simulate.md import run_md

        model.forward = forward
        result = run_md(molecule("CH3CH2OH"), calc, steps=args.md_steps, stop_at_collapse=False, progress=False)
        print(f"Langevin MD: {result.steps_done} steps at {result.steps_per_second:.0f} steps/s "
              f"({1e3 / result.steps_per_second:.2f} ms/step; untrained model, so the molecule may fly apart)")


if __name__ == "__main__":
    main()
