"""Two models on the same frames, frame by frame, with a bootstrap interval on the relative change.

    python benchmarks/paired_comparison.py BASELINE.pt OTHER.pt FRAMES.xyz [MORE.xyz ...] [--resamples 10000] [--json OUT]

A test set of 25 frames (ethanol950's) gives one number per model; whether a
5-10% difference between two models is more than the choice of frames needs the
spread. Each model predicts every frame once; the frames are then resampled
with replacement (the same draw for both models, so the comparison stays
paired) and the relative change of the mean error, OTHER / BASELINE - 1, is
recomputed per draw. Prints, per file and for all files together, both models'
force MAE (meV/Å) and energy MAE (meV/atom), the change, its 95% bootstrap
interval and the share of frames where OTHER is better.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import print_table, save_json

from forcefit.data import validate_frames
from forcefit.data.errors import DataError
from forcefit.data.readers import read_frames
from forcefit.evaluate import predict
from forcefit.model_file import ModelFileError, load_model


def per_frame_errors(potential, frames: list) -> dict[str, np.ndarray]:
    """Per frame: summed |force error| (meV/Å) and its component count, |energy error| per atom (meV/atom)."""
    pred = predict(potential, frames)
    return {
        "force_sum": np.array([1e3 * np.abs(np.asarray(p) - np.asarray(f.forces)).sum() for p, f in zip(pred["forces"], frames)]),
        "force_count": np.array([3.0 * f.n_atoms for f in frames]),
        "energy": np.array([1e3 * abs(e - f.energy) / f.n_atoms for e, f in zip(pred["energy"], frames)]),
    }


def paired_change(base: np.ndarray, other: np.ndarray, weight: np.ndarray, resamples: int, rng: np.random.Generator) -> dict:
    """Relative change of sum(error)/sum(weight), other/base - 1 in %, with a paired percentile bootstrap interval.

    Force MAE is summed error over summed component count, as forcefit's
    metrics compute it, so frames of different sizes weigh by their atoms.
    """
    draws = rng.integers(0, len(base), size=(resamples, len(base)))
    changes = 100 * (other[draws].sum(axis=1) / base[draws].sum(axis=1) - 1)
    lo, hi = np.percentile(changes, [2.5, 97.5])
    return {"base": float(base.sum() / weight.sum()), "other": float(other.sum() / weight.sum()),
            "change_pct": float(100 * (other.sum() / base.sum() - 1)), "ci_low_pct": float(lo), "ci_high_pct": float(hi),
            "other_better_frames": float(np.mean(other < base))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("baseline", type=Path)
    p.add_argument("other", type=Path)
    p.add_argument("frames", type=Path, nargs="+", help="extended XYZ (or any format forcefit reads) with energy and forces")
    p.add_argument("--resamples", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if args.resamples < 1:
        p.error("--resamples must be at least 1")
    rng = np.random.default_rng(args.seed)
    models = [load_model(args.baseline), load_model(args.other)]
    errors: dict[str, tuple[dict, dict]] = {}
    for path in args.frames:
        frames = read_frames(path)
        for model in models:  # energy and forces on every frame, elements both models know: file, frame and field on failure
            validate_frames(frames, str(path), species=model.species)
        errors[str(path)] = tuple(per_frame_errors(model, frames) for model in models)
    if len(errors) > 1:
        errors["all files"] = tuple({k: np.concatenate([e[m][k] for e in errors.values()]) for k in ("force_sum", "force_count", "energy")}
                                    for m in (0, 1))
    rows = []
    for name, (base, other) in errors.items():
        force = paired_change(base["force_sum"], other["force_sum"], base["force_count"], args.resamples, rng)
        energy = paired_change(base["energy"], other["energy"], np.ones_like(base["energy"]), args.resamples, rng)
        rows.append({"frames": name, "n": len(base["energy"]), **{f"F_{k}": v for k, v in force.items()},
                     **{f"E_{k}": v for k, v in energy.items()}})
    columns = [("frames", "frames", ""), ("n", "n", "d"),
               ("F_base", "F MAE base", ".2f"), ("F_other", "F MAE other", ".2f"), ("F_change_pct", "ΔF %", "+.1f"),
               ("F_ci_low_pct", "95% low", "+.1f"), ("F_ci_high_pct", "95% high", "+.1f"), ("F_other_better_frames", "frames other better", ".2f"),
               ("E_base", "E MAE base", ".3f"), ("E_other", "E MAE other", ".3f"), ("E_change_pct", "ΔE %", "+.1f"),
               ("E_ci_low_pct", "95% low", "+.1f"), ("E_ci_high_pct", "95% high", "+.1f")]
    print_table(f"{args.other} against {args.baseline} (paired bootstrap, {args.resamples} resamples)", rows, columns)
    print("(MAE in meV/Å and meV/atom; negative Δ means the second model is better)")
    if args.json:
        save_json(args.json, {"baseline": str(args.baseline), "other": str(args.other), "rows": rows})


if __name__ == "__main__":
    try:
        main()
    except (DataError, ModelFileError) as err:  # already names the file (and frame, field): one line, no traceback
        raise SystemExit(f"error: {err}") from None
