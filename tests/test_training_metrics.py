"""The objective's training metrics are logged once per epoch as structure-weighted means."""
from __future__ import annotations

import csv

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from forcefit.config import TrainingConfig
from forcefit.training.module import ForceFieldModule


class StepObjective:
    """loss from one parameter; metric ``m`` = the batch's first value; ``rare`` only on some batches."""

    def __call__(self, model, batch, progress, generator):
        loss = (model.weight.sum() - 1.0) ** 2
        metrics = {"m": batch["value"][0].clone()}
        if batch["value"][0] >= 2:
            metrics["rare"] = batch["value"][0] * 10
        return loss, metrics


def _batches():
    # three batches of 2, 3 and 1 structures with values 1, 2, 3
    sizes, values = [2, 3, 1], [1.0, 2.0, 3.0]
    return [{"positions": torch.zeros(n, 3), "num_atoms": torch.ones(n, dtype=torch.long), "value": torch.full((n,), v)}
            for n, v in zip(sizes, values)]


def test_epoch_means_weighted_by_structures(tmp_path):
    module = ForceFieldModule(torch.nn.Linear(1, 1), [StepObjective()], TrainingConfig(ema_decay=None, scheduler="none"))
    trainer = L.Trainer(max_epochs=2, logger=CSVLogger(tmp_path, name="", version=""), enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, log_every_n_steps=1)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(_batches(), batch_size=None))
    rows = [r for r in csv.DictReader(open(tmp_path / "metrics.csv")) if r.get("train_m")]
    assert [int(r["epoch"]) for r in rows] == [0, 1]  # one row per epoch, not per step
    for r in rows:
        assert float(r["train_m"]) == pytest.approx((2 * 1 + 3 * 2 + 1 * 3) / 6)
        assert float(r["train_rare"]) == pytest.approx((3 * 20 + 1 * 30) / 4)  # over the batches that reported it
