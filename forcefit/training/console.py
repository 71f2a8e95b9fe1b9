"""What a training run prints: its progress and one summary line per validation, not third-party chatter.

Lightning announces the hardware, advertises a logger and, on some versions,
warns about its own internals (``LeafSpec``); none of it helps a user, and a
progress bar redrawn with carriage returns fills a log file or a cluster job's
output with thousands of updates. So: a bar only on a terminal, one line per
validation always, and Lightning's notices filtered by message.
"""
from __future__ import annotations

import logging
import sys
import time
import warnings

import lightning as L

#: Lightning notices that are dropped (the start of the message)
NOISE = ("GPU available", "TPU available", "HPU available", "💡 Tip", "Tip:", "Loading `train_dataloader`",
         "`Trainer.fit` stopped", "You are using a CUDA device", "LOCAL_RANK", "Initializing distributed",
         "----------------", "distributed_backend", "All distributed processes registered")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).lstrip().startswith(NOISE)


def quiet_third_party() -> None:
    """Filter Lightning's notices and known deprecation warnings from libraries (idempotent)."""
    for name in ("lightning.pytorch", "lightning.pytorch.utilities.rank_zero", "lightning.fabric", "lightning.pytorch.accelerators.cuda"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*litlogger.*")


def output_is_terminal() -> bool:
    return sys.stderr.isatty()


class ValidationLines(L.Callback):
    """One line per validation on stderr: epoch, training loss, validation errors, throughput, elapsed time."""

    def __init__(self, max_epochs: int, stream=None):
        self.max_epochs, self.stream, self.start = max_epochs, stream, None

    def on_train_start(self, trainer, module):
        self.start = time.perf_counter()

    def on_validation_end(self, trainer, module):
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
        parts = [f"epoch {trainer.current_epoch + 1}/{self.max_epochs}"]
        if "loss" in m:
            parts.append(f"loss {m['loss']:.4g}")
        if "val_forces_mae" in m:
            parts.append(f"val F MAE {m['val_forces_mae']:.2f} meV/Å")
        if "val_energy_mae" in m:
            parts.append(f"val E MAE {m['val_energy_mae']:.2f} meV/atom")
        if "structures_per_s" in m:
            parts.append(f"{m['structures_per_s']:.0f} structures/s")
        elapsed = time.perf_counter() - (self.start or time.perf_counter())
        parts.append(f"{int(elapsed // 60)}:{int(elapsed % 60):02d} elapsed")
        line = "  ".join(parts)
        bar = next((cb for cb in trainer.callbacks if type(cb).__name__ == "TQDMProgressBar"), None)
        if bar is not None and getattr(bar, "train_progress_bar", None) is not None:
            bar.train_progress_bar.write(line)  # above the bar, not through it
        else:
            print(line, file=self.stream or sys.stderr, flush=True)
