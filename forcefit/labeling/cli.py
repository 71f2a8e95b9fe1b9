"""Command-line commands of the labelling engine: sample, label, export-data, campaign-info.

``register(app)`` adds them to the main ``forcefit`` Typer app. Bad input is
reported as one line naming the file or option, with exit code 2.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

import typer

CAMPAIGN_HELP = "Campaign database: a .db file (SQLite) or a postgresql:// URL."


def _friendly(fn):
    """Turn DataError, and a missing package of an extra, into one 'error: ...' line and exit code 2;
    Ctrl-C into a resumable note."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ..data.errors import DataError
        from ..extras import as_missing_extra

        try:
            return fn(*args, **kwargs)
        except DataError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except ImportError as exc:  # a package of the label or dask extra is not installed
            missing = as_missing_extra(exc)
            if missing is None:
                raise
            typer.echo(f"error: {missing}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: finished labels are saved; run the same command again to resume", err=True)
            raise typer.Exit(130) from None

    return wrapper


def _bad(message: str, field: str | None = None, file: str | None = None):
    from ..data.errors import DataError

    return DataError(message, file=file, field=field)


def sample(
    out: str = typer.Option(..., "--out", "-o", help=CAMPAIGN_HELP + " Created if missing; structures are added (deduplicated)."),
    smiles: Optional[str] = typer.Option(None, "--smiles", help="Start from this molecule (RDKit ETKDG conformers)."),
    from_: Optional[Path] = typer.Option(None, "--from", help="Start from the structures in this file (any ASE format, or a .db campaign)."),
    conformers: int = typer.Option(1, "--conformers", help="Number of RDKit conformers to start from (with --smiles)."),
    method: str = typer.Option("gfn2", "--method", help="Cheap method driving the sampler: gfn2, gfn1, ipea1, or module:factory (an ASE calculator)."),
    normal_modes: bool = typer.Option(False, "--normal-modes", help="Normal-mode sampling (harmonic Boltzmann displacements) instead of MD."),
    rattle_stdev: Optional[float] = typer.Option(None, "--rattle", help="Random rattling with this standard deviation (Å) instead of MD."),
    temperature: float = typer.Option(300.0, "--temperature", "-T", help="Temperature in K (MD and normal modes)."),
    steps: int = typer.Option(2000, "--steps", help="MD steps per start structure."),
    every: int = typer.Option(10, "--every", help="Keep an MD snapshot every this many steps."),
    timestep: float = typer.Option(0.5, "--timestep", help="MD time step in fs."),
    friction: float = typer.Option(0.01, "--friction", help="Langevin friction in 1/fs."),
    n: int = typer.Option(100, "--n", help="Structures per start structure (normal modes, rattling)."),
    optimise_first: bool = typer.Option(True, "--optimise/--no-optimise", help="Relax start structures with the cheap method first."),
    add_minimum: bool = typer.Option(False, "--add-minimum", help="Also store the relaxed structure, tagged as an equilibrium geometry."),
    config_type: Optional[str] = typer.Option(None, "--config-type", help="Tag for the new structures (default: md_<T>K, nm_<T>K or rattle_<stdev>)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (conformers, velocities, displacements)."),
):
    """Sample structures with a cheap method (MD, normal modes, rattling) into a campaign."""
    _friendly(_sample)(**locals())


def _sample(out, smiles, from_, conformers, method, normal_modes, rattle_stdev, temperature, steps, every, timestep,
            friction, n, optimise_first, add_minimum, config_type, seed):
    from . import samplers
    from .campaign import Campaign
    from .structures import from_smiles, read_structures

    if (smiles is None) == (from_ is None):
        raise _bad("give exactly one of --smiles or --from", field="--smiles/--from")
    if normal_modes and rattle_stdev is not None:
        raise _bad("choose one sampler: --normal-modes or --rattle", field="--normal-modes/--rattle")
    if n < 1 or steps < 1 or every < 1 or temperature < 0:
        raise _bad("--n, --steps and --every must be positive and --temperature non-negative", field="--n/--steps/--every")
    starts = from_smiles(smiles, conformers, seed) if smiles is not None else read_structures(from_)
    if rattle_stdev is None:
        calc = samplers.make_calculator(method)  # checks the method before any work
    camp = Campaign(out)
    extra = []
    if (optimise_first and rattle_stdev is None) or add_minimum:
        starts = samplers.optimise(starts, calc if rattle_stdev is None else samplers.make_calculator(method), seed=seed)
        if add_minimum:
            extra = starts
    if normal_modes:
        frames = samplers.sample_normal_modes(starts, calc, temperature, n, seed, optimise_first=False, config_type=config_type)
    elif rattle_stdev is not None:
        frames = samplers.rattle(starts, rattle_stdev, n, seed, config_type=config_type)
    else:
        frames = samplers.sample_md(starts, calc, temperature, steps, every, timestep, friction, seed,
                                    optimise_first=False, config_type=config_type)
    new = camp.add(list(extra) + frames, source=str(from_) if from_ else f"smiles:{smiles}")
    typer.echo(f"{out}: added {len(new)} structures ({len(extra) + len(frames) - len(new)} already present); {len(camp)} in total")


def label(
    path: str = typer.Argument(..., help="Campaign to label, or (with --out) a structure file to label into a new campaign."),
    method: str = typer.Option("gfn2", "--method", "-m", help="gfn2, gfn1, ipea1 (tblite) or dft (PySCF)."),
    calculator: Optional[str] = typer.Option(None, "--calculator", help="Any ASE calculator, built by a factory 'module:function' or 'file.py:function'."),
    level: Optional[str] = typer.Option(None, "--level", help="Name the labels are stored under (default: gfn2, gfn1, dft, or the factory's name)."),
    xc: Optional[str] = typer.Option(None, "--xc", help="DFT functional (PySCF name) (default: PBE)."),
    basis: Optional[str] = typer.Option(None, "--basis", help="DFT basis set (default: def2-svp)."),
    density_fit: Optional[bool] = typer.Option(None, "--density-fit/--no-density-fit", help="DFT density fitting (default: on)."),
    grid_level: Optional[int] = typer.Option(None, "--grid-level", help="DFT integration grid level 0-9 (default: 3)."),
    dispersion: Optional[str] = typer.Option(None, "--dispersion", help="DFT dispersion correction: d3bj, d3zero, d3mbj, d3op (needs the dftd3 package)."),
    charge: Optional[int] = typer.Option(None, "--charge", help="Total charge (default: each structure's own, usually 0)."),
    multiplicity: Optional[int] = typer.Option(None, "--multiplicity", help="Spin multiplicity 2S+1 (default: from each structure, usually 1)."),
    select: Optional[int] = typer.Option(None, "--select", help="Label only this many structures in total at this level (rerunning resumes the same subset)."),
    select_by: str = typer.Option("random", "--select-by", help="How --select chooses: random, fps (farthest point in a descriptor space), uncertainty (not yet)."),
    seed: int = typer.Option(0, "--seed", help="Random seed for --select."),
    workers: int = typer.Option(1, "--workers", "-j", help="Parallel worker processes (1: xTB runs in this process, no worker)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="OpenMP threads per worker (default: 1 for xTB, cores/workers for DFT)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Run on a Dask distributed cluster at this address (tcp://host:port)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Import the structures of PATH into this campaign (created if missing) and label it there."),
    config_type: Optional[str] = typer.Option(None, "--config-type", help="Tag for structures imported with --out (default: their config_type, else 'default')."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Try structures that failed before once more (with safer settings)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar with labels per second and ETA."),
):
    """Label a campaign's structures with a reference method; resumable, failures recorded."""
    _friendly(_label)(**locals())


def _label(path, method, calculator, level, xc, basis, density_fit, grid_level, dispersion, charge, multiplicity, select,
           select_by, seed, workers, threads, scheduler, out, config_type, retry_failed, progress):
    from .campaign import Campaign
    from .runner import label as run_label
    from .structures import read_structures

    if calculator is not None:
        if method != "gfn2":
            raise _bad("give either --method or --calculator, not both", field="--calculator")
        if ":" not in calculator:
            raise _bad(f"'{calculator}' is not of the form module:function (or file.py:function)", field="--calculator")
        method = calculator
    if multiplicity is not None and multiplicity < 1:
        raise _bad(f"multiplicity must be at least 1, got {multiplicity}", field="--multiplicity")
    settings = dict(xc=xc, basis=basis, density_fit=density_fit, grid_level=grid_level, dispersion=dispersion, charge=charge)
    kind = method.strip().lower()
    if multiplicity is not None:
        settings["spin" if kind == "dft" else "multiplicity"] = multiplicity - 1 if kind == "dft" else multiplicity
    from .calculators import make_method

    m = make_method(method, **settings)  # validate before touching any file
    if out is not None:
        structures = read_structures(path)
        camp = Campaign(out)
        new = camp.add(structures, config_type=config_type, source=path)
        typer.echo(f"{out}: imported {len(new)} new structures from {path}", err=True)
    else:
        if not ("://" in path or Path(path).suffix.lower() == ".db"):
            raise _bad("is a structure file, not a campaign: add --out new.db to label it into a new campaign", file=path)
        camp = Campaign(path, create=False)
    report = run_label(camp, m, level=level, select=select, select_by=select_by, seed=seed, workers=workers,
                       threads=threads, scheduler=scheduler, retry_failed=retry_failed, progress=progress)
    typer.echo(str(report))
    for row_id, error in report.errors[:5]:
        typer.echo(f"  structure {row_id}: {error}", err=True)
    if len(report.errors) > 5:
        typer.echo(f"  ... {len(report.errors) - 5} more; see 'forcefit campaign-info {camp.path} --failures'", err=True)


def export_data(
    campaign: str = typer.Argument(..., help=CAMPAIGN_HELP),
    level: Optional[str] = typer.Option(None, "--level", help="Level of theory to export (may be left out when the campaign has one)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output file; extended XYZ for .xyz/.extxyz, else any format ASE writes."),
):
    """Write the structures labelled at one level as extended XYZ (energy, forces, config_type, level)."""
    _friendly(_export)(campaign, level, out)


def _export(campaign, level, out):
    import ase.io

    from ..atomic_file import atomic_path
    from .campaign import Campaign

    frames = Campaign(campaign, create=False).frames(level)
    fmt = "extxyz" if out.suffix.lower() in (".xyz", ".extxyz") else None
    try:
        with atomic_path(out) as tmp:
            ase.io.write(str(tmp), [f.to_atoms() for f in frames], format=fmt)
    except Exception as exc:
        raise _bad(f"cannot write ({type(exc).__name__}: {exc})", file=str(out)) from exc
    typer.echo(f"{out}: {len(frames)} structures at level '{frames[0].level}'")


def campaign_info(
    campaign: str = typer.Argument(..., help=CAMPAIGN_HELP),
    failures: bool = typer.Option(False, "--failures", help="Also list every failed structure with its error."),
):
    """Counts per level of theory and per tag, and the CPU cost of labels per method."""
    _friendly(_info)(campaign, failures)


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    if s < 120:
        return f"{s:.2f} s"
    return f"{s / 3600:.2f} h" if s > 7200 else f"{s / 60:.1f} min"


def _describe(settings: dict) -> str:
    if settings.get("method") == "dft":
        disp = f"+{settings['dispersion']}" if settings.get("dispersion") else ""
        return f"DFT {settings.get('xc')}{disp}/{settings.get('basis')}{' (DF)' if settings.get('density_fit') else ''}"
    if settings.get("method") == "calculator":
        return f"ASE calculator {settings.get('path')}"
    return str(settings.get("method"))


def _info(campaign, show_failures):
    from rich.console import Console
    from rich.table import Table

    from .campaign import Campaign

    import sys

    camp = Campaign(campaign, create=False)
    info = camp.info()
    console = Console(width=None if sys.stdout.isatty() else 120)
    tags = ", ".join(f"{k}: {v}" for k, v in sorted(info["config_types"].items()))
    console.print(f"[bold]{info['path']}[/bold]: {info['structures']} structures ({tags or 'none'})")
    table = Table("level", "method", "labelled", "failed", "retried", "pending", "CPU total", "CPU/label")
    for name, lv in info["levels"].items():
        pending = f"{lv['pending']}" + (f" of {lv['selected']} selected" if lv["selected"] else "")
        table.add_row(name, _describe(lv["settings"]), str(lv["labelled"]), str(lv["failed"]), str(lv["retried"]),
                      pending, _fmt_seconds(lv["cpu_total"]), _fmt_seconds(lv["cpu_mean"]))
    if info["levels"]:
        console.print(table)
    else:
        console.print("no labels yet")
    if show_failures:
        for name in info["levels"]:
            for row_id, records in camp.failures(name):
                for r in records:
                    console.print(f"{name}: structure {row_id}, attempt {r['attempt']}{' (safer)' if r.get('safer') else ''}: {r['error']}",
                                  markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add the labelling commands (sample, label, export-data, campaign-info) to ``app``."""
    app.command("sample")(sample)
    app.command("label")(label)
    app.command("export-data")(export_data)
    app.command("campaign-info")(campaign_info)
