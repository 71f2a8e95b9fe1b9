"""The Lightning training module: a Potential, the run's objectives, EMA and the optimiser.

An objective is any callable ``(model, batch, progress, generator) -> (loss,
metrics)`` (the contract in ``forcefit.objectives.base``); the module adds the
objectives' losses and knows nothing about any of them, so methods (DeNS,
pretraining, ASTEROID) plug in without touching it. Validation is the same
for every run: the supervised loss form on the clean validation frames
(``val_loss``, which picks the best checkpoint) and the energy/force errors of
``forcefit.metrics``, the definitions ``evaluate`` uses.
"""
from __future__ import annotations

import time

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..config import TrainingConfig
from ..metrics import batch_error_sums, summarise
from .schedule import warmup_cosine


class ForceFieldModule(L.LightningModule):
    def __init__(self, model: torch.nn.Module, objectives: list, training: TrainingConfig, seed: int = 0, val_interval: int = 1,
                 validation_loss=None, param_groups: list[dict] | None = None):
        """``validation_loss(out, batch) -> (loss, metrics)``: the run's supervised loss form;
        ``param_groups``: optimiser groups ``{"params": [...], "lr_factor": f}`` (default: every parameter at 1)."""
        super().__init__()
        self.val_interval = val_interval  # epochs between validations (plateau scheduler steps with them)
        self.model = model
        self.objectives = list(objectives)
        self.validation_loss = validation_loss
        self.param_groups = param_groups
        self.cfg = training
        self.seed = seed
        self.ema = None
        if training.ema_decay:
            self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(training.ema_decay), use_buffers=True)
        self._epoch_start = None
        self._epoch_structures = 0
        self._metric_sums: dict[str, tuple[torch.Tensor, int]] = {}  # objective metrics: structure-weighted epoch sums
        self._val_start, self._val_seconds = None, 0.0
        self._val_sums, self._val_loss = None, None

    # ---- the model used for validation and export
    def averaged_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def progress(self) -> float:
        """Fraction of training done, by steps or by wall time, whichever is further."""
        trainer = self._trainer
        if trainer is None:
            return 0.0
        total = max(trainer.estimated_stepping_batches, 1)
        by_steps = trainer.global_step / total
        by_time = 0.0
        for cb in trainer.callbacks:
            if isinstance(cb, Timer) and cb._duration:
                by_time = cb.time_elapsed("train") / cb._duration
        return min(max(by_steps, by_time), 1.0)

    # ---- training
    def training_step(self, batch, batch_idx):
        generator = torch.Generator(device=batch["positions"].device)
        generator.manual_seed(self.seed * 1_000_003 + self.global_step * 7919 + self.global_rank)
        progress = self.progress()
        loss, metrics = None, {}
        for objective in self.objectives:
            part, part_metrics = objective(self.model, batch, progress, generator)
            loss = part if loss is None else loss + part
            metrics.update(part_metrics)
        n = int(batch["num_atoms"].shape[0])
        self._epoch_structures += n
        self.log("loss", loss, prog_bar=True, batch_size=n)
        # the objective's metrics are summed here and logged once per epoch: a Lightning log call
        # costs about as much as a small model's forward pass, and DeNS reports a dozen metrics
        for key, value in metrics.items():
            total, count = self._metric_sums.get(key, (0.0, 0))
            self._metric_sums[key] = (total + value.detach() * n, count + n)
        return loss

    def optimizer_step(self, *args, **kwargs):
        # the EMA follows each step here, not in on_train_batch_end: Lightning runs that hook after the callbacks',
        # so a checkpoint written inside an epoch would hold an average one step behind its weights
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def on_train_epoch_start(self):
        self._epoch_start, self._epoch_structures, self._val_seconds = time.perf_counter(), 0, 0.0
        self._metric_sums = {}

    def on_validation_epoch_start(self):
        self._val_start = time.perf_counter()
        self._val_sums, self._val_loss = None, torch.zeros(2, dtype=torch.float64)

    def on_validation_epoch_end(self):
        if self._val_sums is not None:
            sums = torch.as_tensor(self._val_sums)
            loss = self._val_loss
            if self.trainer.world_size > 1:  # every process validated its share: add them up
                sums = self.all_gather(sums.to(self.device)).reshape(-1, sums.shape[-1]).sum(0).cpu()
                loss = self.all_gather(loss.to(self.device)).reshape(-1, 2).sum(0).cpu()
            summary = summarise(sums.numpy())
            if summary["energy_mae_per_atom"] is not None:
                self.log("val_energy_mae", summary["energy_mae_per_atom"], rank_zero_only=True)
            if summary["forces_mae"] is not None:
                self.log("val_forces_mae", summary["forces_mae"], prog_bar=True, rank_zero_only=True)
            if loss[1] > 0:
                self.log("val_loss", float(loss[0] / loss[1]))
        if self._val_start is not None:
            self._val_seconds += time.perf_counter() - self._val_start

    def on_train_epoch_end(self):
        if self._epoch_start is not None:
            # training throughput: the epoch's wall time without the validation Lightning runs inside it
            seconds = time.perf_counter() - self._epoch_start - self._val_seconds
            rate = self._epoch_structures / max(seconds, 1e-9)
            self.log("structures_per_s", rate, prog_bar=True)
        for key, (total, count) in self._metric_sums.items():
            self.log(f"train_{key}", total / count)  # mean over the epoch's steps that reported it, by structures
        self.log("lr", self.optimizers().param_groups[0]["lr"])

    # ---- validation with the averaged weights
    def validation_step(self, batch, batch_idx):
        model = self.averaged_model()
        with torch.enable_grad():
            out = model(batch)
        sums = batch_error_sums(out, batch)
        self._val_sums = sums if self._val_sums is None else self._val_sums + sums
        if self.validation_loss is not None:
            loss, _ = self.validation_loss({k: v.detach() if torch.is_tensor(v) else v for k, v in out.items()}, batch)
            n = int(batch["num_atoms"].shape[0])
            self._val_loss += torch.tensor([float(loss) * n, n], dtype=torch.float64)

    # ---- optimisation
    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        """A flat dict of tensors: one comprehension (nothing at all on the CPU) instead of Lightning's generic walk."""
        if all(v.device == device for v in batch.values()):
            return batch
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}

    def configure_optimizers(self):
        groups = self.param_groups or [{"params": [p for p in self.model.parameters() if p.requires_grad], "lr_factor": 1.0}]
        groups = [{"params": list(g["params"]), "lr": self.cfg.lr * g["lr_factor"]} for g in groups if len(list(g["params"]))]
        params = [p for g in groups for p in g["params"]]
        # fused AdamW: one kernel for all parameters (a 7x cheaper step on CPU for these small models)
        fused = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float64) for p in params)
        optimizer = torch.optim.AdamW(groups, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay, fused=fused or None)
        if self.cfg.scheduler == "none":
            return optimizer
        if self.cfg.scheduler == "plateau":
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=10)
            return {"optimizer": optimizer,
                    "lr_scheduler": {"scheduler": plateau, "monitor": "val_loss", "frequency": self.val_interval}}
        warmup = self.cfg.warmup_epochs / max(self.cfg.max_epochs, 1)
        warmup_steps = None
        if self.cfg.max_time:  # progress follows the clock: count the warm-up in optimiser steps
            batches_per_epoch = self.trainer.estimated_stepping_batches / max(self.cfg.max_epochs, 1)
            warmup_steps = self.cfg.warmup_epochs * batches_per_epoch
        cosine = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(self.progress(), warmup, self.cfg.min_lr_ratio, step, warmup_steps)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}
