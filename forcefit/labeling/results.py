"""One result to store at a level (a label or a failed attempt), and how it changes a campaign row."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..data.campaign_schema import MAX_ATTEMPTS, LevelKeys

@dataclass
class Result:
    """One result to store at a level: a label, or a failed attempt (``label`` None, ``error`` its text).

    ``final``: the failed attempt gives the structure up (no retry left).
    The runner passes its own outcomes, which carry the same attributes.
    """

    row_id: int
    label: dict | None
    error: str | None = None
    attempt: int = 1
    safer: bool = False
    final: bool = False
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    host: str | None = None


def apply_result(keys: LevelKeys, r, kvp: dict, data: dict, host: str) -> tuple:
    """Apply one label or failed attempt to a row's key-value pairs and data (in place); return the keys changed."""
    if r.label is not None:
        record = {k: np.asarray(v) if k != "energy" else float(v) for k, v in r.label.items()}
        record.update(cpu_seconds=float(r.cpu_seconds), wall_seconds=float(r.wall_seconds), attempt=int(r.attempt),
                      safer=bool(r.safer), host=r.host or host, time=time.time())
        kvp[keys.has] = 1
        kvp[keys.cost] = float(r.cpu_seconds)
        data[keys.label] = record
        return (keys.has, keys.cost)
    failures = list(data.get(keys.failures, []))
    failures.append({"attempt": int(r.attempt), "error": str(r.error), "safer": bool(r.safer), "final": bool(r.final),
                     "cpu_seconds": float(r.cpu_seconds), "host": r.host or host, "time": time.time()})
    old = int(kvp.get(keys.failed, 0))
    kvp[keys.failed] = max(MAX_ATTEMPTS if r.final else old + 1, old + 1)
    data[keys.failures] = failures
    return (keys.failed,)
