"""Build the model that ships with forcefit (``--init organic-gfn2``): force-centric pretraining on the pool.

    python benchmarks/build_pool.py --out POOL --workers 2              # the pool (about 1 CPU hour)
    python benchmarks/pretrain_shipped.py --pool POOL [--minutes 30] [--processes 2] [--threads 1] [--workdir DIR] [--install]
    python benchmarks/pretrain_shipped.py --pool POOL --init organic-gfn2 --minutes 90 [--lr 1e-3] [--install]   # continue a build

Pretrains equivariant-ace with the default options (the backbone every benchmark trains from
scratch) with ``forcefit pretrain`` on ``POOL/pool.h5``: objective force-centric (forces of the MD
frames, zero-force and harmonic denoising on the GFN2-xTB minima), no energy term, 10% of the pool
held out for validation, seed 0, ``--minutes`` of wall time, data-parallel over ``--processes``
CPU processes (torchrun, Lightning DDP over gloo: the DDP path a cluster user takes). A killed run resumes (``--workdir``).
``--install`` copies the exported model into ``forcefit/pretrained/organic-gfn2.pt`` and writes its
model card ``organic-gfn2.json`` beside it (the pool's molecules, frames, elements and CPU seconds; the
training budget, epochs and rate; the validation errors on the held-out pool frames; size and
parameter count; how to rebuild it); ``benchmarks/make_docs.py`` turns the card into docs/pretrained.md.

``--init`` continues an earlier build (the shipped name, or a model file written by this script) for
``--minutes`` more on the same pool and objective: its weights are the start (``finetune.init``, every
weight training, no energy refit since energies are not trained), and the new card lists both stages
(``training.stages``, total minutes and epochs) and the commands that rebuild the chain. The model
file is copied into the workdir first, so ``--install`` may overwrite the shipped file it started from.
``--lr`` sets the peak learning rate of the warm-up and cosine (default: the training default, 5e-3);
a continuation restarts that schedule, and a lower peak keeps it from first undoing the earlier stages
(a continuation at 5e-3 pushed the held-out error from 47.5 to 88 meV/Å before bringing it to 35).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, save_json  # noqa: E402

from forcefit.config import TrainingConfig  # noqa: E402

NAME = "organic-gfn2"
CONFIG = {
    "model": {"name": "equivariant-ace"},
    "objective": {"kind": "force-centric"},
    "training": {"energy_weight": 0.0, "warmup_epochs": 0.2},  # a few epochs in all: a short warm-up
    "seed": 0,
}
LR_DEFAULT = TrainingConfig.model_fields["lr"].default  # the peak of the warm-up and cosine


def start_from(init: str | None, work: Path) -> tuple[Path | None, dict | None]:
    """The model file a continued build starts from (copied into ``work``) and its card, if it has one."""
    if init is None:
        return None, None
    from forcefit import pretrained

    source = pretrained.resolve(init)
    if not source.exists():
        raise SystemExit(f"--init {init}: no such model file (nor a shipped model name: {', '.join(pretrained.SHIPPED)})")
    card_path = pretrained.HERE / f"{init}.json" if init in pretrained.SHIPPED else source.parent.parent / "card.json"
    copy = work / "init.pt"
    if not copy.exists():
        work.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, copy)
        if card_path.exists():
            shutil.copyfile(card_path, work / "init_card.json")
    card = json.loads((work / "init_card.json").read_text()) if (work / "init_card.json").exists() else None
    return copy, card


def pretrain_config(threads: int, processes: int, init: Path | None = None, lr: float | None = None) -> dict:
    """The ``forcefit pretrain`` config: CONFIG plus threads, DDP, the peak learning rate and the build it continues."""
    ddp = {"strategy": "ddp", "devices": processes, "device": "cpu"} if processes > 1 else {}
    config = {**CONFIG, "training": {**CONFIG["training"], "threads": threads, **ddp, **({"lr": lr} if lr is not None else {})}}
    if init is not None:  # continue a build: its weights, every weight training; energies are not trained, so no refit
        config["finetune"] = {"init": str(init), "mode": "all", "reestimate_energy": False}
    return config


def pretrain(pool: Path, work: Path, minutes: float, threads: int, processes: int, init: Path | None = None,
             lr: float | None = None) -> Path:
    """Run (or resume, or read back) the pretraining; returns the run folder. ``processes`` > 1: torchrun, DDP over gloo."""
    run = work / "run"
    settings = {"minutes": minutes, "threads": threads, "processes": processes, "init": str(init) if init else None}
    if lr is not None:  # recorded only when set, so workdirs finished before --lr existed still read back
        settings["lr"] = lr
    if (work / "done.json").exists():
        done = json.loads((work / "done.json").read_text())
        differs = {k: (done.get(k), v) for k, v in settings.items() if done.get(k) != v}
        if differs:
            raise SystemExit(f"{work}: finished with other settings {differs} (done, asked); use another --workdir")
        if (run / "model.pt").exists():
            return run
    work.mkdir(parents=True, exist_ok=True)
    (work / "pretrain.yaml").write_text(yaml.safe_dump(pretrain_config(threads, processes, init, lr), sort_keys=False))
    resume = (run / "checkpoints" / "last.ckpt").exists()
    launch = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", "--master_port=29561"] if processes > 1 else [sys.executable]
    cmd = [*launch, "-m", "forcefit.cli", "pretrain", "--pool", str(pool / "pool.h5"), "--config", str(work / "pretrain.yaml"),
           "--max-time", str(minutes), "--out", str(run), "--no-progress", *(["--resume"] if resume else [])]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    save_json(work / "done.json", {"command": cmd, **settings})
    return run


def chain_stages(prior: dict | None, stage: dict) -> list[dict]:
    """The pretraining stages of a build: the stages of the card it continued (``prior``), then ``stage``.

    A card written before stages were recorded is one stage (its budget, epochs and validation error);
    a stage recorded before ``--lr`` existed ran at the default peak learning rate."""
    if not prior:
        return [stage]
    train = prior["training"]
    earlier = train.get("stages") or [{"minutes": train["wall_minutes_budget"], "epochs": train["epochs"],
                                       "processes": train["processes"], "threads": train["threads"], "init": None,
                                       "forces_mae_meV_per_A": prior["validation"]["forces_mae_meV_per_A"]}]
    return [*({"lr": LR_DEFAULT, **st} for st in earlier), stage]


def model_card(pool: Path, run: Path, minutes: float, threads: int, processes: int,
               init: str | None = None, prior: dict | None = None, lr: float | None = None) -> dict:
    """What a user needs to judge the model: data, budget, errors, size, provenance (and the build it continued)."""
    import torch

    from forcefit.model_file import read_model_file
    from forcefit.training import metrics_history

    summary = json.loads((pool / "pool.json").read_text())
    payload = read_model_file(run / "model.pt")
    log = metrics_history.rows(run / "logs")
    validated = [r for r in log if r.get("val_forces_mae")]
    rates = [float(r["structures_per_s"]) for r in log if r.get("structures_per_s")]
    n_params = sum(v.numel() for v in payload["state_dict"].values() if isinstance(v, torch.Tensor))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    last = validated[-1] if validated else {}
    epochs = int(max(int(r["epoch"]) for r in log) + 1) if log else 0
    command = (f"python benchmarks/pretrain_shipped.py --pool POOL{f' --init {init}' if init else ''} --minutes {minutes:g}"
               f"{f' --lr {lr:g}' if lr is not None else ''} --threads {threads} --processes {processes} --install")
    stage = {"minutes": minutes, "epochs": epochs, "processes": processes, "threads": threads, "init": init,
             "lr": lr if lr is not None else LR_DEFAULT,
             "forces_mae_meV_per_A": float(last["val_forces_mae"]) if last else None}
    stages = chain_stages(prior, stage)
    return {
        "name": NAME,
        "description": "equivariant-ace pretrained force-centrically on GFN2-xTB minima and MD of small neutral C/H/N/O molecules",
        "level": summary["level"],
        "elements": sorted(int(z) for z in payload["architecture"]["species"]),
        "model": payload["architecture"].get("name", "equivariant-ace"),
        "cutoff": payload["cutoff"],
        "parameters": int(n_params),
        "file_bytes": (run / "model.pt").stat().st_size,
        "dtype": payload.get("dtype"),
        "pool": {"molecules": summary["molecules"]["done"], "molecules_failed": len(summary["molecules"]["failed"]),
                 "frames": summary["frames"], "settings": summary["settings"], "cpu_seconds": summary["cpu_seconds"],
                 "smiles_list": "forcefit/data/pretraining_smiles.txt (ethanol and acetylacetone excluded)"},
        "training": {"objective": "force-centric (forces on MD frames; zero-force and denoising on minima; no energy term)",
                     "config": CONFIG, "wall_minutes_budget": sum(st["minutes"] for st in stages), "threads": threads, "processes": processes,
                     "epochs": sum(st["epochs"] for st in stages), "stages": stages,
                     "structures_per_s": float(sorted(rates)[len(rates) // 2]) if rates else None,
                     "valid_fraction": 0.1},
        "validation": {"split": "10% of the pool, held out by index (GFN2-xTB labels)",
                       "forces_mae_meV_per_A": float(last["val_forces_mae"]) if last else None,
                       **({"forces_rmse_meV_per_A": float(last["val_forces_rmse"])} if last.get("val_forces_rmse") else {}),
                       "epoch": int(last["epoch"]) if last else None},
        "rebuild": [*((prior or {}).get("rebuild") or ["python benchmarks/build_pool.py --out POOL --workers 2"]), command],
        "built": {"date": datetime.date.today().isoformat(), "commit": commit, "forcefit_version": payload.get("forcefit_version")},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool", type=Path, required=True, help="the folder build_pool.py wrote (pool.h5, pool.json)")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--processes", type=int, default=2, help="data-parallel processes (torchrun, DDP over gloo); 1: no DDP")
    p.add_argument("--init", default=None, help="continue this build: the shipped name (organic-gfn2) or a model file this script wrote")
    p.add_argument("--workdir", type=Path, default=None, help="default benchmarks/runs/pretrain_organic_gfn2[_continued]")
    p.add_argument("--lr", type=float, default=None, help=f"peak learning rate (default {LR_DEFAULT:g}); lower for a continuation")
    p.add_argument("--install", action="store_true", help="copy the model and its card into forcefit/pretrained/")
    args = p.parse_args()
    for name in ("pool.h5", "pool.json"):
        if not (args.pool / name).exists():
            raise SystemExit(f"{args.pool / name}: missing; build the pool first (benchmarks/build_pool.py --out {args.pool})")
    work = args.workdir or ROOT / "benchmarks" / "runs" / ("pretrain_organic_gfn2" + ("_continued" if args.init else ""))
    init_file, prior = start_from(args.init, work)
    run = pretrain(args.pool, work, args.minutes, args.threads, args.processes, init_file, args.lr)
    card = model_card(args.pool, run, args.minutes, args.threads, args.processes, args.init, prior, args.lr)
    save_json(work / "card.json", card)
    print(json.dumps({k: card[k] for k in ("elements", "parameters", "file_bytes", "validation")}, indent=1))
    if args.install:
        target = ROOT / "forcefit" / "pretrained"
        shutil.copyfile(run / "model.pt", target / f"{NAME}.pt")
        save_json(target / f"{NAME}.json", card)
        print(f"installed {target / (NAME + '.pt')} and its card")


if __name__ == "__main__":
    main()
