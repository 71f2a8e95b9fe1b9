"""One unit of labelling work and its outcome, as run on any worker (thread, process, Dask).

Kept apart from the runner so that worker processes import only this and
the method modules: no database code, no torch.
"""
from __future__ import annotations

import math
import os
import socket
import time
import traceback
from dataclasses import dataclass

import numpy as np

from .geometry import check_geometry, find_unlabellable
from .method import Method, Structure, Unlabellable
from .threads import limit_threads


@dataclass
class Task:
    """Label ``structure`` (campaign row ``row_id``); ``attempt`` counts from 1, ``safer`` on the retry."""

    row_id: int
    structure: Structure
    attempt: int = 1
    safer: bool = False
    screened: bool = False  # the coordinator already ran ``check_geometry`` on it (``find_unlabellable``)


@dataclass
class Outcome:
    """A label or an error text, with the CPU and wall seconds it cost and the host that paid."""

    row_id: int
    attempt: int
    safer: bool
    label: dict | None
    error: str | None
    retryable: bool
    cpu_seconds: float
    wall_seconds: float
    host: str
    requeue: bool = False  # not attempted (its worker died first): hand it out again
    final: bool = False  # set by the coordinator: a failed attempt that gives the structure up


def _clock(kind: str, coordinator_pid: int | None = None):
    """CPU clock for the cost of a label: the process's own where it does nothing else, else the thread's."""
    if kind == "dask":
        try:
            from distributed import get_worker

            single = get_worker().state.nthreads == 1
        except Exception:  # not on a Dask worker after all
            single = False
        kind = "process" if single and os.getpid() != coordinator_pid else "thread"
    return time.process_time if kind == "process" else time.thread_time


def run_task(method: Method, task: Task, clock: str = "process", coordinator_pid: int | None = None) -> Outcome:
    """Label one structure; a failed calculation becomes an Outcome carrying its error text."""
    cpu = _clock(clock, coordinator_pid)
    c0, w0 = cpu(), time.perf_counter()
    label, error, retryable = None, None, True
    s = task.structure
    try:
        if not task.screened:
            check_geometry(s.numbers, s.positions)
        label = method.compute(s, safer=task.safer)
        _check_label(label, len(s.numbers))
    except Unlabellable as exc:
        label, error, retryable = None, _unlabellable_text(exc), False
    except Exception as exc:  # SCF failures and anything a third-party calculator raises
        label, error = None, f"{type(exc).__name__}: {exc}".strip()
        retryable = type(exc).__name__ != "DataError"  # e.g. a factory that cannot be imported here
        if not str(exc):
            error += " | " + " / ".join(traceback.format_exc().strip().splitlines()[-3:])
    return Outcome(task.row_id, task.attempt, task.safer, label, error, retryable,
                   cpu() - c0, time.perf_counter() - w0, socket.gethostname())


def _unlabellable_text(exc: Exception) -> str:
    return f"{'invalid geometry: ' if 'overlapping' in str(exc) else ''}{exc}"


def screen(tasks) -> tuple[list, list]:
    """(tasks to run, marked ``screened``; outcomes of those no method can label), checked in bulk.

    The outcomes are exactly what ``run_task`` would return for them
    (error text, not retryable), without a round trip to a worker.
    """
    tasks = list(tasks)
    bad = set(find_unlabellable([t.structure for t in tasks]))
    keep, failed = [], []
    for k, t in enumerate(tasks):
        if k in bad:
            try:
                check_geometry(t.structure.numbers, t.structure.positions)
            except Unlabellable as exc:
                failed.append(Outcome(t.row_id, t.attempt, t.safer, None, _unlabellable_text(exc), False,
                                      0.0, 0.0, socket.gethostname()))
                continue
        t.screened = True
        keep.append(t)
    return keep, failed


def run_chunk(method: Method, tasks: list, clock: str = "process", coordinator_pid: int | None = None) -> list:
    """Label several structures (one message or Dask task for cheap methods)."""
    if getattr(method, "threads", None):
        limit_threads(method.threads)
    return [run_task(method, t, clock, coordinator_pid) for t in tasks]


def _check_label(label: dict, n: int) -> None:
    energy = label.get("energy")
    try:
        finite = math.isfinite(energy)
    except TypeError:
        finite = False
    if not finite:
        raise ValueError(f"calculator returned energy {energy}")
    forces = np.asarray(label.get("forces"))
    # one reduction in the common case; the exact test only when the sum is not finite
    if forces.shape != (n, 3) or not (math.isfinite(forces.sum()) or np.all(np.isfinite(forces))):
        raise ValueError(f"calculator returned forces of shape {forces.shape} or non-finite values")
