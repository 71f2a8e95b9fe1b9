"""``train(config)``: the whole run, short on purpose — data, model, objective, Lightning, export, evaluation."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

from ..atomic_file import write_text_atomic
from ..config import ConfigError, RunConfig
from ..data import Collater, GraphDataset
from ..model_file import save_model
from ..models.build import build_potential
from . import metrics_history
from .checkpoint_io import AtomicCheckpointIO
from .data_setup import RunData, prepare_data
from .module import ForceFieldModule
from .sampler import EpochSeededSampler
from .validation_schedule import ValidateFinalEpoch, validation_interval

CHECKPOINTS = "checkpoints"


@dataclass
class TrainResult:
    out: Path
    model_path: Path
    metrics: dict  # test metrics if a test set was given, else validation metrics


class RunExistsError(RuntimeError):
    """Refuse to overwrite a run's checkpoints unless asked to resume."""


def make_objective(config: RunConfig, data: RunData):
    from ..objectives.supervised import EnergyForcesObjective

    t = config.training
    if config.dens is not None:
        from ..objectives.dens import DensObjective

        return DensObjective(config.dens, t.energy_weight, t.forces_weight, cutoff=config.model.cutoff, force_rms=data.scale,
                             forces_kind=t.forces_loss, energy_kind=t.energy_loss, energy_std=data.energy_std)
    return EnergyForcesObjective(t.energy_weight, t.forces_weight, forces_kind=t.forces_loss, energy_kind=t.energy_loss)


def architecture_of(config: RunConfig, data: RunData) -> dict:
    m = config.model
    heads = ("noise",) if config.dens is not None else ()
    return {
        "name": m.name, "cutoff": m.cutoff, "options": dict(m.options), "species": data.species,
        "e0s": data.e0s, "scale": data.scale, "shift": data.shift, "zbl": m.zbl,
        "direct_forces": m.direct_forces, "vector_heads": heads,
    }


def _accelerator(device: str) -> str:
    if device == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return {"cuda": "gpu"}.get(device, device)


def train(config: RunConfig, resume: bool = False, callbacks: list | None = None) -> TrainResult:
    """Train a force field as ``config`` says; resume from ``out/checkpoints/last.ckpt`` if asked.

    ``callbacks``: extra Lightning callbacks (custom logging, profiling, ...).
    """
    out = Path(config.out)
    last = out / CHECKPOINTS / "last.ckpt"
    if resume and not last.exists():
        raise RunExistsError(f"{out}: nothing to resume (no {CHECKPOINTS}/last.ckpt)")
    if not resume and last.exists():
        raise RunExistsError(f"{out}: a run already exists there; pass --resume to continue it or choose another --out")
    t = config.training
    if t.threads:
        torch.set_num_threads(t.threads)
    L.seed_everything(config.seed, workers=True, verbose=False)
    data = prepare_data(config)
    if config.dens is not None:
        forceless = sum(f.forces is None for f in data.train)
        rank_zero_info(f"DeNS: {len(data.train) - forceless} training frames can be denoised; "
                       f"{forceless} have no forces and train without denoising")
    dtype = getattr(torch, config.model.dtype)
    architecture = architecture_of(config, data)
    try:
        potential = build_potential(architecture).to(dtype)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model.options: {exc}") from None
    val_interval = validation_interval(t.val_interval, len(data.train))
    objective = make_objective(config, data)
    if config.dens is not None and config.dens.weight_units == "energy_std":
        rank_zero_info(f"DeNS: λ_DeNS = {config.dens.weight:g} × energy std {data.energy_std:.4g} eV "
                       f"= {objective.weight(0.0):.4g} on the eV-scale loss")
    module = ForceFieldModule(potential, objective, t, seed=config.seed, val_interval=val_interval)

    collate = Collater(dtype)
    train_set, valid_set = GraphDataset(data.train, config.model.cutoff), GraphDataset(data.valid, config.model.cutoff)
    loader_kw = dict(collate_fn=collate, num_workers=t.num_workers, persistent_workers=t.num_workers > 0)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=t.batch_size, sampler=EpochSeededSampler(len(train_set), config.seed), drop_last=len(train_set) > t.batch_size, **loader_kw)
    valid_loader = torch.utils.data.DataLoader(valid_set, batch_size=t.eval_batch_size, shuffle=False, **loader_kw)

    checkpoint = ModelCheckpoint(dirpath=out / CHECKPOINTS, filename="best", monitor="val_loss", save_top_k=1, enable_version_counter=False)
    # Lightning's save_last rewrites last.ckpt only when the monitored checkpoint improves, so a run killed on a
    # plateau would lose every epoch since its best; an unmonitored checkpoint is rewritten at every validation.
    latest = ModelCheckpoint(dirpath=out / CHECKPOINTS, filename="last", save_top_k=1, enable_version_counter=False)
    callbacks = [checkpoint, latest, ValidateFinalEpoch(val_interval), *(callbacks or [])]
    if t.patience:  # EarlyStopping counts validations, the setting counts epochs
        callbacks.append(EarlyStopping(monitor="val_loss", patience=math.ceil(t.patience / val_interval)))
    if t.progress:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, len(train_loader) // 20)))
    strategy = "auto"
    if val_interval > 1:
        rank_zero_info(f"validating every {val_interval} epochs ({len(data.train)} training frames; training.val_interval)")
    if t.strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        backend = "nccl" if _accelerator(t.device) == "gpu" else "gloo"
        strategy = DDPStrategy(find_unused_parameters=True, process_group_backend=backend)
    trainer = L.Trainer(
        default_root_dir=out,
        max_epochs=t.max_epochs,
        max_time={"minutes": t.max_time} if t.max_time else None,
        accelerator=_accelerator(t.device),
        devices=t.devices,
        strategy=strategy,
        gradient_clip_val=t.grad_clip,
        callbacks=callbacks,
        logger=[CSVLogger(out, name="logs", version=""), TensorBoardLogger(out, name="logs", version="")],
        plugins=[AtomicCheckpointIO()],
        inference_mode=False,
        enable_progress_bar=t.progress,
        enable_model_summary=False,
        log_every_n_steps=max(1, min(50, len(train_loader))),
        num_sanity_val_steps=0,
        check_val_every_n_epoch=val_interval,
    )
    if trainer.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
        config.to_yaml(out / "config.yaml")
        if resume:
            metrics_history.set_aside(out / "logs")
    trainer.fit(module, train_loader, valid_loader, ckpt_path=str(last) if resume else None)
    if trainer.is_global_zero:
        metrics_history.join(out / "logs")

    model_path = out / "model.pt"
    metrics: dict = {}
    if trainer.is_global_zero:
        best = checkpoint.best_model_path or str(last)
        state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
        module.load_state_dict(state)
        final = module.averaged_model().cpu().eval()
        save_model(final, architecture, model_path, config=config.model_dump())
        metrics = _finish(final, data, out)
    return TrainResult(out, model_path, metrics)


def _finish(potential, data: RunData, out: Path) -> dict:
    """Evaluate the exported model, write metrics.json, parity and learning-curve PNGs."""
    from ..evaluate import evaluate, parity_plot
    from .curves import plot_learning_curve

    frames, name = (data.test, "test") if data.test else (data.valid, "valid")
    metrics, predictions = evaluate(potential, frames)
    metrics["split"] = name
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2))
    parity_plot(frames, predictions, out / "parity.png")
    csv_path = out / "logs" / "metrics.csv"
    if csv_path.exists():
        plot_learning_curve(csv_path, out / "learning_curve.png")
    return metrics

