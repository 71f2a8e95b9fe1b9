"""Force-centric pretraining, measured: fine-tune the shipped model on 50 DFT frames against training from scratch.

    python benchmarks/force_centric.py [--molecules ethanol acac] [--seeds 0] [--n-accurate 50] [--minutes 10]
                                       [--init organic-gfn2] [--md-ps 20] [--md-starts 5] [--mace]
                                       [--workdir DIR] [--json benchmarks/results/force_centric.json]
    python benchmarks/force_centric.py --refresh-asteroid   # only re-read the ASTEROID rows, redraw the plot, regenerate the docs

Data per molecule and seed: the ASTEROID benchmark's split (asteroid_data.reference_split, the same
function): ethanol, a seeded permutation of the 1000 frames of ../shared/data/ethanol/train.xyz, 25
validate, the last 500 test (never used in any form), the first --n-accurate of the rest train; acac,
the same on train_300K.xyz with test_MD_300K.xyz as test. So the 50 frames are the very ones the
ASTEROID recipes were measured on, and their numbers can stand beside these.

Arms, equivariant-ace with the default options, seed as given, --minutes of training each, one thread
each, side by side (two processes):
- ``scratch``: the 50 frames from a fresh initialisation, E0s from isolated_atoms.xyz;
- ``finetune``: the same run started from --init (default: the model shipped with forcefit, whose
  pretraining cost is reported once, from its model card), every weight training, E0s refitted
  (--finetune-mode, --finetune-lr and --finetune-readout change that arm alone; such a variant gets its own run folder);
- ``MACE`` (--mace: trained here, benchmarks/mace_baseline.py, the same budget; otherwise read from
  the ASTEROID benchmark's result for the same molecule, seed, frames and budget, and marked so).
A paired bootstrap over test frames compares finetune with scratch. MD stability (METHODS.md): 500 K
Langevin NVT, 0.5 fs, from --md-starts test geometries (the same for both arms), until a bond is 0.5 Å
off its first-frame length or --md-ps, a hydrogen on an O/N with an acceptor within 2.2 Å being free to
move to it (acac's enol proton; forcefit.simulate.md), and when the strict criterion tripped; the starts run side by side as one system
(forcefit.simulate.replicas), compiled, one thread; the two arms run side by side too.
The labelling cost of each method for one target molecule is its DFT labels (train + valid) at the
measured DFT CPU-seconds per frame, plus the cheap labels it needs: the ASTEROID recipes' xTB frames
and MD, and the pretraining pool's CPU-seconds for force-centric, paid once and shared by every
molecule a user fine-tunes to (the plot shows both one and ten target molecules, and each ASTEROID
recipe at its most accurate setting; the table lists every setting).
Resumable: every finished arm and MD run leaves a result file in --workdir and is read back.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import ase.io
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, map_jobs, print_table, require_shared, save_json, train_job  # noqa: E402
from make_docs import ASTEROID_MD_FRAMES, asteroid_finetune_parts, finetune_changes, score_setting_parts, write as write_docs  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
ASTEROID_RECIPES = ("pretrain-finetune", "asteroid", "asteroid-score", "delta")
MD_TEMPERATURE, MD_TIMESTEP_FS = 500.0, 0.5
AMORTISED_OVER = 10  # target molecules sharing one pretraining pool, for the "many molecules" point


def write_data(molecule: str, seed: int, n: int, work: Path) -> dict:
    """train/valid/test extxyz files of the ASTEROID split (written once)."""
    from asteroid_data import reference_split

    paths = {name: work / f"{name}.xyz" for name in ("train", "valid", "test")}
    if all(p.exists() for p in paths.values()):
        return paths
    split = reference_split(molecule, seed)
    work.mkdir(parents=True, exist_ok=True)
    for name, frames in (("train", split["pool"][:n]), ("valid", split["valid"]), ("test", split["test"])):
        ase.io.write(paths[name], frames, format="extxyz")
    return paths


def md_job(job: dict) -> dict:
    """MD stability of one model from several starts (module level, so map_jobs can run it in another process)."""
    out = Path(job["out"])
    if out.exists():
        done = json.loads(out.read_text())
        if Path(done["model"]).resolve() != Path(job["model"]).resolve():
            raise SystemExit(f"{out}: MD of {done['model']}, not of {job['model']}; remove it or use another --workdir")
        return done
    import torch

    import forcefit
    from forcefit.simulate.replicas import run_replicas

    torch.set_num_threads(1)
    starts = ase.io.read(job["structures"], ":")
    calculator = forcefit.load(job["model"], compile=True).calculator
    steps = int(round(job["ps"] * 1000 / MD_TIMESTEP_FS))
    r = run_replicas(starts, calculator, temperature=MD_TEMPERATURE, timestep_fs=MD_TIMESTEP_FS, steps=steps,
                     seed=job["seed"], progress=False, proton_transfer=True)
    strict = [r.simulated_fs if t is None else t for t in r.strict_collapse_fs]
    result = {"model": job["model"], "starts": list(job["indices"]), "ps_asked": job["ps"],
              "criterion": "proton transfer along a hydrogen bond allowed",
              "strict_stable_ps": [t / 1000 for t in strict],
              "strict_collapsed": sum(t is not None for t in r.strict_collapse_fs),
              "time_to_collapse_ps": [None if t is None else t / 1000 for t in r.time_to_collapse_fs],
              "stable_ps": [t / 1000 for t in r.stable_fs()], "collapsed": sum(t is not None for t in r.time_to_collapse_fs),
              "simulated_ps": r.simulated_fs / 1000, "steps_per_s": r.steps_per_second,
              "max_bond_deviation_A": r.max_bond_deviation.tolist()}
    save_json(out, result)
    return result


def asteroid_setting_label(recipe: str, settings: dict) -> str:
    """A recipe with the settings of the ASTEROID run that measured it (its pretraining budget, fine-tuning mode, γ)."""
    if recipe == "delta":
        return recipe
    parts = [f"{settings['pretrain_minutes']:g} min pretraining", *asteroid_finetune_parts(recipe, settings)]
    if recipe == "asteroid" and (settings["gamma"], settings["energy"]) != (1.0, "reference"):
        parts.append(f"γ {settings['gamma']:g}, {settings['energy']} energies")
    parts += score_setting_parts(recipe, settings)
    if settings.get("md_frames", ASTEROID_MD_FRAMES) != ASTEROID_MD_FRAMES:
        parts.append(f"{settings['md_frames']} xTB MD frames")
    return f"{recipe} ({', '.join(parts)})"


def asteroid_rows(molecule: str, seed: int, n: int, minutes: float, results: Path = RESULTS) -> dict:
    """The ASTEROID benchmark's rows for the same molecule, seed and frames: 'recipe (its settings)' -> row, plus
    its MACE run and costs. A variant's rows that repeat its base run's (stages it took over) appear once."""
    found: dict = {"rows": {}}
    for path in sorted(results.glob(f"asteroid_{molecule}*.json")):
        data = json.loads(path.read_text())
        for r in data["results"]:
            if r["seed"] != seed or r["n_accurate"] != n:
                continue
            found.setdefault("costs", r["costs"])
            for row in r["report"]["rows"]:
                if row["recipe"] not in ASTEROID_RECIPES or row.get("forces_mae_meV_per_A") is None:
                    continue
                if any(o["recipe"] == row["recipe"] and o["forces_mae_meV_per_A"] == row["forces_mae_meV_per_A"]
                       for o in found["rows"].values()):
                    continue  # the same run, taken over by a variant
                key = asteroid_setting_label(row["recipe"], data["settings"])
                found["rows"].setdefault(key, {**row, "recipe": row["recipe"], "source": _relative(path)})
            if "mace" in r and data["settings"].get("accurate_minutes") == minutes:
                found.setdefault("mace", {**r["mace"], "source": _relative(path)})
    return found


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def best_per_recipe(rows: dict) -> dict:
    """The most accurate setting of each ASTEROID recipe: what a user would pick, one point per recipe in the plot."""
    best: dict = {}
    for name, row in rows.items():
        recipe = row.get("recipe", name.split(" (")[0])
        if recipe not in best or row["forces_mae_meV_per_A"] < best[recipe][1]["forces_mae_meV_per_A"]:
            best[recipe] = (name, row)
    return dict(best.values())


def refresh_asteroid(path: Path, results: Path = RESULTS) -> dict:
    """Re-read the ASTEROID rows (and the costs they carry) into an existing result file, and redraw its plot,
    without training anything: the ASTEROID benchmark's newer runs then stand beside the force-centric ones."""
    data = json.loads(path.read_text())
    from forcefit import pretrained

    init = data["settings"]["init"]
    card = pretrained.card(init) if init in pretrained.SHIPPED else None
    for r in data["results"]:
        asteroid = asteroid_rows(r["molecule"], r["seed"], r["n_accurate"], data["settings"]["minutes"], results)
        r["asteroid"] = asteroid["rows"]
        r["costs"] = label_costs(asteroid.get("costs"), card, r["n_accurate"])
    save_json(path, data)
    cost_plot(data["results"], path.with_suffix(".png"))
    return data


def finetune_settings(args) -> dict:
    """The finetune section of the fine-tuning arm: --init, --finetune-mode in the command-line form, --finetune-readout."""
    from forcefit.config import FinetuneConfig

    mode = FinetuneConfig.parse_mode(args.finetune_mode) if args.finetune_mode != "all" else {}
    return {"init": args.init, **mode, **({"readout": args.finetune_readout} if args.finetune_readout != "keep" else {})}


def finetune_variant(args) -> str:
    """'' for the default fine-tuning settings, else a suffix naming the changed ones (its own run folder)."""
    return "".join(f"_{part}" for _, _, part in finetune_changes(vars(args)))


def run_one(args, molecule: str, seed: int, root: Path, card: dict | None) -> dict:
    work = root / f"{molecule}_{seed}_n{args.n_accurate}"
    paths = write_data(molecule, seed, args.n_accurate, work / "data")
    e0s = require_shared(molecule, "isolated_atoms.xyz")
    common = {"paths": paths, "e0s": e0s, "minutes": args.minutes, "model": "equivariant-ace", "seed": seed, "threads": 1}
    jobs = [{**common, "out": work / "scratch"},
            {**common, "out": work / f"finetune{finetune_variant(args)}", "extra": {"finetune": finetune_settings(args)},
             **({"training": {"lr": args.finetune_lr}} if args.finetune_lr else {})}]
    scratch, finetune = list(map_jobs(train_job, jobs, parallel=True))
    from forcefit.compare import compare

    paired = compare(scratch["model_path"], finetune["model_path"], [paths["test"]])["rows"][0]
    result = {"molecule": molecule, "seed": seed, "n_accurate": args.n_accurate, "scratch": scratch, "finetune": finetune,
              "finetune_vs_scratch": finetune["test_forces_mae_meV_per_A"] / scratch["test_forces_mae_meV_per_A"],
              "paired": {k: paired[k] for k in ("n", "F_base", "F_other", "F_change_pct", "F_ci_low_pct", "F_ci_high_pct",
                                                "F_other_better_frames")}}
    asteroid = asteroid_rows(molecule, seed, args.n_accurate, args.minutes)
    if args.mace:
        from mace_baseline import run_mace

        result["mace"] = {**run_mace(paths["train"], paths["valid"], paths["test"], e0s, args.minutes, seed=seed,
                                     workdir=work / "mace", threads=1), "source": "trained here"}
    elif "mace" in asteroid:
        result["mace"] = asteroid["mace"]
    if "mace" in result:
        result["finetune_vs_mace"] = finetune["test_forces_mae_meV_per_A"] / result["mace"]["test_forces_mae_meV_per_A"]
    if args.md_ps > 0:
        test = ase.io.read(paths["test"], ":")
        indices = np.random.default_rng(seed).choice(len(test), size=args.md_starts, replace=False).tolist()
        starts = work / "md_starts.xyz"  # the same starts for both arms, written once
        ase.io.write(starts, [test[k] for k in indices], format="extxyz")
        md_jobs = [{"model": r["model_path"], "structures": str(starts), "indices": indices, "ps": args.md_ps,
                    "seed": seed, "out": str(work / f"md_{arm}_{args.md_ps:g}ps.json")}
                   for arm, r in (("scratch", scratch), (f"finetune{finetune_variant(args)}", finetune))]  # a variant: its own MD file
        result["md"] = dict(zip(("scratch", "finetune"), map_jobs(md_job, md_jobs, parallel=True)))
        s, f = result["md"]["scratch"]["stable_ps"], result["md"]["finetune"]["stable_ps"]
        result["md_finetune_never_earlier"] = all(b >= a for a, b in zip(s, f))
    result["asteroid"] = asteroid["rows"]
    result["costs"] = label_costs(asteroid.get("costs"), card, args.n_accurate)
    return result


def label_costs(asteroid_costs: dict | None, card: dict | None, n: int) -> dict:
    """Labelling CPU-seconds per method for one target molecule (and force-centric's with the pool shared)."""
    if asteroid_costs is None:
        return {}
    dft = asteroid_costs["accurate"]["dft_cpu_s_per_label"]
    accurate = dft * (n + asteroid_costs["accurate"]["valid_labels"])
    out = {"dft_cpu_s_per_label": dft, "accurate_only": accurate}
    if card is not None:
        pool = card["pool"]["cpu_seconds"]["sampling"] + card["pool"]["cpu_seconds"]["labelling"]
        out.update(pool_cpu_s=pool, force_centric_one_molecule=accurate + pool,
                   force_centric_shared=accurate + pool / AMORTISED_OVER, shared_over=AMORTISED_OVER)
    return out


def cost_plot(results: list[dict], path: Path) -> Path:
    """Test force MAE against labelling CPU-seconds for one target molecule, one panel per molecule."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * len(results), 6.4), layout="constrained")  # room for the legend under each panel
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(results), squeeze=False)[0]
    for ax, r in zip(axes, results):
        c = r["costs"]
        points = [("DFT only (equivariant-ace)", c.get("accurate_only"), r["scratch"]["test_forces_mae_meV_per_A"], "o")]
        if "mace" in r:
            points.append(("DFT only (MACE)", c.get("accurate_only"), r["mace"]["test_forces_mae_meV_per_A"], "s"))
        if "pool_cpu_s" in c:
            points.append(("force-centric, pool for 1 molecule", c["force_centric_one_molecule"], r["finetune"]["test_forces_mae_meV_per_A"], "*"))
            points.append((f"force-centric, pool shared by {c['shared_over']}", c["force_centric_shared"], r["finetune"]["test_forces_mae_meV_per_A"], "P"))
        for name, row in best_per_recipe(r["asteroid"]).items():
            points.append((name, row["label_cpu_seconds"], row["forces_mae_meV_per_A"], "^"))
        drawn = [(name, x, y, marker) for name, x, y, marker in points if x is not None]
        for name, x, y, marker in drawn:
            ax.scatter([x], [y], marker=marker, s=60, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("labelling CPU-seconds for this molecule")
        ax.set_ylabel("test force MAE (meV/Å)")
        ax.set_title(f"{r['molecule']}, {r['n_accurate']} DFT frames, seed {r['seed']}")
        if drawn:  # below the axes: inside, it hid the points
            ax.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.16))
        else:  # no measured costs for this seed (no ASTEROID run to take them from)
            ax.text(0.5, 0.5, "no labelling costs measured for this seed", ha="center", transform=ax.transAxes)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--molecules", nargs="+", default=["ethanol", "acac"], choices=["ethanol", "acac"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--n-accurate", type=int, default=50)
    p.add_argument("--minutes", type=float, default=10.0, help="training budget of every arm")
    p.add_argument("--init", default="organic-gfn2", help="the pretrained model: a shipped name or a model file")
    p.add_argument("--finetune-mode", default="all", help="all, freeze-backbone or backbone-lr=F (as forcefit train --finetune)")
    p.add_argument("--finetune-lr", type=float, default=None, help="learning rate of the fine-tuning arm (default: the scratch arm's)")
    p.add_argument("--finetune-readout", choices=["keep", "reinit"], default="keep",
                   help="the fine-tuning arm's energy readout: the model file's, or a fresh initialisation (finetune.readout)")
    p.add_argument("--md-ps", type=float, default=20.0, help="MD length per start (0: no MD)")
    p.add_argument("--md-starts", type=int, default=5)
    p.add_argument("--mace", action="store_true", help="train MACE here (else reuse the ASTEROID benchmark's MACE run)")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=RESULTS / "force_centric.json")
    p.add_argument("--refresh-asteroid", action="store_true",
                   help="train nothing: re-read the ASTEROID rows into --json, redraw its plot and (for the default "
                   "--json) regenerate the docs")
    args = p.parse_args()
    if args.refresh_asteroid:
        for r in refresh_asteroid(args.json)["results"]:
            best = best_per_recipe(r["asteroid"])
            print(f"{r['molecule']} seed {r['seed']}: " + ", ".join(f"{k} {v['forces_mae_meV_per_A']:.1f}" for k, v in best.items()))
        if args.json.resolve().parent == RESULTS.resolve():
            write_docs(ROOT, RESULTS)  # the docs' tables are made from that file: keep them in step (tests check they are)
            print("docs regenerated (benchmarks/make_docs.py)")
        return
    root = args.workdir or Path(tempfile.mkdtemp(prefix="force_centric_"))
    from forcefit import pretrained

    card = pretrained.card(args.init) if args.init in pretrained.SHIPPED else None
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    results = []
    for molecule in args.molecules:
        for seed in args.seeds:
            results.append(run_one(args, molecule, seed, root, card))
            save_json(args.json, {"settings": settings, "pretraining": card, "results": results})
    cost_plot(results, args.json.with_suffix(".png"))
    rows = []
    for r in results:
        md = r.get("md", {})
        for arm in ("scratch", "finetune", "mace"):
            if arm in r:
                rows.append({"molecule": r["molecule"], "seed": r["seed"], "arm": arm,
                             "F": r[arm]["test_forces_mae_meV_per_A"], "epochs": r[arm].get("epochs"),
                             "md": " ".join(f"{t:.1f}" for t in md[arm]["stable_ps"]) if arm in md else ""})
    print_table("force-centric fine-tuning against scratch (test force MAE, meV/Å; MD: ps stable per start)", rows, [
        ("molecule", "molecule", ""), ("seed", "seed", "d"), ("arm", "arm", ""), ("F", "F MAE", ".1f"),
        ("epochs", "epochs", "d"), ("md", "MD ps", "")])
    for r in results:
        q = r["paired"]
        print(f"{r['molecule']} seed {r['seed']}: finetune/scratch {r['finetune_vs_scratch']:.2f}, "
              f"{q['F_change_pct']:+.1f}% [{q['F_ci_low_pct']:+.1f}, {q['F_ci_high_pct']:+.1f}]"
              + (f", finetune/MACE {r['finetune_vs_mace']:.2f}" if "finetune_vs_mace" in r else ""))


if __name__ == "__main__":
    main()
