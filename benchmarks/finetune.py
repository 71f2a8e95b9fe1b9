"""Fine-tuning from cheap labels: pretrain on GFN2-xTB, fine-tune on 50 DFT frames, against DFT-only and multi-level.

    python benchmarks/finetune.py [--molecules acac ethanol] [--pretrain-minutes 6] [--finetune-minutes 5]
                                  [--seeds 0] [--workdir DIR] [--json benchmarks/results/finetune.json]

Per molecule (reference data in ../shared/data; the xTB labels are made here by the labelling engine):
- acac: the 1000 geometries of train_300K.xyz + train_600K.xyz; 50 DFT frames of train_300K.xyz
  train, 25 others validate; the other 950 geometries get GFN2-xTB labels; test: test_MD_300K.xyz.
- ethanol: 50 DFT frames of train.xyz train, 25 validate, 450 other geometries get GFN2-xTB labels,
  the remaining 475 test (never seen in any form; the issue asked for 500, but 25 validation frames
  at DFT level must come from somewhere, and they are not among the xTB geometries either).

Arms, all equivariant-ace with the same options and seed:
- ``accurate-only``: the 50 DFT frames, --finetune-minutes.
- ``pretrain (xTB only)``: the xTB frames, --pretrain-minutes (its DFT test error is reported too).
- ``finetune all`` / ``finetune freeze-backbone`` / ``finetune backbone-lr=0.1``: from the pretrained
  model file, --finetune-minutes each, E0s refitted to DFT from the model's own predictions.
- ``multi-level``: one backbone with a gfn2 and a dft head trained jointly on both sets for
  pretrain + finetune minutes (the two stages' budget together), predicting dft.
Every run validates each epoch; ``first_val`` is the validation force MAE after the first epoch
(fine-tuning must not diverge). Runs of a pair train side by side, one thread each (--parallel).
A run folder that finished is read back, an unfinished one resumes (--workdir).

``--mace`` adds MACE (mace-torch 0.3.16, benchmarks/mace_baseline.py) side by side: trained on the
50 DFT frames alone (--finetune-minutes), and pretrained on the same xTB frames (--pretrain-minutes)
then fine-tuned with its own ``--foundation_model`` option (--finetune-minutes).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import ase.io
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import map_jobs, print_table, require_shared, save_json, train_job  # noqa: E402

OPTIONS: dict = {}  # equivariant-ace defaults, as in the MACE comparison
MOLECULES = ("acac", "ethanol")


def _plain(images):
    out = []
    for a in images:
        b = a.copy()
        b.calc = None
        b.info = {}
        out.append(b)
    return out


def _tag(images, level: str):
    for a in images:
        a.info["level"] = level
    return images


def make_sets(molecule: str, seed: int, work: Path) -> dict:
    """DFT train/valid/test files and GFN2-xTB labels of the other geometries (labelled once, resumably)."""
    work.mkdir(parents=True, exist_ok=True)
    paths = {k: work / f"{k}.xyz" for k in ("dft_train", "dft_valid", "test", "xtb", "xtb_valid", "mixed")}
    if all(p.exists() for p in paths.values()):
        return paths
    rng = np.random.default_rng(seed)
    if molecule == "acac":
        first = ase.io.read(require_shared("acac", "train_300K.xyz"), ":")
        second = ase.io.read(require_shared("acac", "train_600K.xyz"), ":")
        order = rng.permutation(len(first))
        dft_train = [first[k] for k in order[:50]]
        dft_valid = [first[k] for k in order[50:75]]
        cheap = [first[k] for k in order[50:]] + second  # 950 geometries (the 25 validation ones among them)
        test = ase.io.read(require_shared("acac", "test_MD_300K.xyz"), ":")
    else:
        frames = ase.io.read(require_shared("ethanol", "train.xyz"), ":")
        order = rng.permutation(len(frames))
        dft_train = [frames[k] for k in order[:50]]
        dft_valid = [frames[k] for k in order[50:75]]
        cheap = [frames[k] for k in order[75:525]]  # 450 geometries
        test = [frames[k] for k in order[525:]]  # 475 never seen
    xtb = label_gfn2(_plain(cheap), work / "xtb.db")
    cut = max(1, len(xtb) // 20)  # 5% of the xTB frames validate the pretraining
    ase.io.write(paths["xtb_valid"], _tag(xtb[:cut], "gfn2"), format="extxyz")
    ase.io.write(paths["xtb"], _tag(xtb[cut:], "gfn2"), format="extxyz")
    ase.io.write(paths["dft_train"], _tag(dft_train, "dft"), format="extxyz")
    ase.io.write(paths["dft_valid"], _tag(dft_valid, "dft"), format="extxyz")
    ase.io.write(paths["test"], _tag(test, "dft"), format="extxyz")
    ase.io.write(paths["mixed"], _tag(xtb[cut:], "gfn2") + _tag(dft_train, "dft"), format="extxyz")
    return paths


def label_gfn2(images, db: Path):
    """GFN2-xTB energies and forces through a labelling campaign (resumes where a killed one stopped)."""
    from forcefit.labeling import Campaign, label

    camp = Campaign(db)
    camp.add(images)
    label(camp, "gfn2", progress=True)
    frames = camp.frames("gfn2")
    return [f.to_atoms() for f in frames]


def xtb_cpu_seconds(db: Path) -> float | None:
    from forcefit.labeling import Campaign

    level = Campaign(db).info()["levels"].get("gfn2")
    return level["cpu_total"] if level else None


def mace_arms(paths: dict, e0s: Path, run: Path, seed: int, args) -> dict:
    """MACE on the DFT frames alone, and MACE pretrained on the xTB frames then fine-tuned with --foundation_model.

    Each arm leaves its result JSON in its folder and is read back when called again."""
    from mace_baseline import run_mace_once

    def once(name, *a, **kw):
        r = run_mace_once(*a, workdir=run / name, seed=seed, threads=args.threads, md_steps=0, **kw)
        return {"test_forces_mae_meV_per_A": r["test_forces_mae_meV_per_A"], "test_energy_mae_meV_per_atom": r["test_energy_mae_meV_per_atom"],
                "epochs": r["epochs"], "wall_minutes": r["wall_minutes"], "first_val_forces_mae_meV_per_A": None,
                "model_path": r["model_path"]}

    from concurrent.futures import ThreadPoolExecutor

    # side by side (each run is its own process): DFT-only, and pretraining on xTB with MACE's least-squares E0s
    with ThreadPoolExecutor(2 if args.parallel else 1) as pool:
        accurate = pool.submit(once, "mace_accurate", paths["dft_train"], paths["dft_valid"], paths["test"], e0s, args.finetune_minutes)
        pretrain = pool.submit(once, "mace_pretrain", paths["xtb"], paths["xtb_valid"], paths["test"], "average", args.pretrain_minutes)
        out = {"MACE accurate-only": accurate.result(), "MACE pretrain": pretrain.result()}
    out["MACE finetune (--foundation_model)"] = once("mace_finetune", paths["dft_train"], paths["dft_valid"], paths["test"], e0s,
                                                     args.finetune_minutes, foundation_model=out["MACE pretrain"]["model_path"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--molecules", nargs="+", default=list(MOLECULES), choices=MOLECULES)
    p.add_argument("--pretrain-minutes", type=float, default=6.0)
    p.add_argument("--finetune-minutes", type=float, default=5.0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--parallel", action="store_true", help="train the two runs of each pair side by side")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--mace", action="store_true", help="also MACE from scratch and MACE pretrained on xTB + fine-tuned")
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/finetune.json"))
    args = p.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="finetune_bench_"))
    training = {"val_interval": 1}
    rows = []
    for molecule in args.molecules:
        for seed in args.seeds:
            paths = make_sets(molecule, seed, work / f"{molecule}_{seed}")
            e0s = require_shared(molecule, "isolated_atoms.xyz")
            run = work / f"{molecule}_{seed}"

            def job(name, data, minutes, e0, extra=None):
                return dict(paths=data, e0s=e0, out=run / name, minutes=minutes, model="equivariant-ace", options=OPTIONS,
                            seed=seed, threads=args.threads, training=training, extra=extra)

            dft = {"train": paths["dft_train"], "valid": paths["dft_valid"], "test": paths["test"]}
            both = args.pretrain_minutes + args.finetune_minutes
            levels = {"levels": {"heads": ["gfn2", "dft"], "predict": "dft", "e0s": {"gfn2": "least_squares", "dft": str(e0s)}}}
            first = [job("pretrain", {"train": paths["xtb"], "valid": paths["xtb_valid"], "test": paths["test"]},
                         args.pretrain_minutes, "least_squares"),
                     job("multi-level", {"train": paths["mixed"], "valid": paths["dft_valid"], "test": paths["test"]},
                         both, e0s, levels)]
            results = dict(zip(["pretrain", "multi-level"], map_jobs(train_job, first, args.parallel)))
            init = results["pretrain"]["model_path"]
            modes = [("finetune all", {"init": init}), ("finetune freeze-backbone", {"init": init, "mode": "freeze-backbone"}),
                     ("finetune backbone-lr=0.1", {"init": init, "mode": "backbone-lr", "backbone_lr": 0.1})]
            second = [job("accurate-only", dft, args.finetune_minutes, e0s)]
            second += [job(name.replace(" ", "_").replace("=", ""), dft, args.finetune_minutes, e0s, {"finetune": ft})
                       for name, ft in modes]
            names = ["accurate-only"] + [name for name, _ in modes]
            for k in range(0, len(second), 2):  # two at a time: one core each
                results.update(zip(names[k:k + 2], map_jobs(train_job, second[k:k + 2], args.parallel)))
            if args.mace:
                results.update(mace_arms(paths, e0s, run, seed, args))
            base = results["accurate-only"]["test_forces_mae_meV_per_A"]
            xtb_cpu = xtb_cpu_seconds(run / "xtb.db")
            mace_names = ["MACE accurate-only", "MACE pretrain", "MACE finetune (--foundation_model)"] if args.mace else []
            for name in ["accurate-only", "pretrain", *[n for n, _ in modes], "multi-level", *mace_names]:
                r = results[name]
                rows.append({
                    "molecule": molecule, "seed": seed, "recipe": name,
                    "F_test": r["test_forces_mae_meV_per_A"], "E_test": r["test_energy_mae_meV_per_atom"],
                    "F_ratio": r["test_forces_mae_meV_per_A"] / base, "first_val_F": r["first_val_forces_mae_meV_per_A"],
                    "epochs": r["epochs"], "minutes": r["wall_minutes"],
                    "n_dft": 0 if name.endswith("pretrain") else 50,
                    "n_xtb": 0 if name.endswith("accurate-only") else len(ase.io.read(paths["xtb"], ":")),
                    "xtb_cpu_s": None if name.endswith("accurate-only") else xtb_cpu,
                })
            save_json(args.json, rows)
    print_table("Fine-tuning from GFN2-xTB, equivariant-ace", rows, [
        ("molecule", "molecule", ""), ("seed", "seed", "d"), ("recipe", "recipe", ""), ("n_xtb", "xTB labels", "d"),
        ("n_dft", "DFT labels", "d"), ("F_test", "F MAE test", ".1f"), ("F_ratio", "F / accurate-only", ".2f"),
        ("E_test", "E MAE test", ".2f"), ("first_val_F", "F MAE val after epoch 1", ".1f"), ("epochs", "epochs", "d"),
        ("minutes", "minutes", ".1f"),
    ])
    print("(MAE in meV/Å and meV/atom on the DFT test frames; the xTB-only model's energies are at the wrong level)")


if __name__ == "__main__":
    main()
