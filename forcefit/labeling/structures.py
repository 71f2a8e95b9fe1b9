"""Starting structures: SMILES (RDKit ETKDG conformers), structure files, campaigns.

Everything returns plain ``ase.Atoms`` without a calculator, so the
samplers and the campaign store see one type. Bad input raises DataError
naming the file or the SMILES.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.errors import DataError


def from_smiles(smiles: str, n_conformers: int = 1, seed: int = 0, config_type: str | None = None) -> list:
    """3D conformers of a molecule (hydrogens added, ETKDGv3 embedding, MMFF relaxed where available).

    The formal charges of the SMILES become initial charges, so the total
    charge reaches every reference method.
    """
    from ase import Atoms

    from ..extras import require

    require("rdkit", "SMILES input")
    from rdkit import Chem, RDLogger
    from rdkit.Chem import AllChem

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles) if smiles else None
    if mol is None:
        raise DataError(f"RDKit cannot parse the SMILES '{smiles}'", field="smiles")
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=int(n_conformers), params=params))
    if not ids:
        params.useRandomCoords = True
        ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=int(n_conformers), params=params))
    if not ids:
        raise DataError(f"RDKit could not embed a 3D conformer for '{smiles}'", field="smiles")
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMoleculeConfs(mol, maxIters=500)
    numbers = [a.GetAtomicNum() for a in mol.GetAtoms()]
    charges = np.array([a.GetFormalCharge() for a in mol.GetAtoms()], dtype=float)
    out = []
    for cid in ids:
        atoms = Atoms(numbers=numbers, positions=mol.GetConformer(cid).GetPositions())
        if charges.any():
            atoms.set_initial_charges(charges)
        atoms.info.update(config_type=config_type or "smiles", smiles=smiles)
        out.append(atoms)
    return out


def read_structures(path: str | Path, index: str = ":") -> list:
    """Structures from any file ASE reads, or from a campaign / ASE database (``.db``).

    Labels in the file are dropped (a campaign keeps labels per level);
    ``config_type`` in the file's info is kept as the structure's tag.
    """
    import ase.io

    path = Path(path)
    if not path.exists():
        raise DataError("no such file", file=str(path))
    if path.suffix.lower() == ".db":
        return _read_db(path)
    try:
        images = ase.io.read(str(path), index=index)
    except Exception as exc:  # ASE raises many types; all mean "unreadable"
        raise DataError(f"cannot read as a structure file ({type(exc).__name__}: {exc})", file=str(path)) from exc
    images = images if isinstance(images, list) else [images]
    if not images:
        raise DataError("contains no structures", file=str(path))
    out = []
    for i, atoms in enumerate(images):
        if len(atoms) == 0:
            raise DataError("structure has no atoms", file=str(path), frame=i)
        out.append(_clean(atoms))
    return out


def _clean(atoms):
    """A copy without calculator or label arrays, keeping charges, magnetic moments, constraints and tags."""
    from ase import Atoms

    clean = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    for name in ("initial_charges", "initial_magmoms"):
        if name in atoms.arrays:
            clean.arrays[name] = atoms.arrays[name].copy()
    clean.set_constraint([c.copy() for c in atoms.constraints])
    for key in ("config_type", "weight", "equilibrium", "smiles"):
        if key in atoms.info:
            clean.info[key] = atoms.info[key]
    return clean


def _read_db(path: Path) -> list:
    from ase.db import connect

    try:
        db = connect(str(path), use_lock_file=False)
        rows = list(db.select())
    except Exception as exc:
        raise DataError(f"cannot open as an ASE database ({type(exc).__name__}: {exc})", file=str(path)) from exc
    if not rows:
        raise DataError("contains no structures", file=str(path))
    out = []
    for row in rows:
        atoms = row.toatoms()
        for key in ("config_type", "weight", "equilibrium"):
            if key in row.key_value_pairs:
                atoms.info[key] = row.key_value_pairs[key]
        out.append(_clean(atoms))
    return out
