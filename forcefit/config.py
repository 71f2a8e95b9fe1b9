"""The run configuration: one validated, typed object (YAML file + command-line overrides)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .atomic_file import write_text_atomic


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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

    @field_validator("train", "valid", "test", mode="before")
    @classmethod
    def _listify(cls, v):
        return [v] if isinstance(v, (str, Path)) else v


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
        allowed = sorted(set(params) - {"self", "num_species", "cutoff", "vector_heads"})
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
    energy_loss: Literal["mse", "mae"] | None = Field(
        None, description="Per-atom energy loss: 'mse' (default) or 'mae' (default with DeNS, as published).")
    forces_loss: Literal["mse", "l2"] | None = Field(
        None, description="Force loss: 'mse' of components (default) or 'l2', the mean per-atom norm ‖F̂−F‖ (default with DeNS).")
    energy_weight: float = Field(1.0, ge=0, description="λ_E.")
    forces_weight: float | None = Field(None, ge=0, description="λ_F (default 100 with MSE forces, 80 with DeNS as published).")
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

    @field_validator("val_interval")
    @classmethod
    def _positive_interval(cls, v):
        if v != "auto" and v < 1:
            raise ValueError("must be 'auto' or a whole number of epochs ≥ 1")
        return v


class DensConfig(_Strict):
    """DeNS (METHODS.md §1); defaults are the published small-molecule ones."""

    sigma: float = Field(0.05, gt=0, description="Noise standard deviation σ (Å).")
    p: float = Field(0.25, ge=0, le=1, description="Probability a structure (or the batch) is denoised.")
    ratio: float = Field(0.25, gt=0, le=1, description="Probability each atom of a chosen structure is corrupted (r).")
    weight: float = Field(5.0, ge=0, description="λ_DeNS, in the unit set by weight_units.")
    weight_units: Literal["energy_std", "loss"] = Field(
        "energy_std", description="'energy_std' (published): the published code divides the energy and force terms by the "
        "training energies' std and adds λ_DeNS·noise loss; forcefit's loss is in eV, so the noise term is multiplied by "
        "that std (eV) to keep the published balance. 'loss': λ_DeNS multiplies the noise term as is.")
    decay: bool = Field(True, description="Decay λ_DeNS linearly to 0 over training.")
    per_batch: bool = Field(False, description="One coin per batch (catalyst code) instead of per structure.")
    normalize_forces: bool = Field(False, description="Divide encoded forces by the dataset force RMS.")
    encoding_scale: float = Field(
        1.0, gt=0, description="Multiply encoded forces (eV/Å) by this. The published MD17 code encodes forces in "
        "kcal/mol/Å, about 23 times the eV/Å numbers: 23.06 reproduces that input scale.")
    encode_forces: bool = Field(
        True, description="Feed corrupted atoms' original forces to the model (published). False: denoise without "
        "them, the ill-posed task the force encoding exists to fix (ablation option).")
    label_corrupted: bool = Field(
        True, description="Train energy and uncorrupted atoms' forces of denoising structures against the original "
        "labels (published); false: denoising structures train the noise head only (investigation option).")


class RunConfig(_Strict):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    dens: DensConfig | None = None
    seed: int = 0
    out: str = "runs/default"

    @model_validator(mode="after")
    def _resolve_losses(self) -> "RunConfig":
        """Unset loss settings take the plain defaults (MSE, 1:100) or, with DeNS, the published
        small-molecule recipe (energy MAE, force L2 norm, 1:80): the noise term's weight λ_DeNS = 5 is
        only balanced against forces on that scale (with MSE forces it swamps them ~50×)."""
        t, dens = self.training, self.dens is not None
        defaults = {"energy_loss": "mae" if dens else "mse", "forces_loss": "l2" if dens else "mse",
                    "forces_weight": 80.0 if dens else 100.0}
        for key, value in defaults.items():
            if getattr(t, key) is None:
                setattr(t, key, value)
        return self

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
