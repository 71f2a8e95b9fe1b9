"""ASTEROID against its baselines on real DFT data, through ``forcefit pipeline``, with measured labelling cost.

    python benchmarks/asteroid.py [--molecules ethanol acac] [--seeds 0] [--n-accurate 50]
        [--recipes accurate-only pretrain-finetune asteroid asteroid-score] [--accurate-minutes 10]
        [--pretrain-minutes 6] [--finetune-minutes 10] [--finetune-mode all] [--finetune-readout keep] [--gamma 1.0] [--energy reference]
        [--md-frames 2000] [--parallel] [--threads 1] [--mace] [--mace-finetune [MODE ...]] [--variant NAME [--base-variant NAME]] [--workdir DIR]
        [--json benchmarks/results/asteroid.json]

Data (benchmarks/asteroid_data.py): accurate = n DFT frames (25 more validate), cheap = GFN2-xTB labels
of the other reference geometries and of 2000 (``--md-frames``) GFN2-xTB MD frames at 300-600 K, test = 500 ethanol
frames never used / acac test_MD_300K.xyz. Costs are measured: DFT CPU-seconds per frame (PySCF at the
reference level, 2 frames), xTB CPU-seconds per label (the campaign), MD sampling CPU-seconds (spread
over the cheap frames; for asteroid-score, the unlabelled frames' sampling cost only).
``asteroid-score`` trains on the xTB MD frames of one temperature without their labels (ethanol:
500 K, the temperature of its MD17 geometries; acac: 300 K, its test MD's), or with
``--score-temperatures all`` on every MD frame, each at the temperature it was sampled at.
Every recipe uses equivariant-ace with the same seed and options; each molecule's pipeline is one
process (``--parallel`` runs the molecules side by side, one thread each). ``--mace`` adds MACE on the
accurate frames alone (the existing baseline, the accurate budget). ``--mace-finetune`` adds MACE's own
pretrain → fine-tune on the same data: MACE pretrained on the pipeline's cheap frames (its cheap_train /
cheap_valid split, the xTB labels, least-squares E0s) for the pretraining budget, then fine-tuned on the
accurate frames with MACE's ``--foundation_model`` for the fine-tuning budget, in each named mode
(MACE_FINETUNE; ``--mace-finetune`` alone: ``single-average``): single-head with E0s by least squares on
the accurate frames (``average``, MACE's nearest to forcefit's E0 refit; MACE 0.3.16 still starts the
fine-tune from the pretrained model's energies, 433 eV/atom off on ethanol, and it diverged: 998 meV/Å;
with isolated-atom E0s it diverged too, benchmarks/finetune.py: 4170), single-head with E0s fitted to the
pretrained model's predictions on the accurate frames (``estimated``, MACE's answer to that offset, which its
single-head fine-tune ignores as well: 1354 meV/Å), and multi-head (``--multiheads_finetuning``: a pretraining
head keeps fitting the cheap frames beside the new head, E0s ``estimated``; it converged, 41.3 meV/Å), side by
side with ``--parallel``. The pipeline folder and the MACE runs resume.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import ase.io
import yaml

from forcefit.config import FinetuneConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from asteroid_data import MD_FRAMES, build_sets  # noqa: E402
from common import map_jobs, print_table, require_shared, save_json  # noqa: E402

SCORE_TEMPERATURE = {"ethanol": 500, "acac": 300}
# MACE's fine-tuning of its own xTB-pretrained model: name -> (multi-head with the cheap frames replayed, E0s)
MACE_FINETUNE = {"single-average": (False, "average"), "single-estimated": (False, "estimated"),
                 "multihead-estimated": (True, "estimated")}


def pipeline_config(args, molecule: str, seed: int, costs: dict, work: Path, shared: Path) -> Path:
    """The pipeline config in ``work``; derived input files live in ``shared`` (the base run's folder, so a
    variant's inputs are the very files its base ran on)."""
    files = costs["files"]
    cheap, accurate = costs["cheap"], costs["accurate"]
    if args.score_temperatures == "all":  # every MD frame, each scored at its own temperature (its info 'temperature')
        temperature, unlabelled = None, Path(files["cheap_unlabelled"])
    else:
        temperature = SCORE_TEMPERATURE[molecule]
        unlabelled = shared / f"unlabelled_{temperature}K.xyz"
        if not unlabelled.exists():
            frames = [a for a in ase.io.read(files["cheap_unlabelled"], ":") if int(a.info.get("temperature", -1)) == temperature]
            ase.io.write(unlabelled, frames, format="extxyz")
    per_md_frame = cheap["md_sampling_cpu_s"] / max(cheap["md_frames"], 1)
    budget = lambda minutes: {"max_epochs": 100000, "max_minutes": minutes}  # noqa: E731
    cfg = {
        "out": str(work / "pipeline"), "seed": seed, "recipes": args.recipes,
        "data": {
            "accurate": {"files": [files["accurate"]], "cpu_seconds_per_label": accurate["dft_cpu_s_per_label"]},
            "accurate_valid": {"files": [files["accurate_valid"]], "cpu_seconds_per_label": accurate["dft_cpu_s_per_label"]},
            "cheap": {"files": [files["cheap"]], "cpu_seconds_per_label": cheap["total_cpu_s"] / cheap["labels"]},
            "unlabelled": {"files": [str(unlabelled)], "cpu_seconds_per_label": per_md_frame},
            **({"temperature": temperature} if temperature else {}), "test": {"files": [files["test"]]},
            "e0s": str(require_shared(molecule, "isolated_atoms.xyz")),
        },
        "model": {"name": "equivariant-ace"},
        "training": {"threads": args.threads, "progress": False, "val_interval": 1},
        "budget": {"accurate": budget(args.accurate_minutes), "pretrain": budget(args.pretrain_minutes),
                   "finetune": budget(args.finetune_minutes)},
        "finetune": {**FinetuneConfig.parse_mode(args.finetune_mode), "readout": args.finetune_readout},
        "asteroid": {"gamma": args.gamma, "energy": args.energy},
        "score": {"estimator": args.score_estimator},
    }
    path = work / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_one(job: tuple) -> dict:
    args, molecule, seed, n, root = job
    from forcefit.pipeline import Pipeline, PipelineConfig
    from forcefit.pipeline.report import build_report

    # another number of MD frames is other data: its own folder (the default keeps the older runs' name)
    cache = root / (f"{molecule}_{seed}" + ("" if args.md_frames == MD_FRAMES else f"_md{args.md_frames}"))
    inputs = cache / f"n{n}_run"  # the base run's folder: derived inputs live there, whatever the variant
    base = inputs.with_name(f"{inputs.name}_{args.base_variant}") if args.base_variant else inputs
    if args.base_variant and not (base / "pipeline").exists():
        raise SystemExit(f"--base-variant {args.base_variant}: no run in {base}")
    costs = build_sets(molecule, seed, cache / f"n{n}", n_accurate=n, md_frames=args.md_frames, cache=cache)
    work = base if not args.variant else base.with_name(f"{base.name}_{args.variant}")
    work.mkdir(parents=True, exist_ok=True)
    inputs.mkdir(parents=True, exist_ok=True)
    cfg = PipelineConfig.load(pipeline_config(args, molecule, seed, costs, work, inputs))
    reused = _reuse(base / "pipeline", cfg) if args.variant else []
    Pipeline(cfg, log=lambda line: print(f"[{molecule} {seed} n{n}] {line}", flush=True)).run()
    report = build_report(cfg.out, cfg.recipes)
    result = {"molecule": molecule, "seed": seed, "n_accurate": n, "report": report, "costs": costs,
              "bias": _bias_summary(Path(cfg.out)), "reused_stages": reused}
    if args.mace_finetune is not None:
        result["mace_finetune"] = mace_pretrain_finetune(args, seed, Path(cfg.out) / "data", costs["files"], work)
    if args.mace:
        from mace_baseline import run_mace_once

        files = costs["files"]
        result["mace"] = run_mace_once(files["accurate"], files["accurate_valid"], files["test"],
                                       require_shared(molecule, "isolated_atoms.xyz"), args.accurate_minutes, seed=seed,
                                       workdir=work / "mace", threads=args.threads)
    return result


def mace_finetune_folder(mode: str) -> str:
    """A MACE fine-tuning mode's run folder (``single-average``, the first one measured, kept its plain name)."""
    return "mace_finetune" if mode == "single-average" else f"mace_finetune_{mode}"


def mace_pretrain_finetune(args, seed: int, data: Path, files: dict, work: Path) -> list[dict]:
    """MACE pretrained on the pipeline's cheap split (``data``: cheap_train/cheap_valid.xyz), then fine-tuned on the
    accurate frames with --foundation_model in each mode of ``args.mace_finetune`` (side by side with --parallel);
    each run resumes from its summary (see the module docstring). One entry per mode."""
    from concurrent.futures import ThreadPoolExecutor

    from mace_baseline import run_mace_once

    common = {"seed": seed, "threads": args.threads, "md_steps": 0}
    cheap = (data / "cheap_train.xyz", data / "cheap_valid.xyz")
    pretrain = run_mace_once(*cheap, files["test"], "average", args.pretrain_minutes, workdir=work / "mace_pretrain", **common)
    modes = args.mace_finetune or ["single-average"]

    def finetune(mode: str) -> dict:
        replay, e0s = MACE_FINETUNE[mode]
        return run_mace_once(files["accurate"], files["accurate_valid"], files["test"], e0s, args.finetune_minutes,
                             workdir=work / mace_finetune_folder(mode), foundation_model=pretrain["model_path"],
                             replay=cheap if replay else None, **common)

    with ThreadPoolExecutor(len(modes) if args.parallel else 1) as pool:  # each run is its own MACE process
        runs = list(pool.map(finetune, modes))
    keep = ("test_forces_mae_meV_per_A", "test_energy_mae_meV_per_atom", "epochs", "n_train", "train_minutes", "wall_minutes",
            "first_validations")
    return [{"mode": mode, "multihead": MACE_FINETUNE[mode][0], "pretrain": {k: pretrain.get(k) for k in keep},
             "finetune": {k: run.get(k) for k in keep}, "pretrain_minutes": args.pretrain_minutes,
             "finetune_minutes": args.finetune_minutes, "e0s": {"pretrain": "average", "finetune": MACE_FINETUNE[mode][1]}}
            for mode, run in zip(modes, runs)]


def _reuse(base: Path, cfg) -> list[str]:
    """A variant takes over its base run's data and every finished stage whose settings (its own and its upstream
    stages', as the pipeline records them) are what the variant's config gives it: θ0 always, the pretraining
    stages when only the fine-tuning differs, the plain and score stages when only the asteroid settings do.
    What it took over is recorded in the variant's folder (``taken_over.json``), so a rerun, which finds those
    stages already there, still names them (the docs leave their repeated rows out)."""
    import shutil

    from forcefit.pipeline import Pipeline
    from forcefit.pipeline.stages import RECIPE_STAGES, UPSTREAM, stage_order

    out = Path(cfg.out)
    record_file = out / "taken_over.json"
    if (base / "data" / "data.json").exists() and not (out / "data").exists():
        shutil.copytree(base / "data", out / "data")
    variant = Pipeline(cfg, log=lambda line: None)
    own = lambda settings: {k: v for k, v in settings.items() if k != "upstream"}  # noqa: E731
    taken: set[str] = set(json.loads(record_file.read_text())) if record_file.exists() else set()
    for stage in stage_order(list(RECIPE_STAGES)):
        done = base / "stages" / stage / "stage.json"
        if not done.exists() or (out / "stages" / stage).exists():
            continue
        # settings name their folder as $OUT (older runs: absolute; runs before the upstream chain: own settings only)
        record = json.loads(done.read_text().replace(str(base), "$OUT"))
        wanted = variant.stage_settings(stage)
        if own(record.get("settings") or {}) != own(wanted) or (stage in UPSTREAM and UPSTREAM[stage] not in taken):
            continue
        shutil.copytree(done.parent, out / "stages" / stage)
        (out / "stages" / stage / "stage.json").write_text(json.dumps({**record, "settings": wanted}, indent=2))
        taken.add(stage)
    save_json(record_file, sorted(taken))  # atomic, as every result file here
    return sorted(taken)


def _bias_summary(out: Path) -> dict | None:
    path = out / "stages" / "bias" / "bias.json"
    if not path.exists():
        return None
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in ("bias", "weights")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--molecules", nargs="+", default=["ethanol", "acac"], choices=["ethanol", "acac"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--n-accurate", type=int, nargs="+", default=[50])
    p.add_argument("--recipes", nargs="+", default=["accurate-only", "pretrain-finetune", "asteroid", "asteroid-score"])
    p.add_argument("--accurate-minutes", type=float, default=10.0)
    p.add_argument("--pretrain-minutes", type=float, default=6.0)
    p.add_argument("--finetune-minutes", type=float, default=10.0)
    p.add_argument("--gamma", type=float, default=1.0, help="eV/Å")
    p.add_argument("--energy", choices=["theta0", "reference", "none"], default="reference")
    p.add_argument("--finetune-mode", default="all", help="every fine-tuning stage: all, freeze-backbone or backbone-lr=FACTOR")
    p.add_argument("--finetune-readout", choices=["keep", "reinit"], default="keep",
                   help="every fine-tuning stage: keep the pretrained energy readout, or start a fresh one")
    p.add_argument("--md-frames", type=int, default=MD_FRAMES,
                   help="GFN2-xTB MD frames among the cheap ones (spread over 300-600 K; the issue allows up to 5000)")
    p.add_argument("--score-estimator", choices=["sliced", "denoising"], default="sliced")
    p.add_argument("--score-temperatures", choices=["one", "all"], default="one",
                   help="asteroid-score's unlabelled frames: the MD of one temperature (ethanol 500 K, acac 300 K), or "
                   "every MD temperature, each frame scored at its own")
    p.add_argument("--parallel", action="store_true", help="one process per molecule/seed/n, side by side (and the MACE fine-tuning modes)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--mace", action="store_true")
    p.add_argument("--mace-finetune", nargs="*", choices=list(MACE_FINETUNE), default=None, metavar="MODE",
                   help="also MACE pretrained on the cheap frames, then fine-tuned on the accurate ones (--foundation_model) "
                   f"in each MODE: {', '.join(MACE_FINETUNE)} (alone: single-average)")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--variant", default=None, help="a named variant (other --gamma/--energy/...) in its own folder beside "
                   "the base run, reusing its data and θ0 (e.g. --variant gamma0.1 --recipes asteroid --gamma 0.1)")
    p.add_argument("--base-variant", default=None, help="take the stages over from this variant's folder instead of the "
                   "base run's (e.g. --base-variant score --variant score_all --finetune-mode all: another fine-tuning "
                   "of that variant's pretraining)")
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/asteroid.json"))
    args = p.parse_args()
    if args.base_variant and not args.variant:
        p.error("--base-variant needs --variant (the new folder beside it)")
    root = args.workdir or Path(tempfile.mkdtemp(prefix="asteroid_bench_"))
    jobs = [(args, m, s, n, root) for m in args.molecules for s in args.seeds for n in args.n_accurate]
    results = []
    for result in map_jobs(run_one, jobs, args.parallel):
        results.append(result)
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        save_json(args.json, {"settings": settings, "results": results})
    rows = []
    for r in results:
        for row in r["report"]["rows"]:
            rows.append({"molecule": r["molecule"], "seed": r["seed"], "n": r["n_accurate"], **row})
        if "mace" in r:
            rows.append({"molecule": r["molecule"], "seed": r["seed"], "n": r["n_accurate"], "recipe": "MACE accurate-only",
                         "forces_mae_meV_per_A": r["mace"]["test_forces_mae_meV_per_A"]})
        for m in r.get("mace_finetune", []):
            rows.append({"molecule": r["molecule"], "seed": r["seed"], "n": r["n_accurate"],
                         "recipe": f"MACE pretrain-finetune ({m['mode']})",
                         "forces_mae_meV_per_A": m["finetune"]["test_forces_mae_meV_per_A"]})
    print_table("ASTEROID and baselines (test force MAE)", rows, [
        ("molecule", "molecule", ""), ("seed", "seed", "d"), ("n", "accurate", "d"), ("recipe", "recipe", ""),
        ("forces_mae_meV_per_A", "F MAE meV/Å", ".1f"), ("forces_vs_accurate_only", "× accurate-only", ".2f"),
        ("cheap_labels", "cheap", "d"), ("label_cpu_seconds", "label CPU-s", ".0f"), ("training_minutes", "train min", ".1f")])
    for r in results:
        for pair in r["report"]["paired"]:
            print(f"{r['molecule']} seed {r['seed']}: {pair['other']} vs {pair['baseline']}: {pair['forces_change_pct']:+.1f}% "
                  f"[{pair['ci_low_pct']:+.1f}, {pair['ci_high_pct']:+.1f}]")


if __name__ == "__main__":
    main()
