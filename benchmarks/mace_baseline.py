"""MACE baseline for the wall-time-budget benchmarks, run in its own virtual environment.

    python benchmarks/mace_baseline.py --train a.xyz --valid v.xyz --test t.xyz --e0s iso.xyz --minutes 10 --workdir /tmp/x

MACE pins an old e3nn that would break forcefit, so it lives in benchmarks/.mace-venv
(made on first use, reused afterwards) and this module only talks to it through
subprocesses running benchmarks/mace_worker.py: importing this file never imports
torch, ase or mace, so the forcefit benchmark scripts can call run_mace() directly.

The model is deliberately small and CPU-sized (32x0e+32x1o, r_max 5 Å, float32,
batch size 5, EMA 0.99, AMSGrad). It is ScaleShiftMACE: with isolated-atom E0s the
rest of the energy is about -4.7 eV/atom for ethanol, and plain "MACE" (shift 0)
spends its first epochs just learning that offset; ScaleShiftMACE starts from the
training-set mean, like forcefit's Potential (E0 + scale/shift).

MACE has no wall-time option; the worker enforces the budget inside MACE's own
training loop (see mace_worker.py), so MACE's normal end of training (best
checkpoint -> .model file) still runs.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".mace-venv"
WORKER = HERE / "mace_worker.py"
# the CPU wheel in pip's find-links; "+cpu" makes pip fail rather than fetch PyPI's CUDA build of 2.13.0
# (e.g. for a Python without a local wheel), and any other version would pull GBs of CUDA wheels
TORCH = "torch==2.13.0+cpu"
MACE = "mace-torch==0.3.16"  # pinned: the worker patches mace.tools.train internals of this version


def ensure_venv(log=print) -> Path:
    """Make benchmarks/.mace-venv once and return its python.

    torch goes in first, alone, so pip takes the local CPU wheel; mace-torch then
    installs under a constraints file pinning that torch, so its resolver can never
    swap in another (CUDA) build. A marker file is written last, so an interrupted
    install is redone from scratch rather than half-used; it names the pins, so changing
    them here rebuilds the venv.
    """
    python, marker = VENV / "bin" / "python", VENV / ".installed"
    if marker.exists() and marker.read_text().startswith(f"{TORCH} {MACE} "):
        return python
    shutil.rmtree(VENV, ignore_errors=True)
    start = time.perf_counter()
    log(f"creating {VENV} ({TORCH}, {MACE}); one-off, takes a few minutes")
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, TORCH], check=True)
    constraints = VENV / "constraints.txt"
    constraints.write_text(TORCH + "\n")
    subprocess.run([*pip, "-c", str(constraints), MACE], check=True)
    marker.write_text(f"{TORCH} {MACE} installed in {time.perf_counter() - start:.0f} s\n")
    log(marker.read_text().strip())
    return python


def _worker(python: Path, args: list, threads: int, log_path: Path, timeout: float | None = None) -> dict:
    """Run one mace_worker.py command in the MACE venv; its last stdout line is a JSON result."""
    # PASSIVE: on a shared, busy 2-core machine, OpenMP threads spin-waiting for each other made
    # 2-thread MACE training steps 5-20x slower than 1 thread; passive waiting removes that
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)  # keep the forcefit venv's packages out of the MACE venv
    with open(log_path, "w") as log:
        proc = subprocess.run([str(python), str(WORKER), *map(str, args)], stdout=subprocess.PIPE, stderr=log,
                              text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        tail = "".join(open(log_path).readlines()[-30:])
        raise RuntimeError(f"mace_worker {args[0]} failed (exit {proc.returncode}); see {log_path}:\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_mace(train_xyz, valid_xyz, test_xyz, e0s_xyz_or_dict, minutes: float, seed: int = 0,
             workdir: str | Path = "mace_run", threads: int = 2, md_steps: int = 300, md_threads: int = 1,
             foundation_model: str | Path | None = None, replay: tuple | None = None) -> dict:
    """Train MACE for `minutes` of training-loop wall time, then test it and time MD through its ASE calculator.

    e0s_xyz_or_dict: an extxyz of isolated atoms (energy per element), a {Z: eV} dict, or "average".
    foundation_model: a MACE .model file to fine-tune (MACE's own ``--foundation_model``, single head:
    ``--multiheads_finetuning=False``; the architecture then comes from that file).
    replay: (train, valid) frames the foundation model was trained on, for MACE's multi-head fine-tuning
    (``--multiheads_finetuning=True --pt_train_file``: a ``pt_head`` keeps fitting them beside the new head).
    It runs at this function's learning rate and EMA like every other MACE run here (``--force_mh_ft_lr``:
    MACE's multi-head defaults, lr 1e-4 and EMA 0.99999, are sized for days of foundation-model fine-tuning,
    and at EMA 0.99999 a 10-minute run would barely move the evaluated weights off the foundation's).
    e0s "estimated" (MACE's E0s fitted to the foundation model's predictions on the training frames)
    needs a foundation model.
    md_threads defaults to 1 to match common.md_steps_per_second, which times the forcefit models.
    Returns test energy/force MAE, training structures/s (median per-epoch rate, first epoch
    excluded, as for forcefit), MD steps/s for the first test molecule, epochs, n_train, wall_minutes.
    """
    if replay and not foundation_model:
        raise ValueError("replay (multi-head fine-tuning) needs a foundation_model")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    python = ensure_venv()
    if isinstance(e0s_xyz_or_dict, dict):
        e0s = json.dumps({int(z): float(e) for z, e in e0s_xyz_or_dict.items()})
    elif str(e0s_xyz_or_dict) in ("average", "estimated"):
        e0s = str(e0s_xyz_or_dict)
    else:
        e0s = Path(e0s_xyz_or_dict).resolve()
    prep = _worker(python, ["prepare", "--out", workdir / "data", "--e0s", e0s,
                            *[Path(p).resolve() for p in (train_xyz, valid_xyz, test_xyz)]], threads, workdir / "prepare.log")
    start = time.perf_counter()
    train = _worker(python, ["train", "--minutes", minutes, "--threads", threads, "--timing", workdir / "timing.json", "--",
                             "--name=mace", f"--work_dir={workdir}", f"--seed={seed}",
                             f"--train_file={prep['train']}", f"--valid_file={prep['valid']}",
                             "--energy_key=REF_energy", "--forces_key=REF_forces", f"--E0s={prep['e0s']}",
                             "--model=ScaleShiftMACE", "--hidden_irreps=32x0e+32x1o", "--r_max=5.0", "--default_dtype=float32",
                             "--device=cpu", "--batch_size=5", "--valid_batch_size=5", "--max_num_epochs=1000000",
                             "--ema", "--ema_decay=0.99", "--amsgrad", "--plot=False", "--save_cpu",
                             *foundation_args(foundation_model, replay, workdir, threads, python)],
                    threads, workdir / "train.log", timeout=minutes * 60 + 1800)
    wall = time.perf_counter() - start
    model = workdir / "mace.model"
    ev = _worker(python, ["eval", "--model", model, "--test", prep["test"], "--threads", md_threads,
                          "--md-steps", md_steps], md_threads, workdir / "eval.log")
    return {**ev, "train_structures_per_s": train["train_structures_per_s"], "epochs": train["epochs"],
            "first_validations": validation_history(workdir / "train.log"),
            "n_train": prep["n_train"], "wall_minutes": wall / 60, "train_minutes": train["train_seconds"] / 60,
            "model_path": str(model)}


# MACE's per-head validation line: "Initial: head: Default, loss=..., RMSE_E_per_atom= 8.38 meV, RMSE_F= 402.37 meV / A"
_VALIDATION = re.compile(r"(Initial|Epoch (\d+)): head: (\S+), loss=\S+, RMSE_E_per_atom=\s*([-\d.eE+]+) meV, "
                         r"RMSE_F=\s*([-\d.eE+]+) meV / A")


def validation_history(log: Path, epochs: int = 10) -> list[dict]:
    """The validations MACE logged in ``log`` (its train.log) before training and in its first ``epochs`` epochs, in
    order: epoch (None before training), head, energy RMSE per atom and force RMSE, so a result records how a run
    started (a fine-tune that starts off or blows up), not only where it ended."""
    if not Path(log).exists():
        return []
    found = [{"epoch": None if m[2] is None else int(m[2]), "head": m[3], "energy_rmse_meV_per_atom": float(m[4]),
              "forces_rmse_meV_per_A": float(m[5])} for m in _VALIDATION.finditer(Path(log).read_text())]
    return [v for v in found if v["epoch"] is None or v["epoch"] < epochs]


def foundation_args(foundation_model, replay, workdir: Path, threads: int, python: Path | None = None) -> list[str]:
    """MACE's fine-tuning arguments: single head, or multi-head with the replayed frames (keys made MACE's by ``prepare``,
    run by ``python``, the MACE venv's interpreter that ``run_mace`` already holds)."""
    if not foundation_model:
        return []
    args = [f"--foundation_model={Path(foundation_model).resolve()}"]
    if not replay:
        return [*args, "--multiheads_finetuning=False"]
    pt = _worker(python or ensure_venv(), ["prepare", "--out", workdir / "replay", "--e0s", "average",
                          *[Path(p).resolve() for p in (*replay, replay[1])]], threads, workdir / "prepare_replay.log")
    return [*args, "--multiheads_finetuning=True", f"--pt_train_file={pt['train']}", f"--pt_valid_file={pt['valid']}",
            "--force_mh_ft_lr=True"]


def run_mace_once(train_xyz, valid_xyz, test_xyz, e0s_xyz_or_dict, minutes: float, workdir: str | Path, **kw) -> dict:
    """``run_mace``, or the result it left in ``workdir/summary.json`` (so a benchmark rerun reads a finished arm back)."""
    from common import save_json

    done = Path(workdir) / "summary.json"
    if done.exists():
        return json.loads(done.read_text())
    result = run_mace(train_xyz, valid_xyz, test_xyz, e0s_xyz_or_dict, minutes, workdir=workdir, **kw)
    save_json(done, result)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", required=True)
    p.add_argument("--valid", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--e0s", required=True, help="isolated-atoms extxyz, a JSON {Z: eV} dict, or 'average'")
    p.add_argument("--minutes", type=float, default=10.0, help="training wall-time budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", required=True)
    a = p.parse_args()
    e0s = json.loads(a.e0s) if a.e0s.lstrip().startswith("{") else a.e0s
    print(json.dumps(run_mace(a.train, a.valid, a.test, e0s, a.minutes, a.seed, a.workdir, a.threads), indent=2))


if __name__ == "__main__":
    main()
