"""Models: backbones (representation + per-atom heads), the Potential wrapper, priors. Never imports training."""
