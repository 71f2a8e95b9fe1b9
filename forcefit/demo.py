"""``forcefit demo``: the whole workflow on an embedded default, with nothing to download.

Ethanol from its SMILES → GFN2-xTB Langevin MD at 500 K (the labelling engine)
→ GFN2-xTB labels in a campaign database → train the default model under a
short wall-time budget → evaluate on held-out frames → MD with the trained
model. Prints the tables and writes the plots under ``out``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table


def run_demo(out: Path, n_frames: int = 240, minutes: float = 2.0, console: Console | None = None, seed: int = 0,
             md_steps: int = 1000) -> dict:
    import ase.io

    import forcefit
    from forcefit.atomic_file import atomic_path
    from forcefit.data import split_indices
    from forcefit.evaluate import metrics_table
    from forcefit.labeling import Campaign, label, sample_md
    from forcefit.simulate.md import run_md, stability_plot

    console = console or Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings = {}

    console.rule("1. sample ethanol with GFN2-xTB molecular dynamics (500 K)")
    t = time.perf_counter()
    campaign = Campaign(out / "ethanol.db")
    if campaign.info()["structures"] < n_frames:
        campaign.add(sample_md("CCO", method="gfn2", temperature=500, steps=10 * n_frames, every=10, seed=seed))
    timings["sample"] = time.perf_counter() - t

    console.rule("2. label with GFN2-xTB (resumable campaign database)")
    t = time.perf_counter()
    label(campaign, "gfn2", progress=True)
    frames = campaign.frames("gfn2")
    timings["label"] = time.perf_counter() - t

    test_idx, train_idx = split_indices(len(frames), [0.2, None], seed=seed)
    for name, idx in (("train", train_idx), ("test", test_idx)):
        with atomic_path(out / f"{name}.xyz") as tmp:
            ase.io.write(tmp, [frames[k].to_atoms() for k in idx], format="extxyz")
    console.print(f"{len(train_idx)} training frames (10% of them validate), {len(test_idx)} test frames: {out}/train.xyz, {out}/test.xyz")

    console.rule(f"3. train the default model ({minutes:g}-minute budget)")
    t = time.perf_counter()
    run = out / "run"
    finished = (run / "metrics.json").exists()  # written last, atomically: the run is complete
    result = None if finished else forcefit.train(
        data={"train": out / "train.xyz", "test": out / "test.xyz"},
        training={"max_time": minutes, "max_epochs": 1000},
        out=run, seed=seed, resume=(run / "checkpoints" / "last.ckpt").exists(),
    )
    timings["train"] = time.perf_counter() - t
    metrics = result.metrics if result else json.loads((run / "metrics.json").read_text())
    console.print(metrics_table(metrics, title="4. held-out test frames (GFN2-xTB reference)"))

    console.rule("5. molecular dynamics with the trained model (500 K, 0.5 fs)")
    ff = forcefit.load(run / "model.pt")
    atoms = frames[int(test_idx[0])].to_atoms()
    atoms.calc = ff.calculator
    md = run_md(atoms, ff.calculator, temperature=500, timestep_fs=0.5, steps=md_steps, seed=seed, trajectory=str(out / "md.traj"))
    stability_plot(md, out / "md_stability.png")

    summary = Table(title="forcefit demo summary")
    summary.add_column("what")
    summary.add_column("result", justify="right")
    summary.add_row("frames sampled + labelled (GFN2-xTB)", f"{len(frames)} in {timings['sample'] + timings['label']:.0f} s")
    summary.add_row("training", f"{timings['train']:.0f} s")
    summary.add_row("test force MAE", f"{metrics['forces_mae']:.1f} meV/Å")
    summary.add_row("test energy MAE", f"{metrics['energy_mae_per_atom']:.2f} meV/atom")
    summary.add_row("MD", f"{md.steps_done} steps, {md.steps_per_second:.0f} steps/s, "
                    + (f"collapsed at {md.time_to_collapse_fs:.0f} fs" if md.collapsed else "stable"))
    console.print(summary)
    console.print(f"plots: {run}/parity.png, {run}/learning_curve.png, {out}/md_stability.png")
    return {"metrics": metrics, "md_steps_per_second": md.steps_per_second, "collapsed": md.collapsed}
