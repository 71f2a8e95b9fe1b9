"""How far the published DeNS targets are from the physics of the corrupted structure.

    python benchmarks/dens_label_shift.py [--frames 20] [--repeats 5] [--sigma 0.05] [--ratio 0.25]

DeNS trains a denoising structure's energy and its uncorrupted atoms' forces
against the ORIGINAL labels. This script corrupts rMD17 ethanol frames as DeNS
does (each atom with probability r, ε ~ N(0, σ²)) and labels both geometries
with GFN2-xTB (a cheap stand-in for the DFT surface; the size of the change is
what matters), printing how much the true energy and forces move: the label
noise a model sees on denoising structures unless it undoes the corruption
through the force encoding.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import ase.io
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, require_shared, save_json  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5, help="corruptions per frame")
    p.add_argument("--sigma", type=float, default=0.05)
    p.add_argument("--ratio", type=float, default=0.25)
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/dens_label_shift.json"))
    args = p.parse_args()
    from tblite.ase import TBLite

    frames = ase.io.read(require_shared("ethanol", "train.xyz"), f":{args.frames}")
    calc = TBLite(method="GFN2-xTB", verbosity=0)
    rng = np.random.default_rng(0)
    clean, moved, energy, per_atom, force_norm = [], [], [], [], []
    for frame in frames:
        a = frame.copy()
        a.calc = calc
        e0, f0 = a.get_potential_energy(), a.get_forces().copy()
        force_norm += list(np.linalg.norm(f0, axis=1))
        for _ in range(args.repeats):
            atoms = rng.random(len(a)) < args.ratio
            if not atoms.any():
                continue
            b = a.copy()
            b.calc = calc
            b.positions += rng.normal(0.0, args.sigma, (len(b), 3)) * atoms[:, None]
            d = np.linalg.norm(b.get_forces() - f0, axis=1)
            clean += list(d[~atoms])
            moved += list(d[atoms])
            energy.append(abs(b.get_potential_energy() - e0))
            per_atom.append(energy[-1] / len(b))
    row = {
        "sigma": args.sigma, "ratio": args.ratio, "corruptions": len(energy),
        "dF_uncorrupted_mean": 1e3 * np.mean(clean), "dF_uncorrupted_median": 1e3 * np.median(clean),
        "dF_corrupted_mean": 1e3 * np.mean(moved), "dE_mean_meV": 1e3 * np.mean(energy),
        "dE_mean_meV_per_atom": 1e3 * np.mean(per_atom), "F_norm_mean": 1e3 * np.mean(force_norm),
    }
    print_table("GFN2-xTB change caused by a DeNS corruption of ethanol (meV/Å, meV)", [row], [
        ("sigma", "σ Å", ".3f"), ("ratio", "r", ".2f"), ("corruptions", "corruptions", "d"),
        ("dF_uncorrupted_mean", "|ΔF| uncorrupted mean", ".0f"), ("dF_uncorrupted_median", "|ΔF| uncorrupted median", ".0f"),
        ("dF_corrupted_mean", "|ΔF| corrupted mean", ".0f"), ("dE_mean_meV", "|ΔE| meV", ".0f"),
        ("dE_mean_meV_per_atom", "|ΔE| meV/atom", ".1f"), ("F_norm_mean", "mean |F|", ".0f"),
    ])
    save_json(args.json, row)


if __name__ == "__main__":
    main()
