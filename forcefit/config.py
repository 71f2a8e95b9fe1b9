"""The run configuration: one validated, typed object (YAML file + command-line overrides)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from .atomic_file import write_text_atomic


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def listify(v):
    """One path or a list of them, as a list (the YAML and Python short form of a file list)."""
    return [v] if isinstance(v, (str, Path)) else v


class DataConfig(_Strict):
    train: list[str] = Field(default_factory=list, description="Training files (any ASE format, ASE/campaign .db, MD17 .npz).")
    valid: list[str] = Field(default_factory=list, description="Validation files; if empty, valid_fraction of train is held out.")
    valid_fraction: float = Field(0.1, gt=0, lt=1, description="Fraction of train held out for validation when no valid file is given.")
    test: list[str] = Field(default_factory=list, description="Test files evaluated after training.")
    level: str | None = Field(None, description="Level of theory to read from a labelling campaign.")
    energy_key: str = "energy"
    forces_key: str = "forces"
    e0s: str | dict[str, float] = Field("least_squares", description="'least_squares', 'zero', a file of isolated atoms, or {element: eV}.")
    max_train: int | None = Field(None, gt=0, description="Use at most this many training frames (seeded subset).")
    stream: bool = Field(
        False, description="Stream the training frames from one packed pool (forcefit pack): memory independent of the "
        "pool's size, statistics (E0s, force RMS, elements) from the pool file; frames are checked when packed.")
    source_weights: dict[str, float] = Field(
        default_factory=dict, description="Mixture weights: {file-name pattern: factor} multiplies the weight of every "
        "training frame from a matching source file (shell pattern on the file name, e.g. 'spice*.h5': 0.5).")

    @field_validator("source_weights")
    @classmethod
    def _non_negative(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: w for k, w in v.items() if not w >= 0}
        if bad:
            raise ValueError(f"weights must be non-negative numbers, got {bad}")
        return v

    _listify = field_validator("train", "valid", "test", mode="before")(classmethod(lambda cls, v: listify(v)))


class ModelConfig(_Strict):
    name: str = Field("painn", description="Backbone: 'painn' (fast, l<=1) or 'equivariant-ace' (MACE-style many-body, l_max 2).")
    cutoff: float = Field(5.0, gt=0, description="Neighbour cutoff in Å.")
    dtype: Literal["float32", "float64"] = "float32"
    zbl: bool = Field(False, description="Add ZBL short-range repulsion.")
    direct_forces: bool = Field(False, description="Predict forces with a vector head instead of -dE/dx.")
    options: dict[str, Any] = Field(default_factory=dict, description="Backbone hyperparameters, e.g. {features: 64, num_layers: 3}.")

    @field_validator("name")
    @classmethod
    def _known_backbone(cls, v: str) -> str:
        from .models.registry import backbone_class

        backbone_class(v)  # raises the registry's "unknown model" error
        return v

    @model_validator(mode="after")
    def _known_options(self) -> "ModelConfig":
        import inspect

        from .models.registry import backbone_class

        params = inspect.signature(backbone_class(self.name).__init__).parameters
        allowed = sorted(set(params) - {"self", "num_species", "cutoff", "vector_heads", "energy_heads"})
        unknown = sorted(set(self.options) - set(allowed))
        if unknown:
            raise ValueError(f"options {unknown} are not options of model '{self.name}'; it takes: {', '.join(allowed)}")
        return self


class TrainingConfig(_Strict):
    max_epochs: int = Field(300, gt=0)
    max_time: float | None = Field(None, gt=0, description="Wall-time budget in minutes.")
    batch_size: int = Field(5, gt=0)
    eval_batch_size: int = Field(32, gt=0)
    lr: float = Field(5e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    # the loss form: one setting for every objective (DeNS included) and for the validation loss
    energy_loss: Literal["mse", "mae"] = Field(
        "mse", description="Per-atom energy loss: 'mse' or 'mae' (the published DeNS recipe's).")
    forces_loss: Literal["mse", "l2"] = Field(
        "mse", description="Force loss: 'mse' of components or 'l2', the mean per-atom norm ‖F̂−F‖ (the published DeNS recipe's).")
    energy_weight: float = Field(1.0, ge=0, description="λ_E.")
    forces_weight: float = Field(100.0, ge=0, description="λ_F (the published DeNS recipe: 80 with l2 forces and mae energy).")
    ema_decay: float | None = Field(0.99, ge=0, lt=1, description="EMA of weights used for validation and export; null disables.")
    scheduler: Literal["cosine", "plateau", "none"] = "cosine"
    warmup_epochs: float = Field(1.0, ge=0)
    min_lr_ratio: float = Field(0.01, ge=0, le=1)
    grad_clip: float | None = Field(10.0, gt=0)
    patience: int | None = Field(None, gt=0, description="Early-stopping patience in epochs (null: off).")
    val_interval: int | Literal["auto"] = Field(
        "auto", description="Validate every N epochs; 'auto' validates about every 200 training structures "
        "(every epoch from 200 frames up), so tiny training sets do not spend their budget validating.")
    device: Literal["auto", "cpu", "cuda", "gpu", "mps"] = "auto"
    devices: int | Literal["auto"] = 1
    strategy: Literal["auto", "ddp"] = "auto"
    num_workers: int = Field(0, ge=0)
    threads: int | None = Field(None, gt=0, description="torch CPU threads (default: torch's choice).")
    progress: bool = True
    checkpoint_minutes: float | None = Field(
        10.0, gt=0, description="Also write the resumable checkpoint (last.ckpt) every this many minutes of training, "
        "inside an epoch, so a killed run on a large pool loses at most this much (null: only at validations).")

    @field_validator("val_interval")
    @classmethod
    def _positive_interval(cls, v):
        if v != "auto" and v < 1:
            raise ValueError("must be 'auto' or a whole number of epochs ≥ 1")
        return v


class FinetuneConfig(_Strict):
    """Start from a forcefit model file and train it on this run's data (``--init``, ``--finetune``)."""

    init: str = Field(..., description="Model file (model.pt) whose weights this run starts from, or the name of a model shipped with forcefit (organic-gfn2, docs/pretrained.md).")
    mode: Literal["all", "freeze-backbone", "backbone-lr"] = Field(
        "all", description="'all': every weight trains; 'freeze-backbone': only the energy readout (and any auxiliary "
        "head) trains; 'backbone-lr': the backbone trains at backbone_lr × the learning rate.")
    backbone_lr: float = Field(0.1, gt=0, le=1, description="Backbone learning-rate factor with mode 'backbone-lr'.")
    readout: Literal["keep", "reinit"] = Field(
        "keep", description="The energy readout: 'keep' the model file's, or 'reinit' (a fresh initialisation, as a run "
        "from scratch starts), so only the representation carries over from pretraining.")
    new_species: Literal["add", "refuse"] = Field(
        "add", description="Elements of the new data that the model file does not know: 'add' new embeddings, 'refuse' with an error.")
    reestimate_energy: bool = Field(
        True, description="Refit the E0s (and energy shift) to the new data from the model's own predictions, so a level "
        "with a large energy offset starts from a sensible energy.")

    @classmethod
    def parse_mode(cls, text: str) -> dict:
        """``all``, ``freeze-backbone`` or ``backbone-lr=0.1`` (the command-line form) → settings."""
        if text.startswith("backbone-lr"):
            _, _, factor = text.partition("=")
            try:
                return {"mode": "backbone-lr", **({"backbone_lr": float(factor)} if factor else {})}
            except ValueError:
                raise ConfigError(f"--finetune {text}: the factor after 'backbone-lr=' must be a number") from None
        if text in ("all", "freeze-backbone"):
            return {"mode": text}
        raise ConfigError(f"--finetune {text}: choose all, freeze-backbone or backbone-lr=FACTOR")


class LevelsConfig(_Strict):
    """One model for several levels of theory: one energy readout and one set of E0s per level, one shared backbone."""

    key: str = Field("level", description="Per-frame key (extxyz info) naming the frame's level; campaign frames carry theirs.")
    heads: list[str] = Field(..., min_length=1, description="The levels, one energy head each, e.g. [gfn2, dft].")
    predict: str | None = Field(None, description="Level the model predicts by default (default: the last head).")
    e0s: dict[str, str | dict[str, float]] = Field(
        default_factory=dict, description="Per-level reference energies (as data.e0s); levels not named use data.e0s.")

    @model_validator(mode="after")
    def _consistent(self) -> "LevelsConfig":
        if len(set(self.heads)) != len(self.heads):
            raise ValueError(f"heads must be distinct, got {self.heads}")
        if self.predict is None:
            self.predict = self.heads[-1]
        if self.predict not in self.heads:
            raise ValueError(f"predict '{self.predict}' is not one of the heads {self.heads}")
        unknown = sorted(set(self.e0s) - set(self.heads))
        if unknown:
            raise ValueError(f"e0s given for {unknown}, which are not heads {self.heads}")
        return self


def _default_objectives() -> list:
    from .objectives.supervised import SupervisedConfig

    return [SupervisedConfig()]


class RunConfig(_Strict):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    objective: list[SerializeAsAny[Any]] = Field(
        default_factory=_default_objectives,
        description="What training optimises: a tagged entry {kind: supervised | dens, ...settings}, or a list of them "
        "(their losses add). Every objective uses the training section's loss form.")
    finetune: FinetuneConfig | None = None
    levels: LevelsConfig | None = None
    seed: int = 0
    out: str = "runs/default"

    @model_validator(mode="before")
    @classmethod
    def _legacy_dens_section(cls, data):
        """Configs written before objectives existed have a top-level ``dens:`` section: it is ``objective: {kind: dens}``.
        (Their loss settings were saved resolved, so the loss form they trained with is kept.)"""
        if isinstance(data, dict) and "dens" in data:
            data = dict(data)
            dens = data.pop("dens")
            if dens is not None:
                if data.get("objective") not in (None, [], {"kind": "supervised"}, [{"kind": "supervised"}]):
                    raise ValueError("give DeNS either as objective: {kind: dens} or as the older dens: section, not both")
                data["objective"] = [{"kind": "dens", **(dens or {})}]
        return data

    @field_validator("objective", mode="before")
    @classmethod
    def _parse_objectives(cls, v):
        from .objectives.registry import parse_objective

        if v is None:
            return _default_objectives()
        entries = v if isinstance(v, list) else [v]
        if not entries:
            raise ValueError("at least one objective is needed (e.g. {kind: supervised})")
        return [parse_objective(e) for e in entries]

    def objective_of(self, kind: str):
        """The config of the objective ``kind`` if the run has one, else None."""
        return next((o for o in self.objective if o.kind == kind), None)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RunConfig":
        return cls.model_validate(load_yaml(path))

    def to_yaml(self, path: str | Path) -> None:
        write_text_atomic(path, yaml.safe_dump(self.model_dump(), sort_keys=False))


class ConfigError(ValueError):
    """A configuration that does not validate, with every problem listed by its dotted path."""


def load_yaml(path: str | Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping, got {type(data).__name__}")
    return data


def build_config(base: dict | None = None, overrides: dict | None = None, source: str = "config") -> RunConfig:
    """Merge nested ``overrides`` (e.g. from CLI flags, None values ignored) into ``base`` and validate."""
    merged = _deep_merge(base or {}, _drop_none(overrides or {}))
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{source}: {problems}") from None


def _drop_none(d: dict) -> dict:
    return {k: _drop_none(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
