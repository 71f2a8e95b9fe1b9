"""OpenMP/BLAS thread limits for labelling: xTB single-threaded, DFT a share of the cores."""
from __future__ import annotations

import os
import sys
import threading

_thread_state = threading.local()


def limit_threads(n: int, environment: bool = True) -> None:
    """Cap OpenMP/BLAS threads of the calling thread (and of libraries loaded later).

    tblite on a small molecule is ~40x slower with idle OpenMP threads
    spinning on a busy machine, so xTB always runs single-threaded; DFT
    uses ``n`` threads per worker. Environment variables cover libraries not
    yet loaded (``environment=False`` leaves them alone: in-process use);
    the system libgomp (tblite) and PySCF's own copy are set directly.
    """
    n = max(1, int(n))
    if getattr(_thread_state, "threads", None) == (n, environment):
        return
    if environment:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(n)
    try:
        import ctypes

        ctypes.CDLL("libgomp.so.1").omp_set_num_threads(n)
    except (OSError, AttributeError):  # not Linux/GNU OpenMP: env vars only
        pass
    if environment and "pyscf" in sys.modules:
        from pyscf import lib

        lib.num_threads(n)
    _thread_state.threads = (n, environment)

