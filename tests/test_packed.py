"""The packed pool store: bit-for-bit round trip, one-pass statistics, bounded memory, clear errors, ANI-1x/SPICE, `forcefit pack`."""
from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import ase.io
import h5py
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.units import Bohr, Hartree
from conftest import make_frames, pseudo_label

from forcefit.data import Collater, DataError, batch_from_frames, read_frames
from forcefit.data.batch import StreamingGraphDataset
from forcefit.data.campaign_schema import LEVELS, level_keys, new_metadata
from forcefit.data.neighbors import neighbor_list
from forcefit.data.packed import PackedFrames, pack
from forcefit.data.reference_energies import e0s_least_squares

WATER = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])


def tagged_xyz(path):
    """Frames with every tag set somewhere: levels, weights, equilibrium, fixed atoms, a periodic cell, missing labels."""
    images = make_frames(6, config_types=("md", "rattled")) + make_frames(4, seed=1, base=WATER)
    for k, atoms in enumerate(images):
        atoms.info["level"] = "dft" if k % 2 else "xtb"
        atoms.info["weight"] = 0.25 * (k + 1)
    images[0].info["equilibrium"] = True
    images[5].info["temperature"], images[6].info["temperature"] = 300.0, 612.5  # sampled by MD at these (K)
    images[1].set_constraint(FixAtoms(indices=[0, 2]))
    images[2].cell, images[2].pbc = np.diag([9.0, 10.0, 11.0]), True
    images[3].calc = SinglePointCalculator(images[3], energy=images[3].get_potential_energy())  # energy, no forces
    images[4].calc = None  # no labels at all
    ase.io.write(path, images, format="extxyz")
    return path


def campaign_db(path, n=5, labelled=3):
    """A labelling campaign with level 'dft', ``labelled`` of its ``n`` structures labelled."""
    from ase.db import connect

    keys = level_keys("dft")
    db = connect(str(path))
    for k, atoms in enumerate(make_frames(n, seed=2)):
        energy, forces = pseudo_label(atoms)
        label = {keys.has: 1} if k < labelled else {}
        db.write(Atoms(atoms.numbers, atoms.positions), config_type="sampled", **label,
                 data={keys.label: {"energy": energy, "forces": forces}} if k < labelled else {})
    db.metadata = {**new_metadata(), LEVELS: {"dft": {"method": "pair"}}}
    return path


def md17_npz(path, frames=3, atoms=5, seed=3):
    rng = np.random.default_rng(seed)
    np.savez(path, z=np.array([6, 1, 1, 1, 1][:atoms]), R=rng.normal(0, 1.5, (frames, atoms, 3)),
             E=rng.normal(-1000, 1, frames), F=rng.normal(0, 20, (frames, atoms, 3)))
    return path


def assert_same_frame(a, b):
    """Equal bit for bit, dtypes included; tags and provenance equal."""
    for name in ("positions", "numbers", "cell", "pbc", "forces", "fixed"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), name
    assert (a.energy is None) == (b.energy is None)
    if a.energy is not None:
        assert np.float64(a.energy).tobytes() == np.float64(b.energy).tobytes()
    for name in ("config_type", "level", "weight", "equilibrium", "temperature", "source", "index"):
        assert getattr(a, name) == getattr(b, name) and type(getattr(a, name)) is type(getattr(b, name)), name


@pytest.fixture
def sources(tmp_path):
    return [tagged_xyz(tmp_path / "tagged.xyz"), campaign_db(tmp_path / "campaign.db"), md17_npz(tmp_path / "md17.npz")]


def test_pack_then_read_is_bit_for_bit(tmp_path, sources):
    xyz, db, npz = sources
    out = tmp_path / "pool.h5"
    pack([xyz, f"{db}:dft", npz], out)
    expected = read_frames(xyz) + read_frames(db, level="dft") + read_frames(npz)
    pool = PackedFrames(out)
    assert len(pool) == len(expected) == 10 + 3 + 3
    for a, b in zip(expected, pool):
        assert_same_frame(a, b)
    assert pool.sources == [str(xyz), str(db), str(npz)]
    assert set(pool.levels) == {"xtb", "dft", "default"}
    assert pool[1].fixed.tolist() == [True, False, True] + [False] * 6 and pool[0].equilibrium
    assert [f.temperature for f in pool[4:8]] == [None, 300.0, 612.5, None]
    assert pool[-1].source == str(npz) and pool[-1].index == 2  # errors still name the original file and frame
    assert [f.index for f in pool[10:13]] == [1, 2, 3]  # campaign frames keep their row ids
    for a, b in zip(expected, read_frames(out)):  # read_frames reads a pool too
        assert_same_frame(a, b)
    repacked = tmp_path / "again.h5"  # a pool is a source like any other
    pack([out], repacked)
    for a, b in zip(expected, PackedFrames(repacked)):
        assert_same_frame(a, b)


def test_statistics_are_the_ones_computed_directly(tmp_path, sources):
    xyz, db, npz = sources
    stats = pack([xyz, db, npz], tmp_path / "pool.h5", level_of={db: "dft"}, neighbor_cutoff=2.0)
    assert PackedFrames(tmp_path / "pool.h5").stats == stats
    frames = read_frames(xyz) + read_frames(db, level="dft") + read_frames(npz)
    for level in ("xtb", "dft", "default"):
        mine = [f for f in frames if f.level == level]
        species = sorted({int(z) for f in mine if f.energy is not None for z in f.numbers})
        direct = e0s_least_squares(mine, species)
        assert stats["e0s"][level].keys() == direct.keys()
        np.testing.assert_allclose(list(stats["e0s"][level].values()), list(direct.values()), rtol=1e-9, atol=1e-9)
        assert stats["levels"][level] == {"frames": len(mine), "atoms": sum(f.n_atoms for f in mine),
                                          "with_energy": sum(f.energy is not None for f in mine),
                                          "with_forces": sum(f.forces is not None for f in mine)}
    forces = np.concatenate([f.forces for f in frames if f.forces is not None])
    assert stats["force_rms"] == pytest.approx(np.sqrt(np.mean(forces ** 2)), rel=1e-12)
    edges = sum(len(neighbor_list(f.positions, f.cell, f.pbc, 2.0)[0]) for f in frames)
    assert stats["mean_neighbors"] == pytest.approx(edges / sum(f.n_atoms for f in frames))
    assert stats["neighbor_cutoff"] == 2.0 and stats["elements"] == [1, 6, 8]
    assert stats["sources"][str(db)] == {"frames": 3, "atoms": 27} and stats["frames"] == len(frames)


def test_levels_without_energies_get_no_e0s(tmp_path):
    images = make_frames(3)
    for atoms in images:
        atoms.calc = SinglePointCalculator(atoms, forces=atoms.get_forces())
    ase.io.write(tmp_path / "forces_only.xyz", images, format="extxyz")
    stats = pack([tmp_path / "forces_only.xyz"], tmp_path / "pool.h5")
    assert stats["e0s"] == {} and stats["force_rms"] > 0


def test_iterating_a_large_pool_keeps_memory_far_below_its_size(tmp_path):
    frames, atoms = 500, 2000
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "big.npz", z=rng.integers(1, 10, atoms), R=rng.uniform(0, 60, (frames, atoms, 3)),
             E=rng.normal(size=frames), F=rng.normal(size=(frames, atoms, 3)))
    pool = tmp_path / "big.h5"
    pack([tmp_path / "big.npz"], pool)
    size = pool.stat().st_size
    assert size > 45e6
    script = textwrap.dedent(f"""
        import resource
        from forcefit.data.packed import PackedFrames
        pool = PackedFrames({str(pool)!r})
        pool[0]
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        atoms = sum(frame.n_atoms for frame in pool)
        print(atoms, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    seen, growth = map(int, out.stdout.split())
    assert seen == frames * atoms
    assert growth < size / 10, f"iterating grew the memory by {growth / 1e6:.1f} MB for a {size / 1e6:.0f} MB pool"
    picked = PackedFrames(pool)[437]
    assert picked.index == 437 and picked.positions.tobytes() == np.load(tmp_path / "big.npz")["R"][437].tobytes()


def test_pool_feeds_dataloader_workers_and_pickles(tmp_path, ethanol_xyz):
    pack([ethanol_xyz], tmp_path / "pool.h5")
    pool = PackedFrames(tmp_path / "pool.h5")
    copy = pickle.loads(pickle.dumps(pool))  # what a spawned worker gets: the path, reopened on first use
    assert copy.stats == pool.stats and copy.levels == pool.levels
    assert_same_frame(copy[7], pool[7])
    loader = torch.utils.data.DataLoader(StreamingGraphDataset(pool, cutoff=4.0), batch_size=8, num_workers=2,
                                         collate_fn=Collater(torch.float64))
    batches = list(loader)  # two forked workers, each opening the file itself
    assert sum(len(b["num_atoms"]) for b in batches) == len(pool)
    in_memory = batch_from_frames(read_frames(ethanol_xyz)[:8], 4.0, torch.float64)
    for key, value in in_memory.items():
        assert torch.equal(batches[0][key], value), key


def test_a_bad_frame_names_its_file_frame_and_field_and_writes_nothing(tmp_path):
    images = make_frames(4)
    images[2].calc = SinglePointCalculator(images[2], energy=float("nan"), forces=images[2].get_forces())
    ase.io.write(tmp_path / "bad.xyz", images, format="extxyz")
    with pytest.raises(DataError, match=r"bad\.xyz, frame 2, field 'energy'"):
        pack([tmp_path / "bad.xyz"], tmp_path / "pool.h5")
    assert list(tmp_path.glob("*.h5")) == [] and list(tmp_path.glob(".pool*")) == []
    with pytest.raises(DataError, match=r"missing\.xyz: no such file"):
        pack([tmp_path / "missing.xyz"], tmp_path / "pool.h5")


@pytest.fixture
def pool_file(tmp_path, ethanol_xyz):
    pack([ethanol_xyz], tmp_path / "pool.h5")
    return tmp_path / "pool.h5"


def test_corrupt_and_truncated_pools_are_named(tmp_path, pool_file):
    noise = tmp_path / "noise.h5"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    cut = tmp_path / "cut.h5"
    cut.write_bytes(pool_file.read_bytes()[: pool_file.stat().st_size // 2])
    for path in (noise, cut):
        for read in (PackedFrames, read_frames):
            with pytest.raises(DataError, match=rf"{path.name}: not a readable HDF5 file"):
                read(path)


@pytest.mark.parametrize("damage, where", [
    (lambda f: f.__delitem__("frames/energy"), r"field '/frames/energy'.*no dataset '/frames/energy'"),
    (lambda f: f.__delitem__("atoms"), r"field '/atoms'.*no group '/atoms'"),
    (lambda f: f.__delitem__("levels"), r"field '/levels'"),
    (lambda f: f.__delitem__("frames/temperature"), r"no dataset '/frames/temperature'"),
    (lambda f: f["frames/temperature"].__setitem__(4, -300.0), r"field '/frames/temperature'.*frame 4 has temperature -300"),
    (lambda f: f.attrs.__setitem__("format", "something-else"), r"field '/'.*'format' attribute 'something-else'"),
    (lambda f: f.attrs.__delitem__("stats"), r"no attribute 'stats'"),
    (lambda f: f["frames/offsets"].__setitem__(-1, 999), r"field '/atoms/positions'.*rows"),
    (lambda f: f["frames/offsets"].__setitem__(3, -1), r"field '/frames/offsets'.*never decrease"),
    (lambda f: f["frames/level"].__setitem__(5, 7), r"field '/frames/level'.*frame 5 refers to entry 7"),
])
def test_damaged_pools_name_file_and_dataset(pool_file, damage, where):
    with h5py.File(pool_file, "r+") as f:
        damage(f)
    with pytest.raises(DataError, match=rf"pool\.h5.*{where}"):
        pool = PackedFrames(pool_file)
        [frame for frame in pool]


def test_a_version_1_pool_reads_back_without_temperatures(tmp_path):
    """Pools packed before frame temperatures were stored (format version 1) still read, every temperature None."""
    pool_file = tmp_path / "pool.h5"
    pack([tagged_xyz(tmp_path / "tagged.xyz")], pool_file)
    expected = list(PackedFrames(pool_file))
    assert any(f.temperature is not None for f in expected)
    with h5py.File(pool_file, "r+") as f:
        del f["frames/temperature"]
        f.attrs["format_version"] = 1
    old = list(PackedFrames(pool_file))
    assert all(f.temperature is None for f in old) and len(old) == len(expected)
    for a, b in zip(expected, old):
        a.temperature = None
        assert_same_frame(a, b)


def ani1x_file(path):
    """Two formula groups in the ANI-1x layout (Å, Hartree, Hartree/Å), NaN where a value was not computed."""
    rng = np.random.default_rng(4)
    with h5py.File(path, "w") as f:
        for name, numbers, n in (("C1H4", [6, 1, 1, 1, 1], 3), ("H2O1", [1, 1, 8], 2)):
            g = f.create_group(name)
            g["atomic_numbers"] = np.array(numbers, dtype=np.uint8)
            g["coordinates"] = rng.normal(0, 1, (n, len(numbers), 3)).astype(np.float32)
            energy, forces = rng.normal(-40, 1, n), rng.normal(0, 0.05, (n, len(numbers), 3))
            if name == "C1H4":
                energy[1], forces[1] = np.nan, np.nan
            g["wb97x_dz.energy"], g["wb97x_dz.forces"] = energy, forces
            g["ccsd(t)_cbs.energy"] = np.where(np.arange(n) == 2, -40.5, np.nan)
    return path


def spice_file(path):
    """One molecule in the SPICE layout (Bohr, Hartree, Hartree/Bohr gradient)."""
    rng = np.random.default_rng(5)
    with h5py.File(path, "w") as f:
        g = f.create_group("water")
        g["atomic_numbers"] = np.array([8, 1, 1], dtype=np.int16)
        g["conformations"] = rng.normal(0, 2, (2, 3, 3))
        g["dft_total_energy"] = np.array([-76.4, -76.3])
        g["dft_total_gradient"] = rng.normal(0, 0.01, (2, 3, 3))
        g["subset"] = np.array([b"SPICE Water Clusters v1.0"])
    return path


def test_ani1x_layout_in_ev_and_angstrom(tmp_path):
    path = ani1x_file(tmp_path / "ani1x.h5")
    frames = read_frames(path)
    assert [f.index for f in frames] == [0, 2, 3, 4]  # conformation 1 has no labels at this level
    with h5py.File(path) as f:
        g = f["C1H4"]
        np.testing.assert_array_equal(frames[1].positions, g["coordinates"][2].astype(np.float64))
        assert frames[1].energy == pytest.approx(g["wb97x_dz.energy"][2] * 27.211386, rel=1e-7)
        np.testing.assert_allclose(frames[1].forces, g["wb97x_dz.forces"][2] * Hartree)
    assert frames[0].numbers.tolist() == [6, 1, 1, 1, 1] and {f.level for f in frames} == {"wb97x_dz"}
    (cc,) = read_frames(path, level="ccsd(t)_cbs")
    assert cc.index == 2 and cc.energy == pytest.approx(-40.5 * Hartree) and cc.forces is None and cc.level == "ccsd(t)_cbs"
    with pytest.raises(DataError, match=r"ani1x\.h5, field '/C1H4'.*levels in this group: ccsd\(t\)_cbs, wb97x_dz"):
        read_frames(path, level="b3lyp")
    pool = tmp_path / "pool.h5"
    pack([f"{path}:ccsd(t)_cbs", path], pool)
    assert [f.level for f in PackedFrames(pool)] == ["ccsd(t)_cbs"] + ["wb97x_dz"] * 4


def test_spice_layout_converts_bohr_and_gradients(tmp_path):
    path = spice_file(tmp_path / "spice.hdf5")
    frames = read_frames(path)
    with h5py.File(path) as f:
        g = f["water"]
        np.testing.assert_allclose(frames[1].positions, g["conformations"][1] * 0.52917721)
        assert frames[1].energy == pytest.approx(-76.3 * 27.211386)
        np.testing.assert_allclose(frames[1].forces, -g["dft_total_gradient"][1] * Hartree / Bohr)
    assert frames[0].config_type == "SPICE Water Clusters v1.0" and frames[0].level == "spice"
    assert read_frames(path, level="wb97m")[0].level == "wb97m"


def test_hdf5_files_in_no_known_layout_are_named(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["mol/xyz"] = np.zeros((1, 3, 3))
    with pytest.raises(DataError, match=r"other\.h5, field '/mol': not a forcefit pool.*neither 'coordinates'"):
        read_frames(path)
    with h5py.File(path, "w") as f:
        f["C1/atomic_numbers"] = [6, 1]
        f["C1/coordinates"] = np.zeros((1, 3, 3))
        f["C1/wb97x_dz.energy"] = [0.0]
    with pytest.raises(DataError, match=r"field '/C1/coordinates': shape \(1, 3, 3\), expected \(frames, 2, 3\)"):
        read_frames(path)


def test_pack_command_end_to_end(tmp_path, sources):
    from typer.testing import CliRunner

    from forcefit.cli import app

    xyz, db, npz = sources
    out = tmp_path / "pool.h5"
    ani = ani1x_file(tmp_path / "ani1x.h5")
    result = CliRunner().invoke(app, ["pack", str(ani), str(xyz), f"{db}:dft", str(npz), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "20 frames" in result.output and "from 4 source(s)" in result.output and "20/20" in result.output
    assert "level dft: 8 frames (8 with energy, 7 with forces)" in result.output and "E0s (eV) H " in result.output
    assert "level wb97x_dz: 4 frames" in result.output and "force RMS" in result.output
    assert len(PackedFrames(out)) == 20
    result = CliRunner().invoke(app, ["pack", str(db), "--out", str(tmp_path / "x.h5"), "--level", "ccsd"])
    assert result.exit_code == 2 and "no level 'ccsd' in this campaign" in result.output
