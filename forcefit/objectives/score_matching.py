"""Score matching on unlabelled Boltzmann samples (ASTEROID's unlabelled variant, Bukharin et al., ICML 2023).

Frames sampled from p(x) ∝ exp(−E(x)/k_B·T) (MD at T with the cheap method)
carry information about the forces without any label: the score ∇log p is
F/k_B·T. For a conservative model (F̂ = −∂Ê/∂x) Hyvärinen's objective, times
(k_B·T)², is

    J = E_x[ k_B·T · tr(∂F̂/∂x) + ½‖F̂‖² ]        (eV²/Å²)

and is minimised by the true forces. Two estimators:
- ``sliced`` (Hutchinson): tr(∂F̂/∂x) ≈ mean over random v (Rademacher, E[vvᵀ] = I)
  of vᵀ ∂(F̂·v)/∂x, one Hessian-vector product per projection;
- ``denoising``: corrupt x by δ ~ N(0, σ²I) and regress F̂(x + δ) on the score of the
  Gaussian kernel scaled to forces, −k_B·T·δ/σ² (cheaper: no second derivative).

T is each frame's own sampling temperature where it carries one (extxyz info
``temperature``, K), else the configured ``temperature``: MD at several
temperatures is used whole, each frame scored against its own Boltzmann law.
Both are reported per force component (divided by 3·atoms, per-frame weights
applied), so ``weight`` plays the role λ_F plays for labelled forces. Fixed atoms
are neither projected nor moved nor counted. Energies are not learned (the
objective has none): a fine-tuning stage refits the energy offsets.
"""
from __future__ import annotations

from typing import Literal

import torch
from ase.units import kB
from pydantic import Field

from .base import FrameNeeds, ObjectiveConfig, ObjectiveContext
from .losses import harmonic_denoising_loss, per_component_mean


class ScoreMatchingConfig(ObjectiveConfig):
    """``objective: {kind: score-matching, temperature: K, ...}``: unlabelled frames sampled at ``temperature``
    (or each at its own, from the frame's ``temperature`` tag)."""

    kind: Literal["score-matching"] = "score-matching"
    temperature: float | None = Field(
        None, gt=0, description="Temperature (K) the frames were sampled at (Boltzmann samples, e.g. NVT MD); a frame's own "
        "'temperature' (extxyz info) wins. Required unless every training frame carries one.")
    estimator: Literal["sliced", "denoising"] = Field(
        "sliced", description="'sliced': Hutchinson trace estimate (exact in expectation, one Hessian-vector product per "
        "projection); 'denoising': Gaussian-noise score matching (cheaper, biased by σ).")
    projections: int = Field(1, ge=1, description="Random projections per step for the sliced estimator.")
    sigma: float = Field(0.02, gt=0, description="Noise standard deviation σ (Å) of the denoising estimator.")
    weight: float = Field(100.0, ge=0, description="Multiplies the objective (eV²/Å² per component), like λ_F for forces.")


def rademacher(shape, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=generator, device=like.device).to(like.dtype) * 2 - 1


def frame_kT(batch: dict, default_temperature: float | None) -> torch.Tensor:
    """k_B·T (eV) per atom: its frame's ``temperature`` tag, or ``default_temperature`` where the frame has none."""
    t = batch.get("temperature")  # 0 where a frame has none (a real temperature is > 0)
    per_frame = torch.zeros(batch["ptr"].shape[0] - 1, dtype=batch["positions"].dtype) if t is None else t
    if default_temperature is not None:
        per_frame = torch.where(per_frame > 0, per_frame, torch.full_like(per_frame, default_temperature))
    if (per_frame <= 0).any():
        raise ValueError("score matching: a frame has no temperature tag and objective.temperature is not set")
    return (kB * per_frame)[batch["batch"]]


def sliced_score_loss(model, batch: dict, kT, projections: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """mean[k_B·T · mean_k v_kᵀ ∂(F̂·v_k)/∂x + ½‖F̂‖²] per component, for given projections v_k (N, 3);
    ``kT`` a number or one value per atom."""
    out = model(batch, compute_forces=True)
    forces, positions = out["forces"], out["positions"]
    free = ~batch["fixed"]
    trace = forces.new_zeros(forces.shape[0])
    for v in projections:
        v = v * free.unsqueeze(-1).to(v.dtype)
        (hv,) = torch.autograd.grad((forces * v).sum(), positions, create_graph=True)
        trace = trace + (hv * v).sum(-1) / len(projections)
    per_atom = kT * trace + 0.5 * (forces**2).sum(-1)
    loss = per_component_mean(per_atom, free, batch)
    return loss, {"score_divergence": per_component_mean(trace.detach(), free, batch),
                  "score_force_norm": per_component_mean((forces.detach() ** 2).sum(-1), free, batch)}


def denoising_score_loss(model, batch: dict, kT, displacement: torch.Tensor, sigma: float, cutoff: float):
    """mean ‖F̂(x + δ) + k_B·T·δ/σ²‖² per component, for a given displacement δ (N, 3), zero on fixed atoms;
    ``kT`` a number or one value per atom."""
    free = ~batch["fixed"]
    k = kT / sigma**2
    loss, target = harmonic_denoising_loss(model, batch, displacement, k.unsqueeze(-1) if torch.is_tensor(k) else k, free, cutoff)
    return loss, {"score_target_rms": (target[free] ** 2).mean().sqrt().detach()}


class ScoreMatching:
    """Score-matching objective: trains forces on unlabelled frames (labels, if any, are ignored)."""

    Config = ScoreMatchingConfig
    aux_heads: tuple[str, ...] = ()

    def __init__(self, cfg: ScoreMatchingConfig, context: ObjectiveContext):
        self.cfg, self.cutoff = cfg, context.cutoff
        self.kT = None if cfg.temperature is None else float(kB * cfg.temperature)  # eV, for frames without their own

    @staticmethod
    def frame_needs(cfg: ScoreMatchingConfig, training) -> FrameNeeds:
        return FrameNeeds(any_label=False)

    def __call__(self, model, batch: dict, progress: float = 0.0, generator: torch.Generator | None = None):
        c, x = self.cfg, batch["positions"]
        kT = frame_kT(batch, c.temperature).to(x.dtype)
        if c.estimator == "sliced":
            vs = [rademacher(x.shape, generator, x) for _ in range(c.projections)]
            loss, metrics = sliced_score_loss(model, batch, kT, vs)
        else:
            delta = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * c.sigma
            loss, metrics = denoising_score_loss(model, batch, kT, delta, c.sigma, self.cutoff)
        metrics["loss_score"] = loss.detach()
        return c.weight * loss, metrics

    def describe(self, frames) -> list[str]:
        """Says at which temperatures the frames are scored; a frame with no temperature and none configured is an error."""
        how = (f"sliced, {self.cfg.projections} projection(s)" if self.cfg.estimator == "sliced"
               else f"denoising, σ = {self.cfg.sigma:g} Å")
        own = [] if hasattr(frames, "flags") else [f.temperature for f in frames]  # a packed pool is not read whole (it has none)
        tagged = sorted({t for t in own if t is not None})
        if self.cfg.temperature is None and (not own or None in own):
            missing = next((f for f in frames if f.temperature is None), None) if own else None
            where = f"{missing.source}, frame {missing.index}: " if missing is not None else ""
            raise ValueError(f"{where}score matching needs the temperature each frame was sampled at: set objective.temperature "
                             "or give every frame a 'temperature' (K) in its extxyz info")
        at = (f"at their own temperatures ({', '.join(f'{t:g}' for t in tagged)} K)" if tagged else "")
        if self.cfg.temperature is not None:
            at = (at + f", {self.cfg.temperature:g} K where a frame has none") if at else f"at {self.cfg.temperature:g} K (k_B·T = {self.kT * 1000:.2f} meV)"
        return [f"score matching on {len(frames)} frames sampled {at}; {how}; their labels, if any, are not used"]
