"""Running a labelling campaign: in the coordinating thread, a local process pool, or a Dask cluster.

The coordinating process owns the database: it hands structures out and
writes the results it receives in batches, one transaction each
(``Campaign.write_results``), committed once ``COMMIT_LABELS`` = 256 results
wait or ``COMMIT_SECONDS`` = 0.5 s after the previous commit, whichever comes
first, and when the run ends or is interrupted (Ctrl-C commits what has
arrived). A killed run loses at most that one uncommitted batch (plus the
structures being computed); rerunning labels exactly what has no committed
label. Workers only compute (with the in-thread executor, the coordinator computes
between commits).

Where the labels are computed is the executor's business (``executors``):
the coordinating thread for ``workers=1`` and a cheap in-process method
(xTB), worker processes otherwise, or a Dask cluster with ``scheduler``.

A failed attempt is committed with its error text, then retried once with
the method's safer settings; a second failure gives the structure up.
Overlapping atoms are given up at once (no SCF setting can fix them).
"""
from __future__ import annotations

import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..data.campaign_schema import MAX_ATTEMPTS, check_level_name
from ..data.errors import DataError
from .calculators import make_method
from .campaign import Campaign
from .executors import DaskExecutor, InlineExecutor, ProcessExecutor
from .method import Method
from .progress import Progress
from .tasks import Task, screen

COMMIT_LABELS = 256  # results per committed batch at most
COMMIT_SECONDS = 0.5  # s: a result waits at most this long (after the previous commit) to be committed


@dataclass
class LabelReport:
    """What one ``label`` call did."""

    level: str
    method: str
    labelled: int = 0
    failed: int = 0  # given up in this run
    retried: int = 0  # failed attempts that were retried
    remaining: int = 0  # still pending (nothing, unless interrupted)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    errors: list = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.labelled / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        return (f"level '{self.level}' ({self.method}): {self.labelled} labelled, {self.failed} failed, "
                f"{self.retried} retried, {self.remaining} remaining; {self.seconds:.1f} s wall "
                f"({self.rate:.1f} labels/s), {self.cpu_seconds:.1f} CPU s")


def _versions(method: Method) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    names = {"xtb": ["tblite"], "dft": ["pyscf"] + (["dftd3"] if getattr(method, "dispersion", None) else [])}.get(method.kind, ["ase"])
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def _apply_selection(camp: Campaign, level: str, n: int, select_by: str, seed: int, scores=None) -> None:
    """Make ``n`` structures chosen for ``level`` (chosen = selected or labelled, minus given-up ones)."""
    from .selection import select

    rows = camp.status(level)
    chosen = [r["id"] for r in rows if (r["selected"] or r["labelled"]) and not (r["failed"] >= MAX_ATTEMPTS and not r["labelled"])]
    need = n - len(chosen)
    if need <= 0:
        if not any(r["selected"] for r in rows):  # label only this subset from now on
            camp.mark_selected(level, chosen)
        return
    candidates = [r["id"] for r in rows if not r["selected"] and not r["labelled"] and r["failed"] < MAX_ATTEMPTS]
    structures = dict(camp.structures(candidates + chosen)) if select_by == "fps" else {}
    picked = select([structures.get(i) for i in candidates], need, select_by, seed,
                    taken=[structures[i] for i in chosen] if select_by == "fps" else None, scores=scores)
    camp.mark_selected(level, chosen + [candidates[k] for k in picked])


def label(
    campaign,
    method="gfn2",
    *,
    level: str | None = None,
    select: int | None = None,
    select_by: str = "random",
    seed: int = 0,
    workers: int = 1,
    threads: int | None = None,
    scheduler=None,
    retry_failed: bool = False,
    progress: bool = True,
    scores=None,
    **settings,
) -> LabelReport:
    """Label every pending structure of ``campaign`` at ``level`` with ``method``; resumable.

    campaign: a ``Campaign`` or a path/URL to one. method: "gfn2", "gfn1",
    "ipea1", "dft", "module:factory" or a ``Method``; ``settings`` are the
    method's (xc, basis, density_fit, grid_level, charge, spin, dispersion,
    ...). level: the name the labels are stored under (default: the
    method's, e.g. "gfn2" or "dft"). select: label only ``select``
    structures in total at this level, chosen by ``select_by`` ("random",
    "fps", or "uncertainty" with ``scores``); the choice is stored, so the
    same call resumes the same subset and a larger ``select`` tops it up
    (without ``select``, every unlabelled structure is labelled). workers: parallel workers;
    threads: OpenMP threads per worker (xTB: 1; DFT: cores / workers).
    scheduler: a Dask Client, cluster, or "tcp://host:port".
    retry_failed: try given-up structures once more.
    """
    camp = campaign if isinstance(campaign, Campaign) else Campaign(campaign, create=False)
    if workers < 1:
        raise DataError(f"workers must be at least 1, got {workers}", field="workers")
    if threads is not None and threads < 1:
        raise DataError(f"threads must be at least 1, got {threads}", field="threads")
    m = make_method(method, **settings)
    n_threads = threads or m.default_threads(workers)
    if m.kind == "dft":
        import dataclasses

        m = dataclasses.replace(m, threads=n_threads)
    level = check_level_name(level or m.default_level)
    from .selection import SELECTION_METHODS

    if select_by not in SELECTION_METHODS:
        raise DataError(f"unknown selection method '{select_by}'; choose one of {', '.join(SELECTION_METHODS)}", field="select_by")
    report = LabelReport(level=level, method=m.describe())
    t0 = time.perf_counter()
    with camp.session():  # one connection for the whole run (each extra one costs a WAL checkpoint when it closes)
        camp.register_level(level, {**m.settings(), "versions": _versions(m)})
        if select is not None:
            _apply_selection(camp, level, int(select), select_by, seed, scores)
        todo = camp.pending(level, retry_failed, selected_only=select is not None)
        if todo:
            _run(camp, m, level, todo, report, workers=workers, n_threads=n_threads, scheduler=scheduler,
                 progress=progress, selected_only=select is not None)
    report.seconds = time.perf_counter() - t0  # including the final commit and checkpoint
    return report


@contextmanager
def _collect_only_new_garbage():
    """Keep the objects that exist now out of garbage collection until the block ends (``gc.freeze``).

    A run allocates a few objects per label, and every so often that
    triggers a full collection, which walks every object of the process:
    ~90 ms (8% of a 1000-label xTB run) in a process holding a few thousand
    ASE frames, more with torch loaded. Frozen, those old objects are
    skipped; objects made during the run are collected as usual, and the
    old ones rejoin the oldest generation afterwards. Left alone if the
    caller has frozen objects itself or disabled the collector.
    """
    import gc

    if not gc.isenabled() or gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _run(camp: Campaign, m: Method, level: str, todo: list, report: LabelReport, **options) -> None:
    """The labelling loop of ``label`` (inside its campaign session): hand out, collect, commit in batches."""
    with _collect_only_new_garbage():
        _loop(camp, m, level, todo, report, **options)


def _loop(camp: Campaign, m: Method, level: str, todo: list, report: LabelReport, *, workers: int, n_threads: int,
          scheduler, progress: bool, selected_only: bool) -> None:
    by_id = camp.task_structures([i for i, _ in todo])
    runnable, unlabellable = screen(Task(i, by_id[i], attempt=f + 1, safer=f >= 1) for i, f in todo)
    tasks = deque(runnable)
    max_atoms = max(len(s.numbers) for s in by_id.values())
    chunk = max(1, min(m.chunk, 1000 // max_atoms))

    if scheduler is not None:
        executor = DaskExecutor(m, scheduler)
        chunk = max(1, chunk // 2)
        slots = 2 * max(1, sum(executor.client.nthreads().values()))
    elif workers == 1 and m.in_process:
        # labelled in this thread between commits: hand everything over at once
        executor, chunk, slots = InlineExecutor(m), max(1, len(tasks)), 1 << 30
    else:
        executor, slots = ProcessExecutor(m, workers, n_threads), 2 * workers

    total, counter = len(todo), 0
    bar = Progress(progress, total, f"{level}: {m.describe()}")
    in_flight: dict = {}
    received: list = []  # outcomes not yet committed, in arrival order
    for out in unlabellable:  # overlapping atoms: given up at once, committed with the first batch
        out.final = True
        report.errors.append((out.row_id, out.error))
        received.append(out)

    def commit_received():
        camp.write_results(level, received)
        for out in received:
            if out.label is not None:
                report.labelled += 1
            elif out.final:
                report.failed += 1
        received.clear()
        bar.advance(report.labelled + report.failed, total, report.failed)

    try:
        due = time.perf_counter() + COMMIT_SECONDS
        while tasks or in_flight or received:
            while tasks and len(in_flight) < slots:
                batch = [tasks.popleft() for _ in range(min(chunk, len(tasks)))]
                counter += 1
                in_flight[(counter,)] = len(batch)
                executor.submit((counter,), batch)
            if in_flight:
                for key, i, out in executor.collect(due, COMMIT_LABELS - len(received)):
                    if i is None:
                        in_flight.pop(key, None)
                        continue
                    if out.requeue:
                        tasks.appendleft(Task(out.row_id, by_id[out.row_id], out.attempt, out.safer, screened=True))
                        continue
                    report.cpu_seconds += out.cpu_seconds
                    if out.label is None:
                        out.final = (not out.retryable) or out.attempt >= MAX_ATTEMPTS
                        report.errors.append((out.row_id, out.error))
                        if not out.final:
                            report.retried += 1
                            tasks.appendleft(Task(out.row_id, by_id[out.row_id], out.attempt + 1, True, screened=True))
                    received.append(out)
            now = time.perf_counter()
            if received and (len(received) >= COMMIT_LABELS or now >= due or not (tasks or in_flight)):
                commit_received()
                due = time.perf_counter() + COMMIT_SECONDS
            elif now >= due:
                due = now + COMMIT_SECONDS
    finally:
        try:
            if received:  # interrupted (Ctrl-C, an error): keep what has arrived
                commit_received()
        except Exception:  # never mask the error that got us here
            pass
        executor.close()
        bar.close()
        try:
            report.remaining = len(camp.pending(level, selected_only=selected_only))
        except Exception:  # never mask the error that got us here
            report.remaining = len(tasks)
