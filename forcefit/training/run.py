"""``train(config)``: the whole run, short on purpose — data, model, objective, Lightning, export, evaluation."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

from ..atomic_file import write_text_atomic
from ..config import ConfigError, RunConfig
from ..data import Collater, GraphDataset
from ..data.batch import StreamingGraphDataset
from ..model_file import ModelFileError, read_model_file, save_model
from ..models.build import build_potential
from ..objectives.base import FrameNeeds, ObjectiveContext
from ..objectives.terms import SupervisedLoss
from . import finetune, metrics_history
from .checkpoint_io import AtomicCheckpointIO
from .console import ValidationLines, output_is_terminal, quiet_third_party
from .data_setup import RunData, prepare_data
from .module import ForceFieldModule
from .resumable_loader import CountTrainedBatches, ResumableLoader
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


def model_cutoff(config: RunConfig) -> float:
    """The cutoff of the model this run trains: the model file's when fine-tuning, else the config's."""
    if config.finetune is None:
        return config.model.cutoff
    try:
        return float(read_model_file(config.finetune.init)["cutoff"])
    except ModelFileError as exc:
        raise ConfigError(f"finetune.init: {exc}") from None


def make_objectives(config: RunConfig, data: RunData) -> list:
    """The run's objectives from their config entries, sharing the one supervised loss form."""
    from ..objectives.registry import build_objectives

    context = ObjectiveContext(SupervisedLoss.from_training(config.training), cutoff=model_cutoff(config),
                               force_rms=data.scale, energy_std=data.energy_std)
    return build_objectives(config.objective, context)


def frame_needs(config: RunConfig) -> FrameNeeds:
    """What every training frame must carry: the union of what the run's objectives declare."""
    from ..objectives.registry import objective_class

    needs = FrameNeeds(any_label=False)  # the union starts from nothing: an objective that needs no label adds none
    for entry in config.objective:
        needs = needs.merge(objective_class(entry.kind).frame_needs(entry, config.training))
    return needs


def architecture_of(config: RunConfig, data: RunData, aux_heads: tuple[str, ...] = ()) -> dict:
    m = config.model
    return {
        "name": m.name, "cutoff": m.cutoff, "options": dict(m.options), "species": data.species,
        "e0s": data.e0s, "scale": data.scale, "shift": data.shift, "zbl": m.zbl,
        "direct_forces": m.direct_forces, "vector_heads": (), "levels": data.levels,
        "default_level": data.default_level, "aux_heads": tuple(aux_heads),
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
    quiet_third_party()
    if t.threads:
        torch.set_num_threads(t.threads)
    L.seed_everything(config.seed, workers=True, verbose=False)
    data = prepare_data(config, frame_needs(config))
    dtype = getattr(torch, config.model.dtype)
    objectives = make_objectives(config, data)
    aux_heads = tuple(dict.fromkeys(h for o in objectives for h in o.aux_heads))
    for objective in objectives:
        for line in objective.describe(data.train):
            rank_zero_info(line)
    potential, architecture = _build_model(config, data, aux_heads, dtype)
    val_interval = validation_interval(t.val_interval, len(data.train))
    groups = finetune.parameter_groups(potential, config.finetune)
    monitor = _validation_monitor(config, data)
    module = ForceFieldModule(potential, objectives, t, seed=config.seed, val_interval=val_interval,
                              validation_loss=SupervisedLoss.from_training(t) if monitor else None, param_groups=groups)

    collate = Collater(dtype)
    levels = data.levels if data.multi_level else None
    cutoff = architecture["cutoff"]
    dataset = StreamingGraphDataset if config.data.stream else GraphDataset  # a streamed pool builds graphs when read
    train_set, valid_set = dataset(data.train, cutoff, levels), GraphDataset(data.valid, cutoff, levels)
    loader_kw = dict(collate_fn=collate, num_workers=t.num_workers, persistent_workers=t.num_workers > 0)
    train_loader = ResumableLoader(train_set, batch_size=t.batch_size, sampler=EpochSeededSampler(len(train_set), config.seed), drop_last=len(train_set) > t.batch_size, **loader_kw)
    valid_loader = torch.utils.data.DataLoader(valid_set, batch_size=t.eval_batch_size, shuffle=False, **loader_kw)

    checkpoint = ModelCheckpoint(dirpath=out / CHECKPOINTS, filename="best", monitor="val_loss", save_top_k=1, enable_version_counter=False)
    # Lightning's save_last rewrites last.ckpt only when the monitored checkpoint improves, so a run killed on a
    # plateau would lose every epoch since its best; an unmonitored checkpoint is rewritten at every validation.
    latest = ModelCheckpoint(dirpath=out / CHECKPOINTS, filename="last", save_top_k=1, enable_version_counter=False)
    if monitor is None:  # nothing ranks checkpoints: the latest is the one exported
        checkpoint = latest
    callbacks = [*dict.fromkeys([checkpoint, latest]), ValidateFinalEpoch(val_interval), CountTrainedBatches(), *(callbacks or [])]
    if t.checkpoint_minutes:  # inside an epoch too: the loader resumes at the batch after the checkpoint's
        callbacks.append(ModelCheckpoint(dirpath=out / CHECKPOINTS, filename="last", save_top_k=1, enable_version_counter=False,
                                         train_time_interval=timedelta(minutes=t.checkpoint_minutes)))
    if t.patience and monitor:  # EarlyStopping counts validations, the setting counts epochs
        callbacks.append(EarlyStopping(monitor="val_loss", patience=math.ceil(t.patience / val_interval)))
    bar = t.progress and output_is_terminal()  # in a log file a redrawn bar is thousands of lines
    if bar:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, len(train_loader) // 20)))
    if t.progress:
        callbacks.append(ValidationLines(t.max_epochs))
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
        enable_progress_bar=bar,
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


def _validation_monitor(config: RunConfig, data: RunData) -> str | None:
    """'val_loss', or None when no validation frame has a label the loss uses (unlabelled frames, e.g. score
    matching): then nothing can rank checkpoints, and the run keeps its final weights."""
    t = config.training
    labelled = any((f.energy is not None and t.energy_weight > 0) or (f.forces is not None and t.forces_weight > 0)
                   for f in data.valid)
    if labelled:
        return "val_loss"
    if t.scheduler == "plateau":
        raise ConfigError("training.scheduler: 'plateau' follows the validation loss, but no validation frame has a label "
                          "(give labelled validation frames with data.valid, or use 'cosine')")
    rank_zero_info("no validation frame has a label the loss uses: the run keeps its final weights"
                   + (" (training.patience is ignored)" if t.patience else ""))
    return None


def _build_model(config: RunConfig, data: RunData, aux_heads: tuple[str, ...], dtype) -> tuple[torch.nn.Module, dict]:
    """The Potential to train: fresh from the config, or (``finetune.init``) the model file's backbone with this
    run's species and levels, its weights carried over and its energy offsets refitted to the new data."""
    ft = config.finetune
    if ft is None:
        architecture = architecture_of(config, data, aux_heads)
    else:
        try:
            architecture = finetune.init_architecture(ft, data.species, data.levels, data.default_level)
        except ModelFileError as exc:
            raise ConfigError(f"finetune.init: {exc}") from None
        architecture.update(aux_heads=tuple(aux_heads), e0s=data.e0s, shift=data.shift)
        if config.model != type(config.model)():
            rank_zero_info(f"fine-tuning: the backbone ({architecture['name']}, cutoff {architecture['cutoff']:g} Å) comes from "
                           f"{ft.init}; model.name, cutoff, options, zbl and direct_forces of the config are not used")
    try:
        potential = build_potential(architecture).to(dtype)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model.options: {exc}") from None
    if ft is not None:
        for line in finetune.transfer_weights(potential, ft):
            rank_zero_info(line)
        if ft.reestimate_energy:
            finetune.refit_energy_offsets(potential, data.train, data.multi_level)
            rank_zero_info("energy offsets (E0s) refitted to the training data from the model's own predictions")
        architecture["species"] = potential.species
    return potential, architecture


def _finish(potential, data: RunData, out: Path) -> dict:
    """Evaluate the exported model, write metrics.json, parity and learning-curve PNGs (at the default level)."""
    from ..evaluate import evaluate, parity_plot
    from .curves import plot_learning_curve

    frames, name = (data.test, "test") if data.test else (data.valid, "valid")
    if data.multi_level:
        frames = [f for f in frames if f.level == data.default_level] or frames
    metrics, predictions = evaluate(potential, frames)
    metrics["split"] = name
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2))
    parity_plot(frames, predictions, out / "parity.png")
    csv_path = out / "logs" / "metrics.csv"
    if csv_path.exists():
        plot_learning_curve(csv_path, out / "learning_curve.png")
    return metrics

