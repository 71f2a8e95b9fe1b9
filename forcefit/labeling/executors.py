"""Where labels are computed: in the coordinating thread, in worker processes, or on a Dask cluster.

Each executor takes chunks of tasks (``submit(key, tasks)``) and hands back
``(key, i, Outcome)`` per structure and ``(key, None, None)`` per finished
chunk from ``collect(deadline, limit)``, so the runner's loop is the same
for all three:

- ``InlineExecutor``: ``workers=1`` and a cheap in-process method (xTB):
  labelled in the coordinating thread itself, between batch commits.
- ``ProcessExecutor``: spawned worker processes, each with its own socket
  (a crashed worker is noticed at once and its structure recorded as
  failed) and ``OMP_NUM_THREADS`` set per worker.
- ``DaskExecutor``: a Dask ``Client``, cluster, or ``tcp://host:port`` address.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import deque

from ..data.errors import DataError
from .method import Method
from .tasks import Outcome, run_chunk, run_task


def _collect(executor, deadline: float, limit: int) -> list:
    """Results that have arrived: wait for the first until ``deadline``, then take what else is there (up to ``limit``)."""
    out = []
    item = executor.get(block=False, timeout=max(0.0, deadline - time.perf_counter()))
    while item is not None:
        out.append(item)
        if len(out) >= limit:
            break
        item = executor.get(block=False, timeout=0.0)
    return out


class InlineExecutor:
    """Labels in the coordinating thread itself, between commits: no second thread, no handoff.

    For cheap in-process methods (xTB, ~1 ms per small molecule) a worker
    thread cost more than it saved: a lock and a wake-up per result, and
    the two threads contending for the GIL (every tblite call releases and
    retakes it), which on a busy machine slowed the SCF itself. Here the
    SCF loop runs exactly as a plain loop would, and ``collect`` returns to
    the coordinator when a batch is due for its commit.
    """

    def __init__(self, method: Method):
        self.method, self.todo, self.interrupted = method, deque(), None

    def submit(self, key, tasks):
        self.todo.append((key, deque(enumerate(tasks))))

    def collect(self, deadline: float, limit: int) -> list:
        """Label until ``limit`` results are ready or ``deadline`` passes.

        Ctrl-C (or any other BaseException) during a label hands back the
        results finished so far and is raised at the next call, so the
        coordinator commits them first.
        """
        if self.interrupted is not None:
            exc, self.interrupted = self.interrupted, None
            raise exc
        out, todo, method = [], self.todo, self.method
        try:
            while todo and len(out) < limit:
                key, items = todo[0]
                if not items:
                    todo.popleft()
                    out.append((key, None, None))
                    continue
                i, task = items[0]
                out.append((key, i, run_task(method, task, "thread")))
                items.popleft()
                if time.perf_counter() >= deadline:
                    break
        except BaseException as exc:  # noqa: BLE001 - re-raised at the next call
            if not out:
                raise
            self.interrupted = exc
        return out

    def close(self):
        pass


class ProcessExecutor:
    """Worker processes (``python -m forcefit.labeling._worker``), one socket each.

    Started directly rather than through multiprocessing so a worker imports
    neither the caller's main module nor torch: it is ready in a fraction of
    a second. A dead worker shows as EOF on its socket.
    """

    def __init__(self, method: Method, workers: int, threads: int):
        self.method, self.threads = method, threads
        self.workers: list[dict] = []
        self.backlog: deque = deque()
        for _ in range(workers):
            self._start()

    def _start(self):
        from multiprocessing.connection import Connection

        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env.update({v: str(self.threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
        proc = subprocess.Popen([sys.executable, "-m", "forcefit.labeling._worker", str(theirs.fileno())],
                                pass_fds=[theirs.fileno()], env=env, cwd=os.getcwd())
        theirs.close()
        conn = Connection(ours.detach())
        conn.send(("init", list(sys.path), self.threads))
        self.workers.append({"proc": proc, "conn": conn, "queue": deque(), "ready": False})

    def submit(self, key, tasks):
        w = min(self.workers, key=lambda w: len(w["queue"]))
        w["queue"].append([key, tasks, 0])  # 0: outcomes received so far
        try:
            w["conn"].send((key, self.method, tasks))
        except OSError:  # it died since we last heard from it
            self._died(w)

    def get(self, block: bool = True, timeout: float = 0.0):
        from multiprocessing.connection import wait

        while True:
            if self.backlog:
                return self.backlog.popleft()
            ready = wait([w["conn"] for w in self.workers], timeout=0.5 if block else timeout)
            if not ready and not block:
                return None
            for conn in ready:
                w = next((w for w in self.workers if w["conn"] is conn), None)
                if w is None:
                    continue
                try:
                    key, i, out = conn.recv()
                except (EOFError, OSError):
                    self._died(w)
                    continue
                if key == "ready":
                    w["ready"] = True
                    continue
                if i is None:
                    w["queue"].popleft()
                else:
                    w["queue"][0][2] += 1
                self.backlog.append((key, i, out))

    def collect(self, deadline: float, limit: int) -> list:
        return _collect(self, deadline, limit)

    def _died(self, w):
        """The structure being computed fails; the worker's unstarted structures are handed back."""
        try:
            code = w["proc"].wait(timeout=2)
        except subprocess.TimeoutExpired:
            w["proc"].kill()
            code = w["proc"].wait()
        w["conn"].close()
        if not w["ready"]:  # not the structure's fault: stop rather than blame every structure
            raise RuntimeError(f"a labelling worker process failed to start (exit code {code}); see its error above")
        self.workers.remove(w)
        self._start()
        for n, (key, tasks, done) in enumerate(w["queue"]):
            for j in range(done, len(tasks)):
                t = tasks[j]
                crashed = n == 0 and j == done
                self.backlog.append((key, j, Outcome(
                    t.row_id, t.attempt, t.safer, None,
                    f"worker process died (exit code {code}) while labelling this structure" if crashed else None,
                    True, 0.0, 0.0, socket.gethostname(), requeue=not crashed)))
            self.backlog.append((key, None, None))

    def close(self):
        for w in self.workers:
            try:
                w["conn"].send(None)
            except OSError:
                pass
        for w in self.workers:
            try:
                w["proc"].wait(timeout=5)
            except subprocess.TimeoutExpired:
                w["proc"].kill()
                w["proc"].wait()
            w["conn"].close()


class DaskExecutor:
    """Chunks as Dask tasks; results come back per chunk, in completion order."""

    def __init__(self, method: Method, scheduler):
        from ..extras import require

        require("distributed", "a Dask scheduler")
        from distributed import Client, as_completed

        self.own_client = None
        if isinstance(scheduler, Client):
            self.client = scheduler
        else:
            address = getattr(scheduler, "scheduler_address", scheduler)
            try:
                self.client = self.own_client = Client(address, timeout="10s")
            except Exception as exc:
                raise DataError(f"cannot reach the Dask scheduler at {address} ({type(exc).__name__}: {exc})", field="scheduler") from exc
        self.method = method
        self.ac = as_completed()
        self.backlog: deque = deque()
        self.keys: dict = {}

    def submit(self, key, tasks):
        fut = self.client.submit(run_chunk, self.method, tasks, "dask", os.getpid(), pure=False)
        self.keys[fut.key] = (key, tasks)
        self.ac.add(fut)

    def get(self, block: bool = True, timeout: float = 0.0):
        while not self.backlog:
            if not block and not self.ac.has_ready():
                return None
            fut = next(self.ac)
            key, tasks = self.keys.pop(fut.key)
            try:
                outs = fut.result()
            except Exception as exc:  # e.g. KilledWorker: the whole chunk failed
                outs = [Outcome(t.row_id, t.attempt, t.safer, None, f"Dask task failed: {type(exc).__name__}: {exc}",
                                True, 0.0, 0.0, "dask") for t in tasks]
            for i, out in enumerate(outs):
                self.backlog.append((key, i, out))
            self.backlog.append((key, None, None))
        return self.backlog.popleft()

    def collect(self, deadline: float, limit: int) -> list:
        while not self.backlog and not self.ac.has_ready() and time.perf_counter() < deadline:
            time.sleep(0.02)  # as_completed has no timeout; a short poll stands in
        return _collect(self, deadline, limit)

    def close(self):
        if self.own_client is not None:
            self.own_client.close()

