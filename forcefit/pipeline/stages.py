"""The recipes as ordered stages; each training stage is an ordinary ``train()`` run folder.

A recipe is a list of stage names; stages are shared between recipes (θ0 of
``asteroid`` is the ``accurate`` stage of ``accurate-only``) and run once.
Every stage builds a plain run config from the pipeline config and the
folders of the stages before it, so the pipeline adds no training loop.
"""
from __future__ import annotations

from pathlib import Path

from .config import PipelineConfig

RECIPE_STAGES: dict[str, list[str]] = {
    "accurate-only": ["accurate"],
    "pretrain-finetune": ["pretrain-plain", "finetune-plain"],
    "asteroid": ["accurate", "bias", "pretrain-asteroid", "finetune-asteroid"],
    "asteroid-score": ["pretrain-score", "finetune-score"],
    "delta": ["delta"],
    "multilevel": ["multilevel"],
}
# which stage's model a recipe's result is
RECIPE_MODEL = {recipe: stages[-1] for recipe, stages in RECIPE_STAGES.items()}
# the stage whose output a stage reads (θ0 for the bias, the weighted frames, the pretrained model)
UPSTREAM = {"bias": "accurate", "pretrain-asteroid": "bias", "finetune-plain": "pretrain-plain",
            "finetune-asteroid": "pretrain-asteroid", "finetune-score": "pretrain-score"}
CHEAP_LEVEL, ACCURATE_LEVEL = "cheap", "accurate"


def stage_order(recipes: list[str]) -> list[str]:
    """Every stage the recipes need, each once, in an order that respects each recipe's own order."""
    order: list[str] = []
    for recipe in recipes:
        for stage in RECIPE_STAGES[recipe]:
            if stage not in order:
                order.append(stage)
    return order


class StageConfigs:
    """Run configs (plain dicts for ``build_config``) of the training stages."""

    def __init__(self, cfg: PipelineConfig, data_dir: Path, stage_dir):
        self.cfg, self.data, self.stage_dir = cfg, data_dir, stage_dir

    def delta_data_dir(self) -> Path:
        """The accurate frames minus the cheap method, which the delta stage trains on."""
        return self.stage_dir("delta").parent / "delta-data"

    def _run(self, stage: str, budget, data: dict, **sections) -> dict:
        training = {**self.cfg.training, "max_epochs": budget.max_epochs, "max_time": budget.max_minutes,
                    **sections.pop("training", {})}
        return {"data": data, "model": self.cfg.model.model_dump(), "training": training, "seed": self.cfg.seed,
                "out": str(self.stage_dir(stage)), **sections}

    def _accurate_data(self, **extra) -> dict:
        d = {"train": [str(self.data / "accurate_train.xyz")], "valid": [str(self.data / "accurate_valid.xyz")],
             "e0s": self.cfg.data.e0s}
        if (self.data / "test.xyz").exists():
            d["test"] = [str(self.data / "test.xyz")]
        return {**d, **extra}

    def _finetune(self, stage: str, pretrained: str) -> dict:
        # only settings that differ from the defaults, so stages finished before the section existed still match
        how = self.cfg.finetune.model_dump(exclude_defaults=True)
        return self._run(stage, self.cfg.budget.finetune, self._accurate_data(),
                         finetune={"init": str(self.stage_dir(pretrained) / "model.pt"), **how})

    def config(self, stage: str) -> dict:
        c, b = self.cfg, self.cfg.budget
        cheap = {"train": [str(self.data / "cheap_train.xyz")], "valid": [str(self.data / "cheap_valid.xyz")]}
        if stage == "accurate":
            return self._run(stage, b.accurate, self._accurate_data())
        if stage == "pretrain-plain":
            return self._run(stage, b.pretrain, cheap)
        if stage == "pretrain-asteroid":
            weighted = {"train": [str(self.stage_dir("bias") / "cheap_train.xyz")],
                        "valid": [str(self.stage_dir("bias") / "cheap_valid.xyz")]}
            a = c.asteroid
            energy_weight = 0.0 if a.energy == "none" else a.energy_weight
            training = {} if energy_weight is None else {"energy_weight": energy_weight}
            return self._run(stage, b.pretrain, weighted, training=training)
        if stage == "pretrain-score":
            s = c.score
            objective = {"kind": "score-matching", "temperature": c.data.temperature, "estimator": s.estimator,
                         "projections": s.projections, "sigma": s.sigma, "weight": s.weight}
            # the objective learns forces only; the accurate validation frames pick the checkpoint by their forces
            return self._run(stage, b.pretrain, {"train": [str(self.data / "unlabelled.xyz")],
                                                 "valid": [str(self.data / "accurate_valid.xyz")]},
                             objective=objective, training={"energy_weight": 0.0})
        if stage.startswith("finetune-"):
            return self._finetune(stage, "pretrain-" + stage.removeprefix("finetune-"))
        if stage == "multilevel":
            budget = b.multilevel or type(b.pretrain)(
                max_epochs=b.pretrain.max_epochs + b.finetune.max_epochs,
                max_minutes=None if b.pretrain.max_minutes is None or b.finetune.max_minutes is None
                else b.pretrain.max_minutes + b.finetune.max_minutes)
            data = self._accurate_data(train=[str(self.data / "cheap_train.xyz"), str(self.data / "accurate_train.xyz")])
            levels = {"heads": [CHEAP_LEVEL, ACCURATE_LEVEL], "predict": ACCURATE_LEVEL,
                      "e0s": {ACCURATE_LEVEL: c.data.e0s}}
            return self._run(stage, budget, data, levels=levels)
        if stage == "delta":
            delta = self.delta_data_dir()
            data = {"train": [str(delta / "accurate_train.xyz")], "valid": [str(delta / "accurate_valid.xyz")],
                    "e0s": "least_squares"}
            if (delta / "test.xyz").exists():
                data["test"] = [str(delta / "test.xyz")]
            return self._run(stage, b.delta or b.accurate, data)
        raise KeyError(f"no run config for stage {stage}")
