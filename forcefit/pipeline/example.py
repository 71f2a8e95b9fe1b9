"""The commented example printed by ``forcefit pipeline --example asteroid``."""

ASTEROID = """\
# forcefit pipeline: accurate models from a few accurate labels plus many cheap ones.
# Run: forcefit pipeline THIS.yaml; rerun to resume (finished stages are skipped, a killed
# stage resumes from its checkpoint); forcefit pipeline THIS.yaml --report for the comparison.
# Relative paths are relative to this file.
out: runs/asteroid
seed: 0
recipes:             # any of: accurate-only pretrain-finetune asteroid asteroid-score delta multilevel
  - accurate-only    # the baseline: the accurate frames alone
  - pretrain-finetune  # cheap frames with every weight 1, then fine-tuning on the accurate ones
  - asteroid         # θ0 on accurate -> per-frame bias b_i -> pretraining weighted exp(-b_i/γ) -> fine-tuning
  - asteroid-score   # score matching on unlabelled cheap MD frames -> fine-tuning
  - multilevel       # one backbone, one energy head per level, both levels at once
  # - delta          # learn accurate - cheap; the cheap method (GFN2-xTB) is part of the model file
data:
  accurate: dft.xyz            # files, or {files: [campaign.db], level: dft}
  # accurate_valid: dft_valid.xyz   # default: valid_fraction of the accurate frames
  valid_fraction: 0.2
  cheap: {files: [campaign.db], level: gfn2}   # a campaign states its measured CPU-seconds per label;
  #   for plain files give {files: [xtb.xyz], cpu_seconds_per_label: 0.003}
  unlabelled: xtb_md_300K.xyz  # Boltzmann samples (NVT MD with the cheap method) for asteroid-score
  temperature: 300             # K, the temperature those frames were sampled at (a frame's own
                               #   extxyz info 'temperature' wins: MD at several temperatures in one file)
  test: test.xyz               # accurate test frames, never trained on or used for selection
  e0s: least_squares           # or isolated_atoms.xyz
model:
  name: equivariant-ace
training:                      # shared by every stage (a run config's training section)
  batch_size: 5
  lr: 0.005
budget:                        # per stage: whichever comes first
  accurate: {max_epochs: 2000, max_minutes: 10}
  pretrain: {max_epochs: 300, max_minutes: 30}
  finetune: {max_epochs: 2000, max_minutes: 10}
finetune:                      # every fine-tuning stage
  mode: all                    # or 'backbone-lr' (with backbone_lr: 0.1) or 'freeze-backbone'
  readout: keep                # or 'reinit': a fresh energy readout on the pretrained representation (as good or better
                               # after asteroid-score, whose readout never saw an energy: docs/asteroid.md)
asteroid:
  gamma: 1.0                   # eV/Å: w_i = exp(-b_i/γ), b_i = per-frame force MAE of θ0 against the cheap label
  energy: reference            # cheap energies with their own E0s; 'theta0' (θ0's predictions, as published); 'none'
score:
  estimator: sliced            # Hutchinson trace, or 'denoising' (Gaussian noise, cheaper)
  projections: 1
delta:
  method: gfn2
"""

EXAMPLES = {"asteroid": ASTEROID}
