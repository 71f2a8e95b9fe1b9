"""Shared fixtures: tiny molecules and labelled files made here (tests never need ../shared)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

SHARED_DATA = __import__("pathlib").Path(__file__).resolve().parents[1].parent / "shared" / "data"

ETHANOL = Atoms(
    "C2OH6",
    positions=[
        [-0.0082, 0.5557, 0.0000], [1.2230, -0.3337, 0.0000], [-1.1843, -0.2483, 0.0000],
        [-0.0318, 1.2040, 0.8828], [-0.0318, 1.2040, -0.8828], [1.2232, -0.9786, 0.8832],
        [1.2232, -0.9786, -0.8832], [2.1476, 0.2491, 0.0000], [-1.9430, 0.3466, 0.0000],
    ],
)


def pseudo_label(atoms: Atoms) -> tuple[float, np.ndarray]:
    """A smooth, cheap pair potential used as 'reference' labels in tests (Morse-like)."""
    pos = atoms.get_positions()
    n = len(atoms)
    energy, forces = 0.0, np.zeros((n, 3))
    for i in range(n):
        for j in range(i + 1, n):
            d = pos[j] - pos[i]
            r = np.linalg.norm(d)
            e = np.exp(-1.5 * (r - 1.3))
            energy += (1 - e) ** 2 - 1
            de_dr = 2 * (1 - e) * 1.5 * e
            forces[i] += de_dr * d / r
            forces[j] -= de_dr * d / r
    return energy, forces


def make_frames(n: int, seed: int = 0, base: Atoms = ETHANOL, rattle: float = 0.08, config_types=("md",)) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    images = []
    for k in range(n):
        a = base.copy()
        a.positions += rng.normal(0, rattle, a.positions.shape)
        e, f = pseudo_label(a)
        a.calc = SinglePointCalculator(a, energy=e, forces=f)
        a.info["config_type"] = config_types[k % len(config_types)]
        images.append(a)
    return images


@pytest.fixture
def ethanol_xyz(tmp_path):
    """A 40-frame labelled extxyz file with two config types."""
    import ase.io

    path = tmp_path / "frames.xyz"
    ase.io.write(path, make_frames(40, config_types=("md", "rattled")), format="extxyz")
    return path


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def train_and_kill_at_epoch(config_path, epoch: int, timeout: float = 1200, batch: int = 0):
    """Train the config at ``config_path`` in a fresh process that SIGKILLs itself when batch ``batch`` of epoch
    ``epoch`` starts (a real kill: nothing gets to clean up); returns the finished process."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import os, signal
        import lightning as L
        from forcefit.config import RunConfig
        from forcefit.training.run import train

        class KillAtEpoch(L.Callback):
            def on_train_batch_start(self, trainer, module, batch, batch_idx):
                if trainer.current_epoch == {int(epoch)} and batch_idx == {int(batch)}:
                    os.kill(os.getpid(), signal.SIGKILL)

        train(RunConfig.from_yaml({str(config_path)!r}), callbacks=[KillAtEpoch()])
    """)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(script: str, name: str | None = None):
    """A script of benchmarks/ as a module (they import their siblings, so that folder is on the path meanwhile)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(name or f"{script}_bench", BENCHMARKS / f"{script}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module
