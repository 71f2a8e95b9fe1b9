"""Training: the Lightning module, EMA, schedules, checkpoints and the run orchestration. May import models and data."""
