"""How often to validate, and a callback that still validates the run's final epoch.

Why: with 50 training frames an epoch is 10 steps, and validating (and writing
checkpoints) after each one spent a large share of a wall-time budget on
bookkeeping. Validating every k epochs fixes that, but Lightning would then
skip the final epochs when ``max_epochs`` or ``max_time`` ends the run between
two validations, and those are the ones the best checkpoint should see.
"""
from __future__ import annotations

import math
import time

import lightning as L
from lightning.pytorch.callbacks import Timer

#: 'auto' validates about this often, in training structures
AUTO_STRUCTURES_PER_VALIDATION = 200


def validation_interval(setting: int | str, n_train: int) -> int:
    """Epochs between validations: ``setting`` itself, or for 'auto' every ~200 training structures."""
    if setting == "auto":
        return max(1, math.ceil(AUTO_STRUCTURES_PER_VALIDATION / max(n_train, 1)))
    return int(setting)


class ValidateFinalEpoch(L.Callback):
    """Validate every ``interval`` epochs, and always in the epoch that ends the run.

    The end is the last of ``max_epochs`` or, under ``max_time``, an epoch that
    starts with less than two epochs' worth of time left (an epoch cut short by
    the timer then still validates, as Lightning validates a stopping epoch).
    """

    def __init__(self, interval: int):
        self.interval = interval
        self._epoch_began: float | None = None
        self._epoch_seconds = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        now = time.monotonic()
        if self._epoch_began is not None:  # a slowly decaying maximum: epochs that validate take longer
            self._epoch_seconds = max(0.9 * self._epoch_seconds, now - self._epoch_began)
        self._epoch_began = now
        final = trainer.max_epochs is not None and trainer.max_epochs > 0 and trainer.current_epoch + 1 >= trainer.max_epochs
        for cb in trainer.callbacks:
            if isinstance(cb, Timer) and cb._duration:
                remaining = cb.time_remaining("train")
                final = final or (remaining is not None and remaining < 2 * self._epoch_seconds)
        trainer.check_val_every_n_epoch = 1 if final else self.interval
