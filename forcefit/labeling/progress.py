"""The progress bar of labelling (and of other engine loops that count items: molecules of a pool build)."""
from __future__ import annotations

import sys
import time


class Progress:
    """A rich progress bar on stderr: done/total, items per second (``unit``: "label"), failures, ETA."""

    def __init__(self, enabled: bool, total: int, description: str, unit: str = "label"):
        self.progress, self.unit = None, unit
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[failed]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=Console(stderr=True), transient=False,
        )
        self.t0 = time.perf_counter()
        self.task = self.progress.add_task(description, total=total, rate="", failed="")
        self.progress.start()

    def advance(self, done: int, total: int, failed: int):
        if self.progress is None:
            return
        rate = done / max(time.perf_counter() - self.t0, 1e-9)
        speed = f"{rate:.1f} {self.unit}s/s" if rate >= 1 or not done else f"{1 / rate:.1f} s/{self.unit}"
        self.progress.update(self.task, completed=done, total=total, rate=speed,
                             failed=f"[red]{failed} failed" if failed else "")

    def note(self, line: str):
        """Print one line on stderr (above the bar while it is shown), e.g. a warning."""
        if self.progress is not None:
            self.progress.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=sys.stderr)

    def close(self):
        if self.progress is not None:
            self.progress.stop()

