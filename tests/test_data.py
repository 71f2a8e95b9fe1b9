"""Readers, tags, splits, reference energies and every bad-input message (file, frame, field)."""
from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
import ase.io
from ase.db import connect

from conftest import ETHANOL, make_frames
from forcefit.data import DataError, batch_from_frames, read_frames, resolve_e0s, split_indices, validate_frames
from forcefit.data.readers import KCAL_PER_MOL_IN_EV


def test_extxyz_labels_tags_and_constraints(tmp_path):
    images = make_frames(3, config_types=("md", "opt"))
    images[1].info["weight"] = 2.5
    images[1].info["level"] = "gfn2"
    images[2].set_constraint(FixAtoms(indices=[0, 3]))
    path = tmp_path / "a.xyz"
    ase.io.write(path, images, format="extxyz")
    frames = read_frames(path)
    assert [f.config_type for f in frames] == ["md", "opt", "md"]
    assert frames[1].weight == 2.5 and frames[1].level == "gfn2"
    np.testing.assert_allclose(frames[0].forces, images[0].get_forces(), rtol=1e-6, atol=1e-7)
    assert frames[0].energy == pytest.approx(images[0].get_potential_energy())
    assert frames[2].fixed.tolist() == [True, False, False, True] + [False] * 5


def test_custom_keys_and_ase_db(tmp_path):
    images = make_frames(2)
    for a in images:
        a.info["REF_energy"] = a.get_potential_energy() + 1
        a.arrays["REF_forces"] = a.get_forces() * 2
    path = tmp_path / "ref.xyz"
    ase.io.write(path, images, format="extxyz")
    frames = read_frames(path, energy_key="REF_energy", forces_key="REF_forces")
    assert frames[0].energy == pytest.approx(images[0].get_potential_energy() + 1)
    np.testing.assert_allclose(frames[0].forces, images[0].get_forces() * 2, rtol=1e-6, atol=1e-7)

    db_path = tmp_path / "x.db"
    with connect(db_path) as db:
        for a in make_frames(2):
            db.write(a, config_type="dbtype")
    frames = read_frames(db_path)
    assert len(frames) == 2 and frames[0].config_type == "dbtype" and frames[0].forces.shape == (9, 3)

    # custom keys reach ASE databases too: key-value pairs for the energy, row data for the forces
    custom = tmp_path / "custom.db"
    with connect(custom) as db:
        for a in images:
            db.write(a, REF_energy=a.info["REF_energy"], data={"REF_forces": a.arrays["REF_forces"]})
    frames = read_frames(custom, energy_key="REF_energy", forces_key="REF_forces")
    assert frames[1].energy == pytest.approx(images[1].get_potential_energy() + 1)
    np.testing.assert_allclose(frames[1].forces, images[1].get_forces() * 2, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("keys", ["rmd17", "md17"])
def test_md17_npz_converts_kcal_per_mol(tmp_path, keys):
    n = 3
    z = ETHANOL.numbers
    coords = np.stack([ETHANOL.positions + 0.01 * k for k in range(n)])
    energies = np.array([-97000.0, -97001.0, -97002.0])
    forces = np.ones((n, 9, 3))
    names = ("nuclear_charges", "coords", "energies", "forces") if keys == "rmd17" else ("z", "R", "E", "F")
    path = tmp_path / "md17.npz"
    np.savez(path, **dict(zip(names, (z, coords, energies[:, None] if keys == "md17" else energies, forces))))
    frames = read_frames(path)
    assert len(frames) == n
    assert frames[1].energy == pytest.approx(-97001.0 * KCAL_PER_MOL_IN_EV)
    np.testing.assert_allclose(frames[0].forces, KCAL_PER_MOL_IN_EV)


def test_seeded_splits():
    a = split_indices(100, [0.1, 20, None], seed=3)
    b = split_indices(100, [0.1, 20, None], seed=3)
    assert [len(x) for x in a] == [10, 20, 70]
    assert all((x == y).all() for x, y in zip(a, b))
    assert len(set(np.concatenate(a).tolist())) == 100
    assert not all((x == y).all() for x, y in zip(a, split_indices(100, [0.1, 20, None], seed=4)))
    with pytest.raises(DataError, match="only 100"):
        split_indices(100, [80, 30])


def test_reference_energies(tmp_path):
    iso = [Atoms("H"), Atoms("C"), Atoms("O")]
    for a, e in zip(iso, (-13.6, -1029.0, -2041.0)):
        a.calc = SinglePointCalculator(a, energy=e)
    path = tmp_path / "iso.xyz"
    ase.io.write(path, iso, format="extxyz")
    assert resolve_e0s(str(path), [], [1, 6, 8]) == {1: -13.6, 6: -1029.0, 8: -2041.0}
    assert resolve_e0s({"H": 1.0, "C": 2.0, "8": 3.0}, [], [1, 6, 8]) == {1: 1.0, 6: 2.0, 8: 3.0}
    # least squares recovers exact per-element energies from varied compositions
    frames = read_frames(path)
    true = {1: -1.0, 6: -5.0, 8: -7.0}
    mols = []
    for formula in ["H2", "CH4", "H2O", "CO", "C2H6O"]:
        a = Atoms(formula, positions=np.arange(3 * len(Atoms(formula))).reshape(-1, 3) * 1.0)
        a.calc = SinglePointCalculator(a, energy=sum(true[z] for z in a.numbers))
        mols.append(a)
    ase.io.write(tmp_path / "m.xyz", mols, format="extxyz")
    fit = resolve_e0s("least_squares", read_frames(tmp_path / "m.xyz"), [1, 6, 8])
    assert fit == pytest.approx(true)
    with pytest.raises(DataError, match="missing for O"):
        resolve_e0s({"H": 1.0, "C": 2.0}, frames, [1, 6, 8])


def test_batching_offsets_edges():
    frames = read_frames_from_atoms(make_frames(3))
    batch = batch_from_frames(frames, 3.0)
    assert batch["positions"].shape == (27, 3) and batch["ptr"].tolist() == [0, 9, 18, 27]
    i, j = batch["edge_index"]
    assert (batch["batch"][i] == batch["batch"][j]).all()


def read_frames_from_atoms(images):
    from forcefit.data import frame_from_atoms

    return [frame_from_atoms(a, "mem", k) for k, a in enumerate(images)]


# ---------- bad input: one clear message naming file, frame and field ----------

def _write(tmp_path, images, name="bad.xyz"):
    path = tmp_path / name
    ase.io.write(path, images, format="extxyz")
    return path


def test_unreadable_file(tmp_path):
    path = tmp_path / "garbage.xyz"
    path.write_text("this is not\nan xyz file at all\n")
    with pytest.raises(DataError, match=r"garbage\.xyz.*cannot read"):
        read_frames(path)
    with pytest.raises(DataError, match="no such file"):
        read_frames(tmp_path / "missing.xyz")


def test_missing_energy_and_forces(tmp_path):
    images = make_frames(3)
    images[1].calc = None
    path = _write(tmp_path, images)
    frames = read_frames(path)
    with pytest.raises(DataError, match=r"bad\.xyz, frame 1, field 'energy'"):
        validate_frames(frames, "train")
    images = make_frames(3)
    images[2].calc = SinglePointCalculator(images[2], energy=1.0)
    frames = read_frames(_write(tmp_path, images))
    with pytest.raises(DataError, match=r"frame 2, field 'forces'"):
        validate_frames(frames, "train")
    validate_frames(frames, "train", need_forces=False)


@pytest.mark.parametrize("field", ["energy", "forces", "positions"])
def test_nan_and_inf(tmp_path, field):
    images = make_frames(3)
    a = images[1]
    e, f = a.get_potential_energy(), a.get_forces().copy()
    if field == "energy":
        e = float("nan")
    elif field == "forces":
        f[4, 1] = float("inf")
    else:
        a.positions[2, 0] = float("nan")
    a.calc = SinglePointCalculator(a, energy=e, forces=f)
    with pytest.raises(DataError, match=rf"bad\.xyz, frame 1, field '{field}'.*(NaN|nan|inf)"):
        read_frames(_write(tmp_path, images))


def test_forces_of_wrong_shape(tmp_path):
    path = tmp_path / "shape.xyz"
    lines = ["2", 'Properties=species:S:1:pos:R:3 energy=1.0 forces="1 2 3"', "H 0 0 0", "H 0 0 0.8"]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"shape\.xyz, frame 0, field 'forces'.*shape"):
        read_frames(path)


def test_unknown_element(tmp_path):
    images = make_frames(2)
    images[1].numbers[3] = 7  # N
    frames = read_frames(_write(tmp_path, images))
    with pytest.raises(DataError, match=r"frame 1, field 'numbers'.*element\(s\) N"):
        validate_frames(frames, "test", species=[1, 6, 8])


def test_atoms_too_close(tmp_path):
    images = make_frames(2)
    images[1].positions[4] = images[1].positions[3] + [0.05, 0, 0]
    frames = read_frames(_write(tmp_path, images))
    with pytest.raises(DataError, match=r"frame 1, field 'positions'.*atoms 3 and 4.*0\.05"):
        validate_frames(frames, "train")


def test_empty_split():
    with pytest.raises(DataError, match="valid split is empty"):
        validate_frames([], "valid")


def test_md17_npz_with_fewer_labels_than_frames(tmp_path):
    path = tmp_path / "short.npz"
    coords = np.stack([ETHANOL.positions] * 3)
    np.savez(path, nuclear_charges=ETHANOL.numbers, coords=coords, energies=np.zeros(2), forces=np.zeros((3, 9, 3)))
    with pytest.raises(DataError, match=r"short.npz.*field 'energies'.*2 entries for 3 frames"):
        read_frames(path)


@pytest.mark.parametrize("key, field", [("REF_energy", "REF_energy"), ("weight", "weight")])
def test_non_numeric_label_names_file_frame_and_field(tmp_path, key, field):
    images = make_frames(2)
    for a in images:
        a.info["REF_energy"] = 1.0
    images[1].info[key] = "high"
    path = tmp_path / "tags.xyz"
    ase.io.write(path, images, format="extxyz")
    with pytest.raises(DataError, match=rf"tags.xyz, frame 1, field '{field}': not numeric"):
        read_frames(path, energy_key="REF_energy")
