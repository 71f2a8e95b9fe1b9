"""Keep a resumed run's metrics history: Lightning's CSV logger deletes ``metrics.csv`` when it starts.

Before a resumed fit the rows logged so far move to ``metrics.before_resume.csv``;
after it they are joined with the new rows back into ``metrics.csv``, so the log
and the learning curve cover the whole run however often it was killed. Rows from
epochs the checkpoint had not reached (logged after it, before the kill) give
way to the rerun of those steps. Both steps are idempotent: a kill at any point
loses no row.
"""
from __future__ import annotations

import csv
from pathlib import Path

from ..atomic_file import atomic_path

METRICS = "metrics.csv"
HISTORY = "metrics.before_resume.csv"


def _read(path: Path) -> tuple[list[str], list[dict]]:
    if not path.exists():
        return [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _step(row: dict) -> int | None:
    value = row.get("step")
    return None if value in (None, "") else int(float(value))


def _content(row: dict) -> frozenset:
    return frozenset((k, v) for k, v in row.items() if v not in (None, ""))


def _merge(older: Path, newer: Path) -> tuple[list[str], list[dict]]:
    """Rows of ``older`` up to the step ``newer`` starts from (the checkpoint's), then all of ``newer``;
    the union of the columns."""
    old_keys, old_rows = _read(older)
    new_keys, new_rows = _read(newer)
    steps = [s for s in map(_step, new_rows) if s is not None]
    if steps:
        start = min(steps)
        again = {_content(r) for r in new_rows if _step(r) == start}  # rows a repeated set_aside would duplicate
        old_rows = [r for r in old_rows if (step := _step(r)) is not None
                    and (step < start or (step == start and _content(r) not in again))]
    keys = old_keys + [k for k in new_keys if k not in old_keys]
    return keys, old_rows + new_rows


def _write(path: Path, keys: list[str], rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def rows(log_dir: Path) -> list[dict]:
    """The whole run's rows, also while a resumed run trains (history and new rows not yet joined)."""
    return _merge(log_dir / HISTORY, log_dir / METRICS)[1]


def set_aside(log_dir: Path) -> None:
    """Before a resumed fit: add ``metrics.csv`` to the history and remove it (the logger would delete it)."""
    metrics = log_dir / METRICS
    if not metrics.exists():
        return
    keys, merged = _merge(log_dir / HISTORY, metrics)
    _write(log_dir / HISTORY, keys, merged)
    metrics.unlink()


def join(log_dir: Path) -> None:
    """After a resumed fit: the history and the new rows together in ``metrics.csv``."""
    history = log_dir / HISTORY
    if not history.exists():
        return
    keys, merged = _merge(history, log_dir / METRICS)
    _write(log_dir / METRICS, keys, merged)
    history.unlink()
