"""Samplers: geometry optimisation, Langevin MD, normal-mode sampling, random rattling.

They run the cheap method in the calling process (an ASE calculator) and
return plain ``ase.Atoms`` copies tagged with ``config_type``; labelling is
a separate, resumable step on a campaign. Every sampler takes one start
structure, a list of them, or a SMILES string, and a ``seed``.
"""
from __future__ import annotations

import numpy as np

from ..data.errors import DataError


def make_calculator(method="gfn2"):
    """An ASE calculator for sampling: "gfn2"/"gfn1"/"ipea1" (tblite), "module:factory", or a calculator object."""
    if not isinstance(method, str):
        return method  # already an ASE calculator
    from .ase_calculator import resolve_factory
    from .xtb import XTB_NAMES
    from .xtb_calculator import XTBCalculator

    if ":" in method:
        return resolve_factory(method)()
    if method.lower() not in XTB_NAMES:
        raise DataError(f"unknown sampling method '{method}'; choose gfn2, gfn1, ipea1 or an import path module:factory", field="method")
    from ..extras import require

    require("tblite.interface", "xTB sampling")
    return XTBCalculator(XTB_NAMES[method.lower()])


def _starts(start, seed: int = 0) -> list:
    from .structures import from_smiles

    if isinstance(start, str):
        return from_smiles(start, seed=seed)
    if isinstance(start, (list, tuple)):
        return [a.copy() for a in start]
    return [start.copy()]


def _tagged(atoms, config_type: str, **info):
    """A calculator-free copy carrying its tag and how it was made."""
    out = atoms.copy()
    out.calc = None
    out.info = {k: v for k, v in atoms.info.items() if k in ("smiles",)}
    out.info.update(config_type=config_type, **info)
    return out


def optimise(start, method="gfn2", fmax: float = 0.01, steps: int = 500, seed: int = 0) -> list:
    """Relax each structure with the cheap method (BFGS to ``fmax`` eV/Å); tagged equilibrium."""
    from ase.optimize import BFGS

    calc = make_calculator(method)
    out = []
    for atoms in _starts(start, seed):
        atoms.calc = calc
        BFGS(atoms, logfile=None).run(fmax=fmax, steps=steps)
        out.append(_tagged(atoms, "minimum", equilibrium=True, sampler="optimise"))
    return out


def sample_md(
    start,
    method="gfn2",
    temperature: float = 500.0,
    steps: int = 2000,
    every: int = 10,
    timestep: float = 0.5,
    friction: float = 0.01,
    seed: int = 0,
    optimise_first: bool = True,
    config_type: str | None = None,
) -> list:
    """Langevin dynamics at ``temperature`` K; keep a snapshot every ``every`` steps.

    ``timestep`` in fs, ``friction`` in 1/fs. Velocities start from a
    Maxwell-Boltzmann distribution at the target temperature (seeded), from
    the relaxed structure unless ``optimise_first=False``. Returns
    ``steps // every`` structures per start structure.
    """
    from ase import units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation

    if steps < 1 or every < 1:
        raise DataError(f"steps and every must be positive (got {steps}, {every})", field="steps")
    calc = make_calculator(method)
    starts = optimise(start, calc, seed=seed) if optimise_first else _starts(start, seed)
    tag = config_type or f"md_{temperature:g}K"
    out = []
    for k, atoms in enumerate(starts):
        rng = np.random.default_rng([seed, k])
        own_constraints = [c.copy() for c in atoms.constraints]
        atoms = atoms.copy()
        atoms.set_constraint(own_constraints + [FixCom()])  # fixes the centre of mass exactly
        atoms.calc = calc
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
        Stationary(atoms)
        ZeroRotation(atoms)
        dyn = Langevin(atoms, timestep * units.fs, temperature_K=temperature, friction=friction / units.fs, fixcm=False, rng=rng)
        for step in range(every, steps + 1, every):
            dyn.run(every)
            snap = _tagged(atoms, tag, sampler="md", temperature=float(temperature), step=step)
            snap.set_constraint([c.copy() for c in own_constraints])
            out.append(snap)
    return out


def hessian(atoms, calc, delta: float = 0.005) -> np.ndarray:
    """Cartesian Hessian (eV/Å², 3N x 3N) by central differences of the forces, symmetrised."""
    atoms = atoms.copy()
    atoms.calc = calc
    x0 = atoms.positions.copy()
    n = len(atoms)
    h = np.zeros((3 * n, 3 * n))
    for i in range(n):
        for c in range(3):
            columns = []
            for sign in (1, -1):
                pos = x0.copy()
                pos[i, c] += sign * delta
                atoms.positions = pos
                columns.append(atoms.get_forces().reshape(-1))
            h[:, 3 * i + c] = -(columns[0] - columns[1]) / (2 * delta)
    atoms.positions = x0
    return 0.5 * (h + h.T)


def normal_modes(atoms, calc, delta: float = 0.005):
    """Vibrational frequencies² (eV/(Å²·amu)) and mass-weighted modes, rigid-body modes removed."""
    masses = atoms.get_masses()
    inv_sqrt_m = np.repeat(masses ** -0.5, 3)
    h_mw = hessian(atoms, calc, delta) * np.outer(inv_sqrt_m, inv_sqrt_m)
    evals, evecs = np.linalg.eigh(h_mw)
    n = len(atoms)
    if n == 1:
        raise DataError("a single atom has no vibrational modes", field="structure")
    centred = atoms.positions - atoms.get_center_of_mass()
    linear = np.linalg.matrix_rank(centred, tol=1e-3) <= 1
    n_rigid = 5 if linear else 6
    keep = np.sort(np.argsort(np.abs(evals))[n_rigid:])
    return evals[keep], evecs[:, keep]


def sample_normal_modes(
    start,
    method="gfn2",
    temperature: float = 300.0,
    n: int = 100,
    seed: int = 0,
    optimise_first: bool = True,
    config_type: str | None = None,
) -> list:
    """Displace along normal modes with classical harmonic Boltzmann amplitudes at ``temperature`` K.

    Each mass-weighted normal coordinate Q_k is drawn from N(0, kT/ω_k²),
    the exact distribution of a harmonic oscillator; soft or imaginary
    modes are floored at 50 cm⁻¹ so they cannot blow up. ``n`` structures
    per start structure.
    """
    from ase import units

    calc = make_calculator(method)
    starts = optimise(start, calc, seed=seed) if optimise_first else _starts(start, seed)
    tag = config_type or f"nm_{temperature:g}K"
    out = []
    for k, atoms in enumerate(starts):
        rng = np.random.default_rng([seed, k])
        evals, modes = normal_modes(atoms, calc)
        omega2 = np.maximum(np.abs(evals), _omega2_floor())
        inv_sqrt_m = np.repeat(atoms.get_masses() ** -0.5, 3)
        kt = units.kB * temperature
        for i in range(n):
            q = rng.standard_normal(len(omega2)) * np.sqrt(kt / omega2)
            disp = (inv_sqrt_m * (modes @ q)).reshape(-1, 3)
            new = atoms.copy()
            new.positions = atoms.positions + disp
            out.append(_tagged(new, tag, sampler="normal_modes", temperature=float(temperature)))
    return out


def _omega2_floor(wavenumber: float = 50.0) -> float:
    """(2πc·ν̃)² in eV/(Å²·amu): the squared angular frequency of ``wavenumber`` cm⁻¹."""
    from ase import units

    # ω in 1/(ASE time unit); ASE time unit is Å·sqrt(amu/eV)
    omega = 2 * np.pi * units._c * 100 * wavenumber * (units.second ** -1)
    return float(omega ** 2)


def rattle(start, stdev: float = 0.05, n: int = 10, seed: int = 0, config_type: str | None = None) -> list:
    """``n`` copies of each structure with independent Gaussian displacements (``stdev`` Å per coordinate)."""
    out = []
    for k, atoms in enumerate(_starts(start, seed)):
        rng = np.random.default_rng([seed, k])
        for _ in range(n):
            new = atoms.copy()
            new.positions = atoms.positions + rng.normal(scale=stdev, size=atoms.positions.shape)
            out.append(_tagged(new, config_type or f"rattle_{stdev:g}", sampler="rattle", stdev=float(stdev)))
    return out
