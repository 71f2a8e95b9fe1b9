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


def test_warmup_under_a_time_budget_is_counted_in_steps():
    """With --max-time, progress follows the clock; the warm-up must still last warmup_epochs of steps."""
    from forcefit.training.schedule import warmup_cosine

    # epoch budget: a fraction of progress, as before
    assert warmup_cosine(0.005, 0.01, 0.01) == pytest.approx(0.5)
    # time budget, 20 steps of warm-up: half-way at step 10 whatever the clock says
    assert warmup_cosine(0.0, 1e-5, 0.01, step=10, warmup_steps=20) == pytest.approx(0.5)
    assert warmup_cosine(0.3, 1e-5, 0.01, step=10, warmup_steps=20) == pytest.approx(0.5)
    # after it, the cosine over the whole of progress
    assert warmup_cosine(0.5, 1e-5, 0.0, step=30, warmup_steps=20) == pytest.approx(0.5)
    assert warmup_cosine(1.0, 1e-5, 0.01, step=30, warmup_steps=20) == pytest.approx(0.01)


def test_a_time_budget_run_warms_up_over_its_first_epochs(tmp_path, ethanol_xyz):
    from forcefit.config import build_config
    from forcefit.training.run import train

    seen = []

    from forcefit.training.schedule import warmup_cosine

    class RecordLR(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.append((trainer.current_epoch, trainer.optimizers[0].param_groups[0]["lr"], module.progress()))

    cfg = build_config({"data": {"train": str(ethanol_xyz), "valid_fraction": 0.25},
                        "model": {"options": {"features": 8, "num_layers": 1, "num_basis": 4}},
                        "training": {"batch_size": 6, "progress": False, "threads": 1, "lr": 1e-2, "max_time": 0.3,
                                     "max_epochs": 100000, "warmup_epochs": 2, "ema_decay": None, "min_lr_ratio": 0.01},
                        "out": str(tmp_path / "timed")})
    train(cfg, callbacks=[RecordLR()])
    first = [lr for epoch, lr, _ in seen if epoch == 0]
    assert first[0] < 0.01 * 1e-2 and first[-1] < 0.6 * 1e-2  # still warming up through epoch 0
    # after two epochs of steps the warm-up is over: the rate is the cosine of the clock's progress alone
    # (compared with it, not with the peak, so a slow, loaded machine cannot fail this)
    third = [(lr, p) for epoch, lr, p in seen if epoch == 2]
    assert third, "the run did not reach its third epoch within the budget"
    assert all(lr > 0.9 * 1e-2 * warmup_cosine(p, 0.0, 0.01) for lr, p in third)


def test_training_into_a_log_file_writes_one_line_per_validation(tmp_path, ethanol_xyz):
    """Not a terminal: no redrawn bar, no Lightning notices; one summary line per validation, a log of bounded size."""
    import subprocess
    import sys

    log = tmp_path / "train.log"
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, "-m", "forcefit.cli", "train", "--train", str(ethanol_xyz), "--max-epochs", "6",
                               "--out", str(tmp_path / "run"), "--batch-size", "4", "--config", str(_tiny_config(tmp_path))],
                              stdout=fh, stderr=subprocess.STDOUT, timeout=900)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    lines = [l for l in text.splitlines() if l.startswith("epoch ")]
    validations = [r for r in csv.DictReader(open(tmp_path / "run" / "logs" / "metrics.csv")) if r.get("val_loss")]
    assert len(lines) == len(validations) >= 2 and "val F MAE" in lines[-1]
    assert "\r" not in text and "Tip" not in text and "GPU available" not in text and "LeafSpec" not in text
    assert len(text) < 8000, len(text)


def _tiny_config(tmp_path):
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"model": {"options": {"features": 8, "num_layers": 1, "num_basis": 4}},
                                    "training": {"threads": 1, "val_interval": 2}}))
    return path
