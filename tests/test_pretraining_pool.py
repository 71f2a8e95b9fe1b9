"""The pretraining pool: the shipped SMILES list, and build_pool's tags, resume, failures and settings check."""
from __future__ import annotations

import json

import numpy as np
import pytest

from forcefit.data import DataError
from forcefit.data import pretraining_pool
from forcefit.data.pretraining_pool import LEDGER, build_pool, smiles_list

EXCLUDED = ["CCO", "CC(=O)CC(C)=O", "CC(O)=CC(C)=O"]  # ethanol; acetylacetone, keto and enol
TINY = dict(conformers=1, temperatures=(300,), md_frames_per_temperature=4, md_every=5, progress=False)


def test_smiles_list_is_valid_unique_chno_and_excludes_the_benchmark_molecules():
    Chem = pytest.importorskip("rdkit.Chem")
    from rdkit.Chem import Descriptors
    from rdkit.Chem.MolStandardize import rdMolStandardize

    tautomer = rdMolStandardize.TautomerEnumerator()

    def skeleton(mol):  # one spelling for every tautomer and stereoisomer of a molecule
        return Chem.MolToSmiles(tautomer.Canonicalize(mol), isomericSmiles=False)

    excluded = {skeleton(Chem.MolFromSmiles(s)) for s in EXCLUDED}
    smiles = smiles_list()
    assert len(smiles) >= 250
    assert {"C#C", "CC#N", "N#N"} <= set(smiles)  # a triple bond is not a comment
    canonical = set()
    for s in smiles:
        mol = Chem.MolFromSmiles(s)
        assert mol is not None, s
        canonical.add(Chem.MolToSmiles(mol))
        assert {a.GetSymbol() for a in mol.GetAtoms()} <= {"C", "N", "O"}, s
        assert 2 <= mol.GetNumHeavyAtoms() <= 10, s
        assert Chem.GetFormalCharge(mol) == 0 and Descriptors.NumRadicalElectrons(mol) == 0, s
        assert skeleton(mol) not in excluded, s
    assert len(canonical) == len(smiles)


def test_build_pool_tags_frames_skips_a_failing_molecule_and_resumes_without_resampling(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tblite.interface")
    pytest.importorskip("rdkit")
    from forcefit.data.packed import PackedFrames

    calls = []
    sample = pretraining_pool.sample_molecule
    monkeypatch.setattr(pretraining_pool, "sample_molecule", lambda s, settings: calls.append(s) or sample(s, settings))

    out = tmp_path / "pool"
    path = build_pool(out, smiles=["C", "CC", "C1CC"], **TINY)
    assert "warning: skipped molecule 'C1CC'" in capsys.readouterr().err
    frames = list(PackedFrames(path))
    eq = [f for f in frames if f.equilibrium]
    md = [f for f in frames if not f.equilibrium]
    assert len(eq) == 2 and {f.config_type for f in eq} == {"minimum"}
    assert len(md) == 2 * 4 and {f.config_type for f in md} == {"md_300K"}
    assert all(f.forces is not None and np.isfinite(f.forces).all() and f.level == "gfn2" for f in md)
    assert {f.temperature for f in md} == {300.0} and {f.temperature for f in eq} == {None}  # score matching's k_B·T
    summary = json.loads((out / "pool.json").read_text())
    assert summary["molecules"]["done"] == 2
    assert [f["smiles"] for f in summary["molecules"]["failed"]] == ["C1CC"]
    assert summary["frames"] == {"pool": 10, "equilibrium": 2, "md": 8, "label_failures": 0}
    assert summary["cpu_seconds"]["sampling"] > 0 and summary["cpu_seconds"]["labelling"] > 0

    calls.clear()  # a rerun samples only the new molecule; done and failed ones are skipped
    build_pool(out, smiles=["C", "CC", "C1CC", "O=C=O"], **TINY)
    assert calls == ["O=C=O"]
    assert len(PackedFrames(path)) == 15
    assert json.loads((out / "pool.json").read_text())["molecules"]["done"] == 3

    with pytest.raises(DataError, match="other settings .*conformers: 1 -> 2"):
        build_pool(out, smiles=["C"], **{**TINY, "conformers": 2})


def test_ledger_drops_a_line_cut_short_and_refuses_garbage(tmp_path):
    settings = {"method": "gfn2", "seed": 0}
    path = tmp_path / LEDGER
    path.write_text(json.dumps({"settings": settings}) + "\n" + json.dumps({"smiles": "C", "status": "done"}) + '\n{"smil')
    ledger = pretraining_pool._Ledger(path, settings)
    assert list(ledger.records) == ["C"]
    assert path.read_text().endswith('"done"}\n')
    path.write_text(json.dumps({"settings": settings}) + "\nnot json\n")
    with pytest.raises(DataError, match="line 2 is not JSON"):
        pretraining_pool._Ledger(path, settings)


def test_sampling_in_worker_processes_gives_the_same_frames(tmp_path):
    pytest.importorskip("tblite.interface")
    pytest.importorskip("rdkit")
    from forcefit.data.packed import PackedFrames

    def positions(out):
        return sorted((f.config_type, tuple(np.round(f.positions.ravel(), 6))) for f in PackedFrames(out))

    one = build_pool(tmp_path / "one", smiles=["C", "N#N"], workers=1, **TINY)
    two = build_pool(tmp_path / "two", smiles=["C", "N#N"], workers=2, **TINY)
    assert positions(one) == positions(two)
