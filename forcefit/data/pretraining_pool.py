"""The pretraining pool: small C/H/N/O molecules, GFN2-xTB minima and MD, labelled through the labelling engine.

Force-centric pretraining needs many varied structures: equilibrium
geometries (trained without labels) and off-equilibrium frames with forces.
``build_pool`` makes both for every molecule of the shipped SMILES list
(``smiles_list``): RDKit conformers relaxed with the cheap method (tagged
``equilibrium``) and Langevin MD from each minimum at several temperatures,
all stored in one campaign and labelled there, then packed into one file.

What a build leaves in ``out_dir``::

    pool.db          the campaign: every structure, its labels at the method's level, their CPU cost
    molecules.jsonl  the resume ledger: the sampling settings, then one line per molecule sampled or failed
    pool.h5          the packed pool (forcefit.data.packed), rewritten at the end of every build
    pool.json        the summary of everything built into the folder: molecules done and failed, frames, CPU seconds

A rerun skips every molecule in the ledger (failed ones too: their failures
are deterministic) and the campaign resumes labelling, so a killed build
loses at most the molecules being sampled. The engine is imported only
when a pool is built: the data layer itself does not depend on it.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from importlib.resources import files
from pathlib import Path

from .errors import DataError

SMILES_FILE = "pretraining_smiles.txt"
LEDGER, CAMPAIGN, POOL, SUMMARY = "molecules.jsonl", "pool.db", "pool.h5", "pool.json"


def smiles_list() -> list[str]:
    """The shipped molecules, in file order (``forcefit/data/pretraining_smiles.txt``).

    A line is a SMILES, then optionally whitespace and ``# name``; a line
    starting with ``#`` is a comment ("#" alone cannot mark comments: it is
    the SMILES triple bond).
    """
    text = files(__package__).joinpath(SMILES_FILE).read_text(encoding="utf-8")
    return [line.split()[0] for line in map(str.strip, text.splitlines()) if line and not line.startswith("#")]


def _seed(seed: int, *parts) -> int:
    """A seed per (molecule, stage), so molecules and temperatures never share random streams."""
    digest = hashlib.sha256(":".join(map(str, (seed, *parts))).encode()).digest()
    return int.from_bytes(digest[:4], "little") % 2**31


def sample_molecule(smiles: str, settings: dict) -> dict:
    """Minima and MD frames of one molecule (``settings``: see ``build_pool``); never raises.

    Returns ``{"smiles", "frames" (ase.Atoms list) or None, "error", "cpu_seconds"}``:
    a molecule that RDKit cannot embed or whose SCF fails comes back with
    the error text, so one molecule never stops a build. CPU seconds are
    this process's, so they are right in a worker process too.
    """
    from ..labeling.samplers import make_calculator, optimise, sample_md
    from ..labeling.structures import from_smiles

    t0 = time.process_time()
    try:
        calc = make_calculator(settings["method"])
        starts = from_smiles(smiles, settings["conformers"], seed=_seed(settings["seed"], smiles, "conformers"))
        minima = optimise(starts, calc)
        frames = list(minima)
        every = settings["md_every"]
        for t in settings["temperatures"]:
            frames += sample_md(minima, calc, temperature=t, steps=settings["md_frames_per_temperature"] * every,
                                every=every, seed=_seed(settings["seed"], smiles, t), optimise_first=False)
        result = {"frames": frames, "error": None}
    except Exception as exc:  # any failure of this molecule (RDKit, SCF, MD) is recorded, not raised
        result = {"frames": None, "error": f"{type(exc).__name__}: {exc}"}
    return {"smiles": smiles, **result, "cpu_seconds": time.process_time() - t0}


class _Ledger:
    """``molecules.jsonl``: the sampling settings on the first line, then one record per finished molecule.

    Appended and flushed line by line; a line cut short by a killed build
    is dropped when the ledger is opened again.
    """

    def __init__(self, path: Path, settings: dict):
        self.path, self.records = path, {}
        lines = path.read_text(encoding="utf-8").split("\n") if path.exists() else []
        complete = [line for line in lines[:-1] if line.strip()]  # the text after the last newline is cut short or empty
        if lines and lines[-1]:
            path.write_text("".join(line + "\n" for line in complete), encoding="utf-8")
        if not complete:
            self._append({"settings": settings})
            return
        first = self._parse(complete[0], 1)
        if first.get("settings") != settings:
            old = first.get("settings") or {}
            diff = ", ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in sorted(set(old) | set(settings))
                             if old.get(k) != settings.get(k))
            raise DataError(f"this pool was sampled with other settings ({diff}); build into another folder", file=str(path))
        for k, line in enumerate(complete[1:], start=2):
            record = self._parse(line, k)
            self.records[record["smiles"]] = record

    def _parse(self, line: str, number: int) -> dict:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"line {number} is not JSON ({exc}); fix or delete it", file=str(self.path)) from None
        if not isinstance(record, dict) or ("settings" if number == 1 else "smiles") not in record:
            raise DataError(f"line {number} is not a ledger record; fix or delete it", file=str(self.path))
        return record

    def _append(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def add(self, record: dict) -> None:
        self.records[record["smiles"]] = record
        self._append(record)


def build_pool(
    out_dir: str | Path,
    smiles=None,
    conformers: int = 2,
    temperatures=(300, 500, 800),
    md_frames_per_temperature: int = 10,
    md_every: int = 20,
    seed: int = 0,
    method: str = "gfn2",
    workers: int = 1,
    progress: bool = True,
) -> Path:
    """Sample, label and pack a pretraining pool into ``out_dir``; resumable. Returns the path of ``pool.h5``.

    smiles: the molecules (default: ``smiles_list()``). Per molecule,
    ``conformers`` RDKit conformers are relaxed with ``method`` (BFGS; kept as
    equilibrium frames), and from each minimum Langevin MD at every
    temperature (K) keeps ``md_frames_per_temperature`` snapshots, one every
    ``md_every`` steps of 0.5 fs. Every frame is then labelled with
    ``method`` in the campaign (the force-centric objective ignores the
    labels of equilibrium frames). workers: processes sampling molecules in
    parallel (labelling runs in this process, between molecules; a worker
    process that crashes stops the build, and a rerun resumes it). A rerun
    with the same settings skips the molecules already done or failed;
    other settings in the same folder are refused.
    """
    from ..atomic_file import write_text_atomic
    from ..labeling.campaign import Campaign
    from ..labeling.progress import Progress
    from ..labeling.runner import label
    from .packed import pack

    molecules = list(dict.fromkeys(smiles_list() if smiles is None else [str(s).strip() for s in smiles]))
    if not molecules or not all(molecules):
        raise DataError("no molecules to build a pool from (or an empty SMILES)", field="smiles")
    if conformers < 1 or md_frames_per_temperature < 1 or md_every < 1 or workers < 1:
        raise DataError("conformers, md_frames_per_temperature, md_every and workers must be at least 1", field="build_pool")
    settings = {"method": method, "conformers": int(conformers), "temperatures": [float(t) for t in temperatures],
                "md_frames_per_temperature": int(md_frames_per_temperature), "md_every": int(md_every), "seed": int(seed)}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ledger = _Ledger(out_dir / LEDGER, settings)
    camp = Campaign(out_dir / CAMPAIGN)
    todo = [s for s in molecules if s not in ledger.records]

    bar = Progress(progress, len(todo), f"pool: sampling and {method} labels", unit="molecule")
    done = failed = 0
    try:
        for result in _sampled(todo, settings, workers):
            if result["error"] is not None:
                failed += 1
                ledger.add({"smiles": result["smiles"], "status": "failed", "error": result["error"],
                            "cpu_seconds": result["cpu_seconds"]})
                bar.note(f"warning: skipped molecule '{result['smiles']}': {result['error']}")
            else:
                frames = result["frames"]
                camp.add(frames, source=f"smiles:{result['smiles']}")
                label(camp, method, progress=False)
                n_eq = sum(1 for a in frames if a.info.get("equilibrium"))
                ledger.add({"smiles": result["smiles"], "status": "done", "equilibrium": n_eq, "md": len(frames) - n_eq,
                            "cpu_seconds": result["cpu_seconds"]})
            done += 1
            bar.advance(done, len(todo), failed)
    finally:
        bar.close()

    report = label(camp, method, progress=False)  # what a killed build left unlabelled
    records = list(ledger.records.values())
    if not any(r["status"] == "done" for r in records):
        raise DataError(f"no molecule could be sampled ({len(records)} failed; see {ledger.path})", file=str(out_dir))
    stats = pack([camp.path], out_dir / POOL, level=report.level)
    level_info = camp.info()["levels"][report.level]
    ok = [r for r in records if r["status"] == "done"]
    sampling_cpu = sum(r["cpu_seconds"] for r in records)
    summary = {
        "molecules": {"done": len(ok), "failed": [{"smiles": r["smiles"], "error": r["error"]} for r in records
                                                  if r["status"] == "failed"]},
        "frames": {"pool": stats["frames"], "equilibrium": sum(r["equilibrium"] for r in ok), "md": sum(r["md"] for r in ok),
                   "label_failures": level_info["failed"]},
        "cpu_seconds": {"sampling": sampling_cpu, "labelling": level_info["cpu_total"],
                        "per_molecule_done": (sampling_cpu + level_info["cpu_total"]) / len(ok)},
        "level": report.level, "settings": settings, "elements": stats["elements"],
    }
    write_text_atomic(out_dir / SUMMARY, json.dumps(summary, indent=1) + "\n")
    return out_dir / POOL


def _sampled(todo: list[str], settings: dict, workers: int):
    """Sampling results as they finish: in this process for one worker, else in spawned worker processes."""
    if workers == 1 or len(todo) <= 1:
        for s in todo:
            yield sample_molecule(s, settings)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pool = ProcessPoolExecutor(min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn"))
    try:
        for future in as_completed([pool.submit(sample_molecule, s, settings) for s in todo]):
            yield future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
