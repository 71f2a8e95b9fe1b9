"""The data sets of the ASTEROID benchmark: few accurate (DFT) frames, many cheap (GFN2-xTB) ones, measured costs.

    python benchmarks/asteroid_data.py [--molecules ethanol acac] [--seeds 0] [--n-accurate 25 50 100]
                                       [--md-frames 2000] [--workdir DIR]

Per molecule and seed (reference DFT data in ../shared/data; xTB labels, MD and the DFT timing made here):
- ethanol: a seeded permutation of the 1000 frames of train.xyz. Positions 50-74 validate
  (``accurate_valid.xyz``), the last 500 test (``test.xyz``, never used in any form), the other 475
  are the pool: ``accurate.xyz`` is its first n (nested: n = 25 is inside n = 50 is inside n = 100;
  with n = 50 it is the 50 DFT frames finetune.py trains on), the remaining 475 - n geometries get
  GFN2-xTB labels.
- acac: the same on the 500 frames of train_300K.xyz (test: test_MD_300K.xyz); every geometry of
  train_600K.xyz joins the cheap ones.
- both: GFN2-xTB Langevin MD (0.5 fs, friction 0.01/fs, a frame every 10 steps, the first 50 frames
  of each trajectory dropped as equilibration), one trajectory each at 300, 400, 500 and 600 K
  started from the first four accurate geometries, ``md_frames`` frames in all, labelled with
  GFN2-xTB like the rest.

Files in ``work``: ``cheap.xyz`` (xTB energies and forces, info level=gfn2), ``cheap_unlabelled.xyz``
(the MD frames alone, info temperature in K: Boltzmann samples of xTB at each temperature),
``accurate.xyz``, ``accurate_valid.xyz``, ``test.xyz`` (reference DFT, info level=dft) and
``costs.json``. Costs are measured: CPU and wall seconds per xTB label as the labelling campaign
stores them, CPU seconds of the MD (``time.process_time`` around the sampler), and DFT seconds per
frame from labelling two accurate frames with the engine's PySCF DFT at the reference level, one
thread. The campaigns, MD trajectories and DFT timing live in ``cache`` (the CLI: one per molecule
and seed, shared by the n variants) and are reused by a rerun; a finished ``work`` is read back.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # costs are per core: one thread everywhere

import ase.io
import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, require_shared, save_json  # noqa: E402

from forcefit.atomic_file import atomic_path  # noqa: E402

MOLECULES = ("ethanol", "acac")
N_VALID = 25
VALID_SLOTS = slice(50, 75)  # positions of the permutation that validate (as in finetune.py)
ETHANOL_TEST = 500
TEMPERATURES = (300, 400, 500, 600)
EVERY, TIMESTEP, FRICTION, BURN_IN = 10, 0.5, 0.01, 50  # steps per frame, fs, 1/fs, frames dropped per trajectory
DFT_TIMING_FRAMES = 2
ASSUMED_DFT_S = {"ethanol": 7.0}  # s per frame on 2 cores, ../shared/data/README.md (used without PySCF)
MD_FRAMES = 2000  # xTB MD frames in the cheap set by default (the ASTEROID issue allows up to 5000)
FILES = ("cheap", "cheap_unlabelled", "accurate", "accurate_valid", "test")


def _frame(atoms, source: str, index: int, config_type: str):
    """A copy with the reference label (if any) and only the info this benchmark sets."""
    out = atoms.copy()
    out.info = {"config_type": config_type, "source": source, "index": int(index)}
    if atoms.calc is not None:
        out.calc = SinglePointCalculator(out, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
    return out


def reference_split(molecule: str, seed: int) -> dict:
    """Reference frames: ``pool`` (accurate candidates, in order), ``valid``, ``test``, ``extra`` (cheap only)."""
    rng = np.random.default_rng(seed)
    if molecule == "ethanol":
        frames = ase.io.read(require_shared("ethanol", "train.xyz"), ":")
        order = rng.permutation(len(frames))
        kept, test_idx, extra = order[:-ETHANOL_TEST], order[-ETHANOL_TEST:], []
        test = [_frame(frames[k], "ethanol/train.xyz", k, "test") for k in test_idx]
        name = "ethanol/train.xyz"
    else:
        frames = ase.io.read(require_shared("acac", "train_300K.xyz"), ":")
        order = rng.permutation(len(frames))
        kept = order
        test = [_frame(a, "acac/test_MD_300K.xyz", k, "test") for k, a in enumerate(ase.io.read(require_shared("acac", "test_MD_300K.xyz"), ":"))]
        extra = [_frame(a, "acac/train_600K.xyz", k, "ref_600K") for k, a in enumerate(ase.io.read(require_shared("acac", "train_600K.xyz"), ":"))]
        name = "acac/train_300K.xyz"
    pool_idx = np.concatenate([kept[:VALID_SLOTS.start], kept[VALID_SLOTS.stop:]])
    return {"pool": [_frame(frames[k], name, k, "ref") for k in pool_idx],
            "valid": [_frame(frames[k], name, k, "valid") for k in kept[VALID_SLOTS]],
            "test": test, "extra": extra}


def _md_counts(md_frames: int) -> list[int]:
    base, rest = divmod(md_frames, len(TEMPERATURES))
    return [base + (k < rest) for k in range(len(TEMPERATURES))]


def sample_trajectories(starts: list, seed: int, md_frames: int, cache: Path, say) -> tuple[list, dict]:
    """xTB Langevin MD, one trajectory per temperature; each kept as an xyz file and its timing (resumable)."""
    from forcefit.labeling import sample_md

    frames, costs = [], {}
    for k, (temperature, n) in enumerate(zip(TEMPERATURES, _md_counts(md_frames))):
        stem = cache / "md" / f"md_{temperature}K_{n}frames_seed{seed}"
        xyz, meta = stem.with_suffix(".xyz"), stem.with_suffix(".json")
        if not meta.exists():
            say(f"MD {temperature} K: {(n + BURN_IN) * EVERY} steps from accurate frame {k}")
            cpu0, wall0 = time.process_time(), time.perf_counter()
            traj = sample_md(starts[k], method="gfn2", temperature=temperature, steps=(n + BURN_IN) * EVERY, every=EVERY,
                             timestep=TIMESTEP, friction=FRICTION, seed=10 * seed + k, optimise_first=False)
            cost = {"frames": n, "steps": (n + BURN_IN) * EVERY, "cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - wall0}
            with atomic_path(xyz) as tmp:
                ase.io.write(tmp, traj[BURN_IN:], format="extxyz")
            save_json(meta, cost)
        cost = json.loads(meta.read_text())
        traj = ase.io.read(xyz, ":")  # the campaign holds these same (rounded) positions
        say(f"MD {temperature} K: {len(traj)} frames, {cost['cpu_s']:.1f} CPU s")
        frames += traj
        costs[str(temperature)] = cost
    return frames, costs


def campaign_labels(db: Path, level: str) -> dict:
    """structure hash -> energy, forces, cpu and wall seconds of each label at ``level``."""
    from ase.db import connect

    from forcefit.data.campaign_schema import level_keys

    keys, out = level_keys(level), {}
    with connect(str(db), use_lock_file=False) as con:
        for row in con.select(**{keys.has: 1}):
            lab = row.data[keys.label]
            out[row.structure_hash] = {"energy": float(lab["energy"]), "forces": np.asarray(lab["forces"], dtype=float),
                                       "cpu_s": float(lab["cpu_seconds"]), "wall_s": float(lab["wall_seconds"])}
    return out


def label_campaign(db: Path, structures: list, method: str, say, level: str | None = None, **settings) -> dict:
    """Add ``structures`` to the campaign ``db``, label what is pending (one worker, one thread), return its labels."""
    from forcefit.labeling import Campaign, label

    camp = Campaign(db)
    camp.add([_plain(a) for a in structures])
    report = label(camp, method, level=level, workers=1, threads=1, progress=False, **settings)
    say(str(report))
    return campaign_labels(db, level or method)


def _plain(atoms):
    out = atoms.copy()
    out.calc = None
    return out


def dft_settings(molecule: str) -> tuple[str, dict, str]:
    """Level name, PySCF settings and description of the reference level (D3(BJ) for acac if dftd3 is installed)."""
    settings = {"xc": "PBE", "basis": "def2-svp", "density_fit": True, "grid_level": 3}
    if molecule == "acac" and importlib.util.find_spec("dftd3") is not None:
        return "pbe_d3bj_svp", {**settings, "dispersion": "d3bj"}, "PBE+D3(BJ)/def2-SVP"
    note = " (reference: UHF PBE+D3; measured restricted, closed shell, without D3: dftd3 is not installed)" if molecule == "acac" else ""
    return "pbe_svp", settings, "PBE/def2-SVP" + note


def dft_cost(molecule: str, frames: list, cache: Path, say) -> dict:
    """Seconds per DFT label, measured on ``frames`` by the engine's PySCF labelling (cached in a campaign)."""
    from forcefit.labeling.campaign import structure_hash

    level, settings, what = dft_settings(molecule)
    if importlib.util.find_spec("pyscf") is None:
        s = ASSUMED_DFT_S.get(molecule)
        return {"measured": False, "assumed": s is not None, "cpu_s_per_label": s, "wall_s_per_label": s,
                "method": what, "note": "PySCF is not installed: " + ("7 s/frame from ../shared/data/README.md (assumed)" if s else "no figure")}
    labels = campaign_labels(cache / "dft_timing.db", level) if (cache / "dft_timing.db").exists() else {}
    if any(structure_hash(a) not in labels for a in frames):
        say(f"DFT timing: {what} (PySCF, density fitting, grid 3, 1 thread) on {len(frames)} frames")
        labels = label_campaign(cache / "dft_timing.db", frames, "dft", say, level=level, **settings)
    got = [(labels[structure_hash(a)], a) for a in frames if structure_hash(a) in labels]
    mad = np.mean([np.abs(lab["forces"] - a.get_forces()).mean() for lab, a in got]) * 1000
    return {"measured": True, "method": f"{what}, PySCF density fitting, grid level 3, 1 thread, forcefit labelling engine",
            "frames": len(got), "cpu_s_per_label": float(np.mean([lab["cpu_s"] for lab, _ in got])),
            "wall_s_per_label": float(np.mean([lab["wall_s"] for lab, _ in got])),
            "force_mad_vs_reference_meV_per_A": float(mad)}


def _labelled(atoms, lab: dict, level: str):
    out = _plain(atoms)
    out.info["level"] = level
    out.calc = SinglePointCalculator(out, energy=lab["energy"], forces=lab["forces"])
    return out


def _write(path: Path, images: list, level: str | None = None) -> None:
    if level:
        for a in images:
            a.info["level"] = level
    with atomic_path(path) as tmp:
        ase.io.write(tmp, images, format="extxyz")


def build_sets(molecule: str, seed: int, work: Path, n_accurate: int = 50, md_frames: int = MD_FRAMES, cache: Path | None = None) -> dict:
    """Write the ASTEROID sets of one molecule and seed into ``work``; return their paths and measured costs.

    ``cache`` (default ``work``) keeps the xTB campaign, the MD trajectories and the DFT timing, so
    variants with other ``n_accurate`` share them. A ``work`` holding a finished build with the same
    settings is read back; anything unfinished resumes.
    """
    from forcefit.labeling.campaign import structure_hash

    work, cache = Path(work), Path(cache or work)
    settings = {"molecule": molecule, "seed": seed, "n_accurate": n_accurate, "md_frames": md_frames, "n_valid": N_VALID,
                "temperatures_K": list(TEMPERATURES), "md_every_steps": EVERY, "md_timestep_fs": TIMESTEP,
                "md_friction_per_fs": FRICTION, "md_burn_in_frames": BURN_IN}
    paths = {name: work / f"{name}.xyz" for name in FILES}
    done = work / "costs.json"

    def say(msg):
        print(f"[{molecule} seed {seed} n {n_accurate}] {msg}", flush=True)

    if done.exists():
        old = json.loads(done.read_text())
        if old.get("settings") == settings and all(p.exists() for p in paths.values()):
            say(f"done before, reading {done}")
            return old
    ref = reference_split(molecule, seed)
    if not len(TEMPERATURES) <= n_accurate <= len(ref["pool"]):
        raise SystemExit(f"{molecule}: n_accurate must be {len(TEMPERATURES)}..{len(ref['pool'])}")
    accurate, cheap_ref = ref["pool"][:n_accurate], ref["pool"][n_accurate:] + ref["extra"]
    md, md_cost = sample_trajectories(ref["pool"][:len(TEMPERATURES)], seed, md_frames, cache, say)

    say(f"GFN2-xTB labels: {len(ref['pool']) + len(ref['extra'])} reference geometries + {len(md)} MD frames")
    xtb = label_campaign(cache / "gfn2.db", ref["pool"] + ref["extra"] + md, "gfn2", say)
    cheap, cheap_labels = [], []
    for a in cheap_ref + md:
        lab = xtb.get(structure_hash(a))
        if lab is not None:
            cheap.append(_labelled(a, lab, "gfn2"))
            cheap_labels.append(lab)
    missing = len(cheap_ref) + len(md) - len(cheap)
    if missing:
        say(f"warning: {missing} cheap structures have no xTB label (failed twice) and are left out")
    check = [(xtb[structure_hash(a)]["forces"], a.get_forces()) for a in accurate if structure_hash(a) in xtb]
    xtb_mae = float(np.mean([np.abs(f - g).mean() for f, g in check]))

    dft = dft_cost(molecule, accurate[:DFT_TIMING_FRAMES], cache, say)
    _write(paths["cheap"], cheap)
    _write(paths["cheap_unlabelled"], [_plain(a) for a in md])
    _write(paths["accurate"], accurate, "dft")
    _write(paths["accurate_valid"], ref["valid"], "dft")
    _write(paths["test"], ref["test"], "dft")

    label_cpu = float(sum(lab["cpu_s"] for lab in cheap_labels))
    md_cpu = float(sum(c["cpu_s"] for c in md_cost.values()))
    per_dft = dft["cpu_s_per_label"]
    costs = {
        "settings": settings,
        "files": {name: str(p) for name, p in paths.items()},
        "cheap": {
            "labels": len(cheap), "reference_geometries": sum(not a.info["config_type"].startswith("md") for a in cheap),
            "md_frames": sum(a.info["config_type"].startswith("md") for a in cheap), "unlabellable": missing,
            "label_cpu_s": label_cpu, "label_wall_s": float(sum(lab["wall_s"] for lab in cheap_labels)),
            "label_cpu_s_per_label": label_cpu / max(1, len(cheap_labels)),
            "md_sampling_cpu_s": md_cpu, "md_sampling_wall_s": float(sum(c["wall_s"] for c in md_cost.values())),
            "md_per_temperature": md_cost, "total_cpu_s": label_cpu + md_cpu,
            "source": "label seconds: the gfn2 campaign's per-label cpu/wall seconds (1 thread, in process); "
                      "MD: time.process_time around sample_md, equilibration frames included; the campaign relabels the MD "
                      "frames (the sampler's own xTB forces are not reused), so they cost both",
        },
        "accurate": {
            "labels": n_accurate, "valid_labels": len(ref["valid"]), "test_frames": len(ref["test"]),
            "dft_cpu_s_per_label": per_dft, "dft_wall_s_per_label": dft["wall_s_per_label"],
            "total_cpu_s": None if per_dft is None else per_dft * n_accurate,
            "total_cpu_s_with_valid": None if per_dft is None else per_dft * (n_accurate + len(ref["valid"])),
            "dft_cost": dft,
        },
        "xtb_vs_dft_force_mae_eV_per_A": xtb_mae,
        "xtb_vs_dft_frames": len(check),
        "cheap_total_over_accurate_total": None if per_dft is None else (label_cpu + md_cpu) / (per_dft * n_accurate),
        "campaigns": {"gfn2": str(cache / "gfn2.db"), "dft_timing": str(cache / "dft_timing.db")},
    }
    save_json(done, costs)
    say(f"cheap {len(cheap)} ({label_cpu:.1f} CPU s labels + {md_cpu:.1f} CPU s MD), accurate {n_accurate} "
        f"(DFT {per_dft} CPU s each), xTB-DFT force MAE {xtb_mae:.3f} eV/Å")
    return costs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--molecules", nargs="+", default=list(MOLECULES), choices=MOLECULES)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--n-accurate", type=int, nargs="+", default=[50], help="accurate training frames (nested sets)")
    p.add_argument("--md-frames", type=int, default=MD_FRAMES, help="xTB MD frames in all, over the four temperatures")
    p.add_argument("--workdir", type=Path, default=None, help="sets in DIR/<molecule>_<seed>/n<N>, shared caches in DIR/<molecule>_<seed>")
    args = p.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="asteroid_data_"))
    rows = []
    for molecule in args.molecules:
        for seed in args.seeds:
            cache = root / f"{molecule}_{seed}"
            for n in args.n_accurate:
                t0 = time.perf_counter()
                c = build_sets(molecule, seed, cache / f"n{n}", n_accurate=n, md_frames=args.md_frames, cache=cache)
                rows.append({"molecule": molecule, "seed": seed, "n": n, "cheap": c["cheap"]["labels"],
                             "label_cpu": c["cheap"]["label_cpu_s"], "md_cpu": c["cheap"]["md_sampling_cpu_s"],
                             "dft_s": c["accurate"]["dft_cpu_s_per_label"], "mae": c["xtb_vs_dft_force_mae_eV_per_A"],
                             "wall": time.perf_counter() - t0})
    print_table(f"ASTEROID data sets in {root}", rows, [
        ("molecule", "molecule", ""), ("seed", "seed", "d"), ("n", "accurate", "d"), ("cheap", "cheap labels", "d"),
        ("label_cpu", "xTB label CPU s", ".1f"), ("md_cpu", "MD CPU s", ".1f"), ("dft_s", "DFT CPU s/label", ".1f"),
        ("mae", "xTB-DFT F MAE eV/Å", ".3f"), ("wall", "this run s", ".0f"),
    ])


if __name__ == "__main__":
    main()
