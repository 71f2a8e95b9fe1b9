"""The MACE side of benchmarks/mace_baseline.py; runs only inside benchmarks/.mace-venv.

    python mace_worker.py prepare --out DIR --e0s ISO.xyz|JSON|average|estimated TRAIN VALID TEST
    python mace_worker.py train --minutes M --threads T --timing FILE -- <mace_run_train arguments>
    python mace_worker.py eval --model FILE --test FILE --threads T [--md-steps N]

Each command prints one JSON line on stdout; everything else (MACE's log included)
goes to stderr, which mace_baseline.py keeps as a log file.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms


def _energy(atoms: Atoms) -> float:
    """Reference energy of an extxyz frame: recent ASE moves `energy` into a SinglePointCalculator."""
    return float(atoms.get_potential_energy() if atoms.calc is not None else atoms.info["energy"])


def _forces(atoms: Atoms) -> np.ndarray:
    return np.asarray(atoms.get_forces() if atoms.calc is not None else atoms.arrays["forces"], dtype=float)


def prepare(out: Path, e0s: str, files: list[Path]) -> dict:
    """Copies of the frames with plain REF_energy/REF_forces keys and no calculator.

    MACE's handling of the keys `energy`/`forces` (which ASE hands to a calculator)
    has changed between versions; REF_* keys read the same in all of them.
    """
    out.mkdir(parents=True, exist_ok=True)
    paths, species = {}, set()
    for name, path in zip(("train", "valid", "test"), files):
        frames = []
        for atoms in ase.io.read(path, ":"):
            copy = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
            copy.info["REF_energy"] = _energy(atoms)
            copy.arrays["REF_forces"] = _forces(atoms)
            frames.append(copy)
            species.update(int(z) for z in atoms.numbers)
        paths[name] = str(out / f"{name}.xyz")
        paths[f"n_{name}"] = len(frames)
        ase.io.write(paths[name], frames, format="extxyz")
    if e0s in ("average", "estimated"):  # MACE's own: least squares on the training frames / fitted to a foundation model
        paths["e0s"] = e0s
    else:
        if e0s.lstrip().startswith("{"):
            table = {int(z): float(e) for z, e in json.loads(e0s).items()}
        else:
            table = {int(a.numbers[0]): _energy(a) for a in ase.io.read(e0s, ":") if len(a) == 1}
        missing = species - set(table)
        if missing:
            raise SystemExit(f"E0s give no energy for atomic numbers {sorted(missing)}")
        paths["e0s"] = repr({z: table[z] for z in sorted(species)})  # MACE parses --E0s with ast.literal_eval
    return paths


class BudgetSpent(Exception):
    """Raised before an optimizer step once the wall-time budget is used up."""


def train(minutes: float, timing_path: Path, mace_args: list[str]) -> dict:
    """Run mace_run_train in this process, stopping its training loop at the budget.

    MACE has no wall-time option. Its loop calls module globals of mace.tools.train
    (train_one_epoch per epoch, take_step per batch) and run_train calls tools.train,
    so wrapping those three is enough: the clock starts when the loop starts (data
    loading and statistics excluded, like forcefit's max_time), each step checks it,
    and on expiry BudgetSpent unwinds to our tools.train wrapper, which returns
    normally, so MACE's own epilogue loads the best-validation checkpoint and saves
    <name>.model. The budget only stops after one full epoch, so that checkpoint exists.
    """
    import mace.tools
    from mace.cli import run_train

    loop = importlib.import_module("mace.tools.train")  # mace.tools.train the attribute is the function
    state = {"start": None, "epochs": 0, "structures": 0, "rates": []}
    budget = minutes * 60
    inner_train, inner_epoch, inner_step = mace.tools.train, loop.train_one_epoch, loop.take_step

    def step(**kw):
        if state["epochs"] >= 1 and time.perf_counter() - state["start"] > budget:
            raise BudgetSpent
        state["structures"] += int(kw["batch"].num_graphs)
        return inner_step(**kw)

    def epoch(**kw):
        t, n = time.perf_counter(), state["structures"]
        inner_epoch(**kw)
        state["rates"].append((state["structures"] - n) / (time.perf_counter() - t))
        state["epochs"] += 1

    def budgeted(**kw):
        state["start"] = time.perf_counter()
        try:
            inner_train(**kw)
        except BudgetSpent:
            print(f"wall-time budget of {minutes:g} min spent after {state['epochs']} epochs", file=sys.stderr)
        state["train_seconds"] = time.perf_counter() - state["start"]

    mace.tools.train, loop.train_one_epoch, loop.take_step = budgeted, epoch, step
    sys.argv = ["mace_run_train", *mace_args]
    run_train.main()
    rates = state["rates"]
    result = {"epochs": state["epochs"], "train_seconds": state["train_seconds"], "epoch_rates": rates,
              # median per-epoch rate without the first (warm-up) epoch, as the forcefit benchmarks report it
              "train_structures_per_s": statistics.median(rates[1:] or rates)}
    timing_path.write_text(json.dumps(result, indent=2))
    return result


def evaluate(model: Path, test: Path, md_steps: int) -> dict:
    """Test MAEs and MD speed through MACE's ASE calculator, as a user would run it."""
    from ase import units
    from ase.md.langevin import Langevin
    from mace.calculators import MACECalculator

    calc = MACECalculator(model_paths=str(model), device="cpu", default_dtype="float32")
    e_err, e_err_atom, f_err = [], [], []
    frames = ase.io.read(test, ":")
    for ref in frames:
        atoms = ref.copy()
        atoms.calc = calc
        e_err.append(abs(atoms.get_potential_energy() - ref.info["REF_energy"]))
        e_err_atom.append(e_err[-1] / len(atoms))
        f_err.append(np.abs(atoms.get_forces() - ref.arrays["REF_forces"]).ravel())
    atoms = frames[0].copy()
    atoms.calc = calc
    dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=500, friction=0.01, rng=np.random.default_rng(0))
    dyn.run(10)
    start = time.perf_counter()
    dyn.run(md_steps)
    return {"test_energy_mae_meV": 1000 * float(np.mean(e_err)),
            "test_energy_mae_meV_per_atom": 1000 * float(np.mean(e_err_atom)),
            "test_forces_mae_meV_per_A": 1000 * float(np.mean(np.concatenate(f_err))),
            "md_steps_per_s": md_steps / (time.perf_counter() - start), "n_test": len(frames)}


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("prepare")
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--e0s", required=True)
    a.add_argument("files", type=Path, nargs=3)
    a = sub.add_parser("train")
    a.add_argument("--minutes", type=float, required=True)
    a.add_argument("--threads", type=int, default=2)
    a.add_argument("--timing", type=Path, required=True)
    a.add_argument("mace_args", nargs=argparse.REMAINDER)
    a = sub.add_parser("eval")
    a.add_argument("--model", type=Path, required=True)
    a.add_argument("--test", type=Path, required=True)
    a.add_argument("--threads", type=int, default=1)
    a.add_argument("--md-steps", type=int, default=300)
    args = p.parse_args()

    # stdout carries only the JSON result; MACE logs to stdout, so send fd 1 to stderr for the run
    result_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    if args.command == "prepare":
        result = prepare(args.out, args.e0s, args.files)
    else:
        import torch

        torch.set_num_threads(args.threads)
        if args.command == "train":
            mace_args = args.mace_args[1:] if args.mace_args[:1] == ["--"] else args.mace_args
            result = train(args.minutes, args.timing, mace_args)
        else:
            result = evaluate(args.model, args.test, args.md_steps)
    print(json.dumps(result), file=result_out, flush=True)


if __name__ == "__main__":
    main()
