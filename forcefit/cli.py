"""The ``forcefit`` command line: train, eval, md, compare, pipeline, pack, pretrain, demo (and the labelling commands)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .atomic_file import write_text_atomic

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Train equivariant force fields from few expensive labels.")
# in a log file rich would wrap tables at 80 columns, squeezing every cell to an ellipsis
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


def fail(message: str) -> None:
    """Print one clear error line and exit with status 2 (never a bare traceback)."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _user_errors():
    from .config import ConfigError
    from .data import DataError
    from .extras import MissingExtra
    from .model_file import ModelFileError
    from .training.run import RunExistsError

    return (ConfigError, DataError, ModelFileError, RunExistsError, FileNotFoundError, MissingExtra)


@app.command()
def train(
    train_files: Optional[list[Path]] = typer.Option(None, "--train", help="Training frames (extxyz/any ASE format, ASE or campaign .db, MD17 .npz). Repeatable."),
    valid: Optional[list[Path]] = typer.Option(None, "--valid", help="Validation frames. Default: hold out --valid-fraction of the training frames."),
    valid_fraction: Optional[float] = typer.Option(None, "--valid-fraction", help="Fraction of training frames held out for validation (default 0.1)."),
    test: Optional[list[Path]] = typer.Option(None, "--test", help="Test frames, evaluated with the final model."),
    level: Optional[str] = typer.Option(None, "--level", help="Level of theory to read from a labelling campaign (.db)."),
    max_train: Optional[int] = typer.Option(None, "--max-train", help="Use a seeded subset of at most this many training frames."),
    e0s: Optional[str] = typer.Option(None, "--e0s", help="Reference energies: 'least_squares' (default), 'zero', or a file of isolated atoms."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML run configuration; command-line flags override it."),
    model: Optional[str] = typer.Option(None, "--model", help="Backbone: 'painn' (default, fast, l ≤ 1) or 'equivariant-ace' (MACE-style, l_max 2)."),
    cutoff: Optional[float] = typer.Option(None, "--cutoff", help="Neighbour cutoff in Å (default 5)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float32 (default) or float64."),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", help="Maximum number of epochs (default 300)."),
    max_time: Optional[float] = typer.Option(None, "--max-time", help="Wall-time budget in MINUTES; the learning-rate schedule anneals within it."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Structures per batch (default 5)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (default 5e-3)."),
    energy_weight: Optional[float] = typer.Option(None, "--energy-weight", help="λ_E, weight of the per-atom energy loss (default 1)."),
    forces_weight: Optional[float] = typer.Option(None, "--forces-weight", help="λ_F, weight of the force loss (default 100)."),
    energy_loss: Optional[str] = typer.Option(None, "--energy-loss", help="Per-atom energy loss: mse (default) or mae."),
    forces_loss: Optional[str] = typer.Option(None, "--forces-loss", help="Force loss: mse of components (default) or l2 (per-atom norm)."),
    patience: Optional[int] = typer.Option(None, "--patience", help="Early-stopping patience in epochs (default off)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto (default: GPU if present), cpu, cuda."),
    devices: Optional[int] = typer.Option(None, "--devices", help="Number of devices/processes (with --strategy ddp or under torchrun)."),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="'auto' or 'ddp' (data-parallel; gloo on CPU, nccl on GPU)."),
    dens: bool = typer.Option(False, "--dens", help="Train with the DeNS denoising objective (published small-molecule settings; "
                              "the loss form stays the one set by --energy-loss/--forces-loss)."),
    init: Optional[Path] = typer.Option(None, "--init", help="Fine-tune: start from this forcefit model file (model.pt), or a model shipped with forcefit by name (organic-gfn2)."),
    finetune_mode: Optional[str] = typer.Option(None, "--finetune", help="With --init: all (default), freeze-backbone, or backbone-lr=FACTOR."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for splits, initialisation, shuffling and noise (default 0)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default runs/default): checkpoints, logs, model.pt, metrics, plots."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint (its saved config, flags override)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
):
    """Train a force field. Writes OUT/model.pt, OUT/metrics.json, OUT/parity.png, OUT/learning_curve.png."""
    from .config import FinetuneConfig, build_config, load_yaml
    from .training.run import train as run_train

    try:
        base = load_yaml(config) if config else {}
        if resume:
            saved = Path(out or base.get("out", "runs/default")) / "config.yaml"
            if not saved.exists():
                fail(f"{saved.parent}: nothing to resume (no config.yaml)")
            base = load_yaml(saved)
            if config:
                err_console.print(f"note: --resume continues with {saved}; --config only located the run "
                                  "(change settings with flags)", highlight=False, soft_wrap=True)
        if dens and not ("dens" in base or _has_objective(base, "dens")):
            base["objective"] = [e for e in _objective_entries(base) if e.get("kind") != "supervised"] + [{"kind": "dens"}]
        if finetune_mode and not (init or base.get("finetune")):
            fail("--finetune needs --init MODEL_FILE (the model to fine-tune)")
        finetune = {**({"init": str(init)} if init else {}), **(FinetuneConfig.parse_mode(finetune_mode) if finetune_mode else {})}
        overrides = {
            "data": {"train": [str(p) for p in train_files] if train_files else None, "valid": [str(p) for p in valid] if valid else None,
                     "valid_fraction": valid_fraction, "test": [str(p) for p in test] if test else None, "level": level,
                     "max_train": max_train, "e0s": e0s},
            "model": {"name": model, "cutoff": cutoff, "dtype": dtype},
            "training": {"max_epochs": max_epochs, "max_time": max_time, "batch_size": batch_size, "lr": lr,
                         "energy_weight": energy_weight, "forces_weight": forces_weight, "patience": patience,
                         "energy_loss": energy_loss, "forces_loss": forces_loss,
                         "device": device, "devices": devices, "strategy": strategy, "progress": False if no_progress else None},
            "finetune": finetune or None,
            "seed": seed,
            "out": str(out) if out else None,
        }
        cfg = build_config(base, overrides, source=str(config or "command line"))
        result = run_train(cfg, resume=resume)
    except _user_errors() as exc:
        fail(str(exc))
    if result.metrics:
        from .evaluate import metrics_table

        console.print(metrics_table(result.metrics, title=f"{result.metrics.get('split', '')} set"))
    console.print(f"model written to [bold]{result.model_path}[/]")


def _objective_entries(base: dict) -> list[dict]:
    entries = base.get("objective") or []
    return [dict(e) if isinstance(e, dict) else {"kind": e} for e in (entries if isinstance(entries, list) else [entries])]


def _has_objective(base: dict, kind: str) -> bool:
    return any(e.get("kind") == kind for e in _objective_entries(base))


@app.command("eval")
def evaluate_cmd(
    model_path: Path = typer.Argument(..., help="Model file written by `forcefit train` (model.pt)."),
    data_file: Path = typer.Argument(..., help="Frames with reference energies/forces."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write metrics (meV, meV/atom, meV/Å) as JSON."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a parity plot PNG."),
    level: Optional[str] = typer.Option(None, "--level", help="Level of theory: the head a multi-level model predicts with "
                                        "(default: its default level), and the level read from a campaign .db."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    device: str = typer.Option("cpu", "--device"),
):
    """Evaluate a model on labelled frames: MAE/RMSE table per config_type, optional JSON and parity plot."""
    from .data import read_frames, validate_frames
    from .evaluate import evaluate, metrics_table, parity_plot
    from .model_file import load_model

    try:
        potential = load_model(model_path, device=device)
        head = level if level is not None and level in potential.levels else None
        if level is not None and head is None and len(potential.levels) > 1:
            fail(f"{model_path}: level '{level}' is not one of this model's levels ({', '.join(potential.levels)})")
        frames = read_frames(data_file, level=level)
        validate_frames(frames, "evaluation", need_energy=False, need_forces=False, species=potential.species)
        metrics, predictions = evaluate(potential, frames, batch_size=batch_size, device=device, level=head)
    except _user_errors() as exc:
        fail(str(exc))
    console.print(metrics_table(metrics, title=str(data_file)))
    if json_out:
        write_text_atomic(json_out, json.dumps(metrics, indent=2))
    if plot:
        parity_plot(frames, predictions, plot)


@app.command()
def md(
    model_path: Path = typer.Argument(..., help="Model file (model.pt)."),
    structure: Path = typer.Argument(..., help="Starting structure (first frame of any ASE-readable file)."),
    temperature: float = typer.Option(500.0, "--temperature", help="Langevin thermostat temperature (K)."),
    timestep: float = typer.Option(0.5, "--timestep", help="Time step (fs)."),
    steps: int = typer.Option(1000, "--steps"),
    seed: int = typer.Option(0, "--seed"),
    trajectory: Optional[Path] = typer.Option(None, "--trajectory", help="Write the trajectory (ASE .traj or .xyz)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a stability plot PNG."),
    proton_transfer: bool = typer.Option(False, "--proton-transfer", help="A hydrogen on O/N/F may move along a hydrogen "
                                         "bond to its acceptor without counting as a collapse (e.g. an enol proton)."),
):
    """Run NVT molecular dynamics with a trained model and report stability and steps per second."""
    import ase.io

    from .data import validate_frames
    from .data.readers import frame_from_atoms
    from .model_file import load_model
    from .simulate.calculator import ForcefitCalculator
    from .simulate.md import run_md, stability_plot

    try:
        potential = load_model(model_path)
        atoms = ase.io.read(str(structure), index=0)
        # elements the model does not know, atoms on top of each other: one clear line before any step
        validate_frames([frame_from_atoms(atoms, str(structure), 0)], "md", need_energy=False, need_forces=False,
                        species=potential.species)
    except _user_errors() as exc:
        fail(str(exc))
    except Exception as exc:
        fail(f"{structure}: cannot read a structure ({exc})")
    try:
        result = run_md(atoms, ForcefitCalculator(potential), temperature=temperature, timestep_fs=timestep, steps=steps,
                        seed=seed, trajectory=str(trajectory) if trajectory else None, proton_transfer=proton_transfer)
    except ValueError as exc:  # e.g. a --trajectory format that cannot hold frames
        fail(str(exc))
    console.print(f"{result.steps_done} steps, {result.steps_per_second:.1f} steps/s, "
                  + (f"collapsed after {result.time_to_collapse_fs:.1f} fs" if result.collapsed else "stable"))
    if plot:
        stability_plot(result, plot)


@app.command()
def compare(
    model_a: Path = typer.Argument(..., help="Model A, the baseline (model.pt)."),
    model_b: Path = typer.Argument(..., help="Model B, compared against A (model.pt)."),
    frames: list[Path] = typer.Argument(..., help="Labelled frames (energy and forces); each file is reported, and all of them together."),
    resamples: int = typer.Option(10000, "--resamples", min=1, help="Bootstrap resamples of the frames."),
    seed: int = typer.Option(0, "--seed", help="Seed of the resampling."),
    level: Optional[str] = typer.Option(None, "--level", help="Level of theory when reading a campaign .db."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the table's rows (and per-frame force errors) as JSON."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG of per-frame force MAE, A against B, with the y = x line."),
):
    """Compare two models frame by frame: MAE change of B against A with a paired bootstrap 95% interval."""
    from rich.markup import escape

    from .compare import compare as run_compare, comparison_plot, comparison_table

    try:
        result = run_compare(model_a, model_b, frames, resamples=resamples, seed=seed, level=level)
    except _user_errors() as exc:
        fail(escape(str(exc)))
    console.print(comparison_table(result))
    if json_out:
        write_text_atomic(json_out, json.dumps(result, indent=2))
    if plot:
        comparison_plot(result, plot)


@app.command()
def demo(
    out: Path = typer.Option(Path("forcefit_demo"), "--out", help="Folder for the demo's data, model and plots."),
    frames: int = typer.Option(240, "--frames", help="Number of GFN2-xTB MD frames to sample and label."),
    minutes: float = typer.Option(2.0, "--minutes", help="Training wall-time budget in minutes."),
):
    """End to end on an embedded default: GFN2-xTB ethanol data → train → evaluate → MD. No downloads.

    Needs the label extra (tblite for GFN2-xTB, RDKit for the ethanol SMILES).
    """
    from .demo import run_demo
    from .extras import MissingExtra, require

    try:
        for module in ("tblite.interface", "rdkit"):
            require(module, "the demo (it samples and labels ethanol with GFN2-xTB)")
    except MissingExtra as exc:
        from rich.markup import escape

        fail(escape(str(exc)))  # "[label]" is not rich markup
    run_demo(out, n_frames=frames, minutes=minutes, console=console)


@app.command()
def pipeline(
    config: Optional[Path] = typer.Argument(None, help="Pipeline config (YAML); see --example asteroid."),
    report: bool = typer.Option(False, "--report", help="Print the comparison table of the finished recipes and write "
                                "OUT/report.json and OUT/report.png (accuracy against labelling cost); trains nothing."),
    example: Optional[str] = typer.Option(None, "--example", help="Print a commented example config: asteroid."),
    resamples: int = typer.Option(10000, "--resamples", min=1, help="Bootstrap resamples of the paired comparisons (--report)."),
):
    """Run every stage of every recipe in order (finished stages are skipped, a killed one resumes), or report on them."""
    from rich.markup import escape

    if example is not None:
        from .pipeline.example import EXAMPLES

        if example not in EXAMPLES:
            fail(f"--example {example}: choose from {', '.join(EXAMPLES)}")
        typer.echo(EXAMPLES[example], nl=False)
        return
    if config is None:
        fail("give a pipeline config (forcefit pipeline --example asteroid prints one)")
    from .pipeline import Pipeline, PipelineConfig
    from .pipeline.report import build_report, report_table

    try:
        cfg = PipelineConfig.load(config)
        if report:
            result = build_report(cfg.out, cfg.recipes, resamples=resamples)
            console.print(report_table(result))
            for p in result["paired"]:
                console.print(f"{p['other']} against {p['baseline']}: force MAE {p['forces_change_pct']:+.1f}% "
                              f"[{p['ci_low_pct']:+.1f}, {p['ci_high_pct']:+.1f}] (paired bootstrap, 95%)", highlight=False)
            console.print(f"written: {Path(cfg.out) / 'report.json'}, {Path(cfg.out) / 'report.png'}", highlight=False)
            return
        Pipeline(cfg, log=lambda line: console.print(escape(line), highlight=False)).run()
    except _user_errors() as exc:
        fail(escape(str(exc)))
    except KeyboardInterrupt:
        fail("interrupted: finished stages are kept and a stage resumes from its last checkpoint; run the same command again")
    console.print(f"done: forcefit pipeline {config} --report compares the recipes", highlight=False)


@app.command()
def pretrain(
    pool: Path = typer.Option(..., "--pool", help="Packed pool (forcefit pack), streamed: memory does not grow with its size."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML run configuration (model, training, objective ...); "
                                          "the objective defaults to force-centric and training.energy_weight to 0."),
    valid: Optional[list[Path]] = typer.Option(None, "--valid", help="Validation frames (default: valid_fraction of the pool)."),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", help="Maximum number of epochs."),
    max_time: Optional[float] = typer.Option(None, "--max-time", help="Wall-time budget in MINUTES."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default runs/pretrain)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
):
    """Force-centric pretraining on a packed pool (forces of off-equilibrium frames, zero-force and denoising on
    equilibrium ones). Data-parallel under torchrun with training.strategy: ddp. Fine-tune with train --init OUT/model.pt."""
    from rich.markup import escape

    from .config import build_config, load_yaml
    from .training.run import train as run_train

    try:
        base = load_yaml(config) if config else {}
        base.setdefault("objective", {"kind": "force-centric"})
        base.setdefault("training", {}).setdefault("energy_weight", 0.0)
        base.setdefault("out", "runs/pretrain")
        overrides = {"data": {"train": [str(pool)], "stream": True, "valid": [str(v) for v in valid] if valid else None},
                     "training": {"max_epochs": max_epochs, "max_time": max_time, "progress": False if no_progress else None},
                     "out": str(out) if out else None}
        cfg = build_config(base, overrides, source=str(config or "pretrain"))
        result = run_train(cfg, resume=resume)
    except _user_errors() as exc:
        fail(escape(str(exc)))
    console.print(f"pretrained model: {result.model_path} (fine-tune it: forcefit train --train target.xyz --init {result.model_path})",
                  highlight=False)


@app.command()
def pack(
    sources: list[str] = typer.Argument(..., help="Frame files: extxyz or any ASE format, ASE or campaign .db, MD17 .npz, "
                                         "ANI-1x or SPICE .h5, other pools. FILE:LEVEL picks a campaign's or ANI-1x file's level."),
    out: Path = typer.Option(..., "--out", help="The pool file to write (HDF5, e.g. pool.h5); written whole or not at all."),
    level: Optional[str] = typer.Option(None, "--level", help="Level of theory for the sources not written as FILE:LEVEL."),
    neighbor_cutoff: float = typer.Option(5.0, "--neighbor-cutoff", min=0.1, help="Cutoff (Å) of the mean neighbour count in the statistics."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
):
    """Pack frames of many files into one streamable pool file, with statistics (E0s per level, force RMS, neighbours)."""
    import time

    from ase.data import chemical_symbols
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from .data.errors import DataError
    from .data.packed import pack as pack_pool

    bar = Progress(TextColumn("pack"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err_console, disable=no_progress)
    task, t0 = bar.add_task("pack", total=None, rate=""), time.perf_counter()

    def report(done: int, expected: int | None) -> None:
        bar.update(task, completed=done, total=expected, rate=f"{done / max(time.perf_counter() - t0, 1e-9):.0f} frames/s")

    try:
        with bar:
            stats = pack_pool(sources, out, level=level, neighbor_cutoff=neighbor_cutoff, progress=report)
    except DataError as exc:  # the only user error here; _user_errors() would import the training stack for nothing
        fail(escape(str(exc)))
    lines = [f"{out}: {stats['frames']} frames, {stats['atoms']} atoms from {len(stats['sources'])} source(s); "
             f"elements {' '.join(chemical_symbols[z] for z in stats['elements'])}"]
    for name, counts in stats["levels"].items():
        e0s = stats["e0s"].get(name)
        fitted = ", ".join(f"{chemical_symbols[z]} {e:.4f}" for z, e in e0s.items()) if e0s else "none (no energies)"
        lines.append(f"level {name}: {counts['frames']} frames ({counts['with_energy']} with energy, "
                     f"{counts['with_forces']} with forces); E0s (eV) {fitted}")
    rms = stats["force_rms"]
    lines.append(f"force RMS {'–' if rms is None else f'{rms:.4f} eV/Å'}; "
                 f"mean neighbours within {stats['neighbor_cutoff']:g} Å: {stats['mean_neighbors']:.1f}")
    for line in lines:
        console.print(line, markup=False, highlight=False)  # file and level names are not rich markup


def _register_labelling() -> None:
    """The labelling commands are always listed: they import tblite, PySCF, RDKit and Dask only when run,
    and say "install forcefit[label]" (or "[dask]") when the package they need is missing."""
    from .labeling.cli import register

    register(app)


_register_labelling()


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
