"""A labelling worker process: ``python -m forcefit.labeling._worker FD``.

Started by the runner with a socket on file descriptor FD. It imports only
the task code and the method modules (not the caller's main module, as
multiprocessing's spawn would, nor torch), labels what it is sent, and
exits when the coordinator closes the socket or dies.
Protocol (pickled messages): in ``("init", sys_path)``, then
``(key, method, tasks)`` or ``None`` to stop; out ``("ready", pid, None)``,
then ``(key, i, Outcome)`` per structure and ``(key, None, None)`` per chunk.
"""
from __future__ import annotations

import os
import socket
import sys
from multiprocessing.connection import Connection


def main(fd: int) -> None:
    conn = Connection(socket.socket(fileno=fd).detach())
    try:
        _, path, threads = conn.recv()
    except (EOFError, OSError):
        return
    sys.path[:] = list(path) + [p for p in sys.path if p not in path]
    from .threads import limit_threads
    from .tasks import run_task

    limit_threads(threads)
    conn.send(("ready", os.getpid(), None))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the coordinator is gone (even if it was SIGKILLed)
            return
        if msg is None:
            return
        key, method, tasks = msg
        try:
            for i, task in enumerate(tasks):
                conn.send((key, i, run_task(method, task, "process")))
            conn.send((key, None, None))
        except (BrokenPipeError, OSError):
            return


if __name__ == "__main__":
    main(int(sys.argv[1]))
