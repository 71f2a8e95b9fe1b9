"""Shared pieces of the benchmark scripts: reference-data splits, timed training, MD speed, tables."""
from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import ase.io
import numpy as np

from forcefit.atomic_file import write_text_atomic

# Spinning OpenMP threads wreck timings on a loaded 2-core machine; the MACE runner sets the same.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def require_shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        print(f"skipped: reference data {path} is not available (it lives in ../shared/data beside the project)")
        sys.exit(0)
    return path


def write_split(frames_path: Path, n_train: int, n_valid: int, seed: int, workdir: Path, n_test: int | None = None) -> dict:
    """Seeded train/valid/test files from one extxyz file; test is the rest (or n_test frames)."""
    images = ase.io.read(frames_path, ":")
    order = np.random.default_rng(seed).permutation(len(images))
    parts = {"train": order[:n_train], "valid": order[n_train : n_train + n_valid]}
    rest = order[n_train + n_valid :]
    parts["test"] = rest if n_test is None else rest[:n_test]
    workdir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, idx in parts.items():
        if len(idx) == 0:
            continue
        paths[name] = workdir / f"{name}.xyz"
        ase.io.write(paths[name], [images[k] for k in idx], format="extxyz")
    return paths


def split_for(dataset: str, n: int, seed: int, workdir: Path) -> tuple[dict, Path]:
    """Train/valid/test files and the E0 file for one dataset and training-set size."""
    if dataset == "ethanol":
        n_valid = 50 if n <= 900 else 25  # 1000 frames in all: with 950 training, 25 validate and 25 test
        return write_split(require_shared("ethanol", "train.xyz"), n, n_valid, seed, workdir), require_shared("ethanol", "isolated_atoms.xyz")
    train, test = require_shared("acac", "train_300K.xyz"), require_shared("acac", "test_MD_300K.xyz")
    if n > 450:
        raise SystemExit("acac: at most 450 training frames (50 of the 500 validate)")
    paths = write_split(train, n, 50, seed, workdir, n_test=0)
    paths["test"] = workdir / "test.xyz"
    ase.io.write(paths["test"], ase.io.read(test, ":"), format="extxyz")
    return paths, require_shared("acac", "isolated_atoms.xyz")


def train_forcefit(paths: dict, e0s: Path, out: Path, minutes: float, model: str = "painn", seed: int = 0,
                   options: dict | None = None, dens: dict | None = None, max_epochs: int = 100000, threads: int = 2,
                   training: dict | None = None, extra: dict | None = None) -> dict:
    """Train under a wall-time budget (or epochs) and return test metrics and throughput.

    ``e0s``: an isolated-atoms file or a spec such as "least_squares"; ``extra``: more top-level config
    sections (finetune, levels, ...). Resumable: a finished run leaves ``out/result.json`` and is not trained again; an
    unfinished one (killed, or cut off by a time limit) continues from its last
    checkpoint when called again with the same ``out``. Such a run's ``wall_minutes``
    counts only its last part, so compare throughput with ``train_structures_per_s``.
    """
    import forcefit
    from forcefit.training import metrics_history

    cfg = {
        "data": {"train": str(paths["train"]), "valid": str(paths["valid"]), "test": str(paths["test"]), "e0s": str(e0s)},
        "model": {"name": model, "options": options or {}},
        "training": {"max_epochs": max_epochs, "max_time": minutes, "threads": threads, "progress": False, **(training or {})},
        "seed": seed,
        "out": str(out),
    }
    if dens is not None:
        cfg["objective"] = {"kind": "dens", **dens}
    cfg.update(extra or {})
    job, done = out / "job.json", out / "result.json"
    if (job.exists() and json.loads(job.read_text()) != json.loads(json.dumps(cfg, default=str))) or (done.exists() and not job.exists()):
        raise SystemExit(f"{out} holds a run with other (or unknown) settings; use another work folder")
    if done.exists():
        return json.loads(done.read_text())
    resume = (out / "checkpoints" / "last.ckpt").exists()
    save_json(job, cfg)
    start = time.perf_counter()
    result = forcefit.train(cfg, resume=resume)
    wall = time.perf_counter() - start
    log = metrics_history.rows(out / "logs")
    rates = [float(r["structures_per_s"]) for r in log if r.get("structures_per_s")]
    epochs = max(int(r["epoch"]) for r in log) + 1
    validated = [float(r["val_forces_mae"]) for r in log if r.get("val_forces_mae")]
    m = result.metrics
    summary = {
        "test_energy_mae_meV_per_atom": m["energy_mae_per_atom"], "test_energy_mae_meV": m["energy_mae"],
        "test_forces_mae_meV_per_A": m["forces_mae"], "train_structures_per_s": float(np.median(rates[1:] or rates)),
        "epochs": epochs, "wall_minutes": wall / 60, "model_path": str(result.model_path), "resumed": resume,
        "first_val_forces_mae_meV_per_A": validated[0] if validated else None,
    }
    save_json(done, summary)
    return summary


def md_steps_per_second(model_path: str, structure_path: Path, steps: int = 300, threads: int = 1, compile: bool = False) -> float:
    """NVT Langevin (500 K, 0.5 fs) of one molecule through the ASE calculator, after a short warm-up
    (which includes the compilation when ``compile``)."""
    import torch
    from ase import units
    from ase.md.langevin import Langevin

    import forcefit

    torch.set_num_threads(threads)
    atoms = ase.io.read(structure_path, 0)
    atoms.calc = forcefit.load(model_path, compile=compile).calculator
    dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=500, friction=0.01, rng=np.random.default_rng(0))
    dyn.run(10)
    start = time.perf_counter()
    dyn.run(steps)
    return steps / (time.perf_counter() - start)


def train_job(job: dict) -> dict:
    """``train_forcefit(**job)``: a module-level function, so ``map_jobs`` can send it to another process."""
    return train_forcefit(**job)


def map_jobs(fn, jobs: list, parallel: bool):
    """Yield ``fn(job)`` for each job in order, run one after another or all at once in fresh
    processes (one each) when ``parallel``.

    A generator, so a caller can save each result as it arrives and a crash loses only the
    runs not yet finished. Spawned, so each run starts with its own torch thread setting and RNG state.
    """
    if not parallel or len(jobs) < 2:
        yield from (fn(job) for job in jobs)
        return
    with ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(fn, jobs)


def print_table(title: str, rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """rich table; columns are (key, header, format)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for _, header, _ in columns:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*[("" if row.get(k) is None else format(row[k], fmt) if fmt else str(row[k])) for k, _, fmt in columns])
    Console(width=200).print(table)


def save_json(path: Path, data) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str))  # a run's result.json is how --workdir resumes
