"""Energy and force error metrics: one definition for validation during training and for ``evaluate``.

Errors are gathered as sums (so batches, processes and files add up exactly)
and turned into MAE/RMSE at the end, in meV, meV/atom and meV/Å. Force errors
are over every Cartesian component of every labelled atom.
"""
from __future__ import annotations

import numpy as np

#: order of the entries in an error-sums vector
SUM_KEYS = ("n_energy", "e_abs", "e_sq", "e_abs_atom", "e_sq_atom", "n_forces", "n_components", "f_abs", "f_sq")


def error_sums(energy_errors, n_atoms, force_errors, n_force_frames: int) -> np.ndarray:
    """Sums of the errors of one group of frames: energy errors (eV, one per labelled frame), their atom counts,
    force errors (eV/Å, any shape: every component counts) and how many frames those forces came from."""
    de = np.asarray(energy_errors, dtype=np.float64).ravel()
    de_atom = de / np.asarray(n_atoms, dtype=np.float64).ravel() if de.size else de
    df = np.asarray(force_errors, dtype=np.float64).ravel()
    return np.array([de.size, np.abs(de).sum(), (de**2).sum(), np.abs(de_atom).sum(), (de_atom**2).sum(),
                     n_force_frames, df.size, np.abs(df).sum(), (df**2).sum()])


def summarise(sums) -> dict:
    """Error sums → ``n_energy, n_forces`` and energy/force MAE and RMSE in meV (None where nothing was labelled)."""
    s = dict(zip(SUM_KEYS, (float(x) for x in np.asarray(sums, dtype=np.float64))))
    out: dict = {"n_energy": int(s["n_energy"]), "n_forces": int(s["n_forces"])}
    n, c = s["n_energy"], s["n_components"]
    out["energy_mae"] = 1e3 * s["e_abs"] / n if n else None
    out["energy_mae_per_atom"] = 1e3 * s["e_abs_atom"] / n if n else None
    out["energy_rmse"] = 1e3 * np.sqrt(s["e_sq"] / n) if n else None
    out["energy_rmse_per_atom"] = 1e3 * np.sqrt(s["e_sq_atom"] / n) if n else None
    out["forces_mae"] = 1e3 * s["f_abs"] / c if c else None
    out["forces_rmse"] = 1e3 * np.sqrt(s["f_sq"] / c) if c else None
    return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in out.items()}


def batch_error_sums(out: dict, batch: dict) -> np.ndarray:
    """Error sums of a model output against a batch's labels (frames without a label skip that label)."""
    has_e = batch["has_energy"]
    de = (out["energy"].detach() - batch["energy"])[has_e]
    n_atoms = batch["num_atoms"][has_e]
    atom_has_f = batch["has_forces"][batch["batch"]]
    df = (out["forces"].detach() - batch["forces"])[atom_has_f] if "forces" in out else out["energy"].new_zeros(0)
    return error_sums(de.double().cpu().numpy(), n_atoms.cpu().numpy(), df.double().cpu().numpy(), int(batch["has_forces"].sum()))
