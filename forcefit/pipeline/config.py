"""The pipeline configuration: cheap and accurate data, one backbone, a budget per stage, the recipes to compare.

Validated in full before any stage runs: a missing file, a campaign level with
no labels or an unknown recipe is one error line (``check_inputs``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from ..config import ConfigError, FinetuneConfig, ModelConfig, _Strict, listify, load_yaml

RECIPES = ("accurate-only", "pretrain-finetune", "asteroid", "asteroid-score", "delta", "multilevel")


class Source(_Strict):
    """Frames from files (any format the data layer reads), or a labelling campaign and its level."""

    files: list[str] = Field(default_factory=list, description="Frame files; a campaign .db needs ``level``.")
    level: str | None = Field(None, description="Level of theory to read from a campaign .db.")
    cpu_seconds_per_label: float | None = Field(
        None, ge=0, description="Measured labelling cost, for files that do not come from a campaign (a campaign "
        "states its own, measured while labelling).")

    _files = field_validator("files", mode="before")(classmethod(lambda cls, v: listify(v)))

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data):
        return {"files": data} if isinstance(data, (str, list)) else data


class DataSection(_Strict):
    accurate: Source = Field(..., description="The few accurate (e.g. DFT) training frames.")
    accurate_valid: Source | None = Field(None, description="Accurate validation frames (default: valid_fraction of accurate).")
    valid_fraction: float = Field(0.2, gt=0, lt=1, description="Share of the accurate frames held out for validation.")
    cheap: Source | None = Field(None, description="Cheap labelled frames (e.g. GFN2-xTB), for pretraining recipes.")
    cheap_valid_fraction: float = Field(0.05, gt=0, lt=1, description="Share of the cheap frames that validates pretraining.")
    unlabelled: Source | None = Field(None, description="Unlabelled Boltzmann samples (e.g. cheap MD frames) for asteroid-score.")
    temperature: float | None = Field(None, gt=0, description="Temperature (K) the unlabelled frames were sampled at; a frame's "
                                      "own 'temperature' (extxyz info) wins, so MD at several temperatures is used whole. Needed "
                                      "unless every unlabelled frame carries one.")
    test: Source | None = Field(None, description="Test frames at the accurate level, never used for training or selection.")
    e0s: str | dict[str, float] = Field("least_squares", description="Reference energies of the accurate level (as data.e0s).")


class Budget(_Strict):
    """How long one stage trains: whichever of max_epochs and max_minutes comes first."""

    max_epochs: int = Field(300, gt=0)
    max_minutes: float | None = Field(None, gt=0)


class Budgets(_Strict):
    accurate: Budget = Field(default_factory=Budget, description="Accurate-only training (also θ0 of asteroid).")
    pretrain: Budget = Field(default_factory=Budget, description="Every pretraining stage.")
    finetune: Budget = Field(default_factory=Budget, description="Every fine-tuning stage.")
    multilevel: Budget | None = Field(None, description="Joint multi-level training (default: pretrain + finetune).")
    delta: Budget | None = Field(None, description="Δ-learning training (default: the accurate budget).")


class AsteroidSection(_Strict):
    gamma: float = Field(1.0, gt=0, description="Temperature of the weights w_i = exp(−b_i/γ), in eV/Å: the unit of the "
                         "bias b_i, the per-frame force MAE of θ0 against the cheap label.")
    energy: Literal["theta0", "reference", "none"] = Field(
        "reference", description="Energy labels of the cheap frames in bias-aware pretraining: 'theta0' (θ0's predicted "
        "energies, the published choice), 'reference' (the cheap energies with their own least-squares E0s), "
        "'none' (forces only).")
    energy_weight: float | None = Field(None, ge=0, description="λ_E of pretraining (default: training.energy_weight).")


class FinetuneSection(_Strict):
    """How every fine-tuning stage trains the pretrained model (a run's ``finetune`` section, less ``init``;
    the fields are FinetuneConfig's own, so the two cannot drift apart)."""

    mode: Literal["all", "freeze-backbone", "backbone-lr"] = FinetuneConfig.model_fields["mode"]
    backbone_lr: float = FinetuneConfig.model_fields["backbone_lr"]
    readout: Literal["keep", "reinit"] = FinetuneConfig.model_fields["readout"]


class ScoreSection(_Strict):
    estimator: Literal["sliced", "denoising"] = "sliced"
    projections: int = Field(1, ge=1)
    sigma: float = Field(0.02, gt=0, description="Å, for the denoising estimator.")
    weight: float = Field(100.0, ge=0)


class DeltaSection(_Strict):
    method: str = Field("gfn2", description="The cheap method under the Δ model (gfn2, gfn1, ipea1 or module:factory); "
                        "it is part of the model file and runs at every prediction.")


class PipelineConfig(_Strict):
    out: str = Field("runs/pipeline", description="Folder of the pipeline: one run folder per stage, the report.")
    seed: int = 0
    recipes: list[str] = Field(..., min_length=1, description=f"Any of: {', '.join(RECIPES)}.")
    data: DataSection
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: dict[str, Any] = Field(default_factory=dict, description="Training settings every stage shares "
                                     "(a run config's training section; budgets set max_epochs/max_time).")
    budget: Budgets = Field(default_factory=Budgets)
    finetune: FinetuneSection = Field(default_factory=FinetuneSection)
    asteroid: AsteroidSection = Field(default_factory=AsteroidSection)
    score: ScoreSection = Field(default_factory=ScoreSection)
    delta: DeltaSection = Field(default_factory=DeltaSection)

    @field_validator("recipes")
    @classmethod
    def _known_recipes(cls, v: list[str]) -> list[str]:
        unknown = [r for r in v if r not in RECIPES]
        if unknown:
            raise ValueError(f"unknown recipe(s) {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
        return list(dict.fromkeys(v))

    @field_validator("training")
    @classmethod
    def _valid_training(cls, v: dict) -> dict:
        from ..config import TrainingConfig

        TrainingConfig.model_validate(v)
        return v

    @model_validator(mode="after")
    def _data_for_recipes(self) -> "PipelineConfig":
        d = self.data
        needs_cheap = {"pretrain-finetune", "asteroid", "multilevel"} & set(self.recipes)
        if needs_cheap and (d.cheap is None or not d.cheap.files):
            raise ValueError(f"recipe(s) {', '.join(sorted(needs_cheap))} need cheap labelled frames (data.cheap)")
        if "asteroid-score" in self.recipes:
            if d.unlabelled is None or not d.unlabelled.files:
                raise ValueError("recipe asteroid-score needs unlabelled frames (data.unlabelled)")
        return self

    @classmethod
    def load(cls, path: str | Path) -> "PipelineConfig":
        data = load_yaml(path)
        try:
            config = cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"{path}: {problems}") from None
        return config.resolved_paths(Path(path).resolve().parent)

    def resolved_paths(self, base: Path) -> "PipelineConfig":
        """Relative file names are relative to the config file, as a user writing it next to the data expects."""
        def fix(src: Source | None):
            if src is not None:
                src.files = [str(p if Path(p).is_absolute() else base / p) for p in src.files]
        for src in (self.data.accurate, self.data.accurate_valid, self.data.cheap, self.data.unlabelled, self.data.test):
            fix(src)
        if not Path(self.out).is_absolute():
            self.out = str(base / self.out)
        return self

    def sources(self) -> dict[str, Source]:
        d = self.data
        named = {"accurate": d.accurate, "accurate_valid": d.accurate_valid, "cheap": d.cheap,
                 "unlabelled": d.unlabelled, "test": d.test}
        return {k: v for k, v in named.items() if v is not None and v.files}
