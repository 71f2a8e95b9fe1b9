"""Multi-stage recipes (ASTEROID and its baselines) as a short layer over ``train()``: see ``runner``."""
from .config import RECIPES, PipelineConfig
from .runner import Pipeline, run_pipeline

__all__ = ["RECIPES", "Pipeline", "PipelineConfig", "run_pipeline"]
