"""Labelling engine: reference calculators, campaign store, resume after SIGKILL, failures, pools, CLI."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import typer
from ase import Atoms
from ase.build import molecule
from typer.testing import CliRunner

from forcefit.data import DataError, read_frames
from forcefit.labeling import Campaign, label, make_method, rattle, sample_md, sample_normal_modes, select
from forcefit.labeling.calculators import Structure
from forcefit.labeling.cli import register

HERE = Path(__file__).resolve().parent
HELPERS = "labeling_helpers"
EXTRA = {"tblite": "label", "pyscf": "label", "rdkit": "label", "distributed": "dask"}


def needs(*modules):
    """Skip, saying which extra to install, where an optional package of the label or dask extra is missing."""
    for module in modules:
        pytest.importorskip(module, reason=f"needs {module}: pip install forcefit[{EXTRA[module]}]")


def ethanols(n, seed=0, stdev=0.04):
    return rattle(molecule("CH3CH2OH"), stdev=stdev, n=n, seed=seed, config_type="md")


def cli():
    app = typer.Typer()
    register(app)
    return app


def run_cli(*args):
    result = CliRunner().invoke(cli(), [str(a) for a in args])
    return result, result.output


# ---------------------------------------------------------------- reference methods
def test_gfn2_labels_match_tblite_called_directly(tmp_path):
    needs("tblite")
    from tblite.ase import TBLite

    frames = ethanols(4)
    camp = Campaign(tmp_path / "c.db")
    camp.add(frames)
    report = label(camp, "gfn2", progress=False)
    assert report.labelled == 4 and report.failed == 0
    got = camp.frames("gfn2")
    row = camp.db.get(id=got[0].index)
    for frame, atoms in zip(got, frames):
        ref = atoms.copy()
        ref.calc = TBLite(method="GFN2-xTB", verbosity=0)
        assert frame.energy == pytest.approx(ref.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(frame.forces, ref.get_forces(), atol=1e-9)
    ref = frames[0].copy()
    ref.calc = TBLite(method="GFN2-xTB", verbosity=0)
    np.testing.assert_allclose(row.data["label.gfn2"]["charges"], ref.get_charges(), atol=1e-9)
    np.testing.assert_allclose(row.data["label.gfn2"]["dipole"], ref.get_dipole_moment(), atol=1e-9)
    assert row.data["label.gfn2"]["cpu_seconds"] > 0 and row.get("cost_gfn2") > 0
    assert camp.levels["gfn2"]["method"] == "GFN2-xTB"


def test_xtb_results_read_through_the_c_interface_equal_the_python_getters(monkeypatch):
    needs("tblite")
    from ase.units import Bohr
    from tblite.interface import Calculator

    from forcefit.labeling import xtb

    atoms = ethanols(1)[0]
    calc = Calculator("GFN2-xTB", atoms.numbers, atoms.positions / Bohr)
    calc.set("verbosity", 0)
    res = calc.singlepoint()
    fast = xtb._xtb_results(res, len(atoms))
    assert xtb._TBLITE_C  # the C path is the one in use here
    expected = [res.get("energy"), res.get("gradient"), res.get("charges"), res.get("dipole")]
    assert fast[0] == expected[0]
    for got, want in zip(fast[1:], expected[1:]):
        np.testing.assert_array_equal(got, want)
    monkeypatch.setattr(xtb, "_TBLITE_C", False)  # the fallback: tblite's own getters
    slow = xtb._xtb_results(res, len(atoms))
    assert float(slow[0]) == fast[0] and all(np.array_equal(a, b) for a, b in zip(slow[1:], fast[1:]))


def test_tiny_dft_matches_pyscf_called_directly(tmp_path):
    needs("pyscf")
    from pyscf import dft, gto

    h2 = Atoms("H2", positions=[[0, 0, 0], [0.05, 0.02, 0.80]])  # stretched H2: non-zero forces
    camp = Campaign(tmp_path / "c.db")
    camp.add([h2])
    report = label(camp, "dft", xc="PBE", basis="sto-3g", progress=False)
    assert report.labelled == 1, report.errors
    frame = camp.frames("dft")[0]

    mol = gto.M(atom=[(int(z), tuple(p)) for z, p in zip(h2.numbers, h2.positions)], basis="sto-3g", unit="Angstrom", verbose=0)
    mf = dft.RKS(mol)
    mf.xc, mf.grids.level, mf.conv_tol = "PBE", 3, 1e-9
    mf = mf.density_fit()
    e = mf.kernel() * 27.211386024367243
    f = -mf.nuc_grad_method().kernel() * 27.211386024367243 / 0.5291772105638411
    assert frame.energy == pytest.approx(e, abs=1e-6)
    np.testing.assert_allclose(frame.forces, f, atol=1e-5)
    settings = camp.levels["dft"]
    assert settings["xc"] == "PBE" and settings["basis"] == "sto-3g" and settings["density_fit"] is True
    # the safer retry converges to the same state
    safer = make_method("dft", basis="sto-3g").compute(Structure.from_atoms(h2), safer=True)
    np.testing.assert_allclose(safer["forces"], f, atol=1e-3)


def test_method_settings_are_checked_before_any_work(tmp_path, monkeypatch):
    needs("pyscf")
    for method, settings, field in [("nope", {}, "method"), ("dft", {"xc": "NOTAFUNCTIONAL"}, "xc"),
                                    ("dft", {"basis": "no-such-basis"}, "basis"), ("gfn2", {"xc": "PBE"}, "xc"),
                                    ("nomodule_xyz:f", {}, "calculator"), ("os:no_such_factory", {}, "calculator")]:
        with pytest.raises(DataError) as err:
            make_method(method, **settings)
        assert err.value.field == field
    monkeypatch.setitem(sys.modules, "dftd3", None)  # as if the optional package were absent
    monkeypatch.setitem(sys.modules, "dftd3.interface", None)
    with pytest.raises(DataError, match="needs the 'dftd3' package"):
        make_method("dft", dispersion="d3bj")


def test_what_a_worker_imports_stays_free_of_torch():
    """Worker processes import the task code and the method modules; none may pull in torch (seconds per worker)."""
    code = ("import sys\n"
            "from forcefit.labeling import _worker, tasks, calculators, xtb, dft, ase_calculator\n"
            "from forcefit.labeling.ase_calculator import resolve_factory\n"
            "resolve_factory('labeling_helpers:pair')\n"
            "print(sorted(m for m in ('torch', 'forcefit.data') if m in sys.modules))\n")
    env = dict(os.environ, PYTHONPATH=f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# ---------------------------------------------------------------- durability
def _labelled(path, level):
    from ase.db import connect

    db = connect(str(path), use_lock_file=False)
    return {row.id: row.data[f"label.{level}"]["energy"] for row in db.select(f"has_{level}=1")}


def test_resume_after_sigkill_loses_nothing_and_duplicates_nothing(tmp_path):
    path, log = tmp_path / "c.db", tmp_path / "calls.log"
    frames = ethanols(16, seed=1)
    Campaign(path).add(frames)
    env = dict(os.environ, PYTHONPATH=f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", FORCEFIT_TEST_LOG=str(log))
    proc = subprocess.Popen([sys.executable, "-m", "forcefit.labeling", "label", str(path), "--calculator", f"{HELPERS}:slow",
                             "--level", "ref", "--no-progress"], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        if len(_labelled(path, "ref")) >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _labelled(path, "ref")
    assert 4 <= len(before) < 16
    calls_before = log.read_text().split()
    worker_pid = int(calls_before[0])
    for _ in range(100):  # the orphaned worker notices and exits
        if not Path(f"/proc/{worker_pid}").exists() or "zombie" in Path(f"/proc/{worker_pid}/status").read_text():
            break
        time.sleep(0.05)
    else:
        pytest.fail("worker process outlived its killed coordinator")

    os.environ["FORCEFIT_TEST_LOG"] = str(log)
    try:
        report = label(str(path), f"{HELPERS}:slow", level="ref", progress=False)
    finally:
        del os.environ["FORCEFIT_TEST_LOG"]
    after = _labelled(path, "ref")
    assert len(after) == 16 and len(Campaign(path)) == 16
    assert {k: after[k] for k in before} == before  # finished labels kept as they were
    assert report.labelled == 16 - len(before)  # only the rest was labelled
    new_calls = log.read_text().split("\n")[len(calls_before) // 2:]
    xs_before = {f"{Campaign(path).db.get(id=i).positions[0, 0]:.8f}" for i in before}
    assert not xs_before & {line.split()[1] for line in new_calls if line}  # nothing finished was relabelled
    assert len({row.get("structure_hash") for row in Campaign(path).db.select()}) == 16
    assert report.remaining == 0


_KILL_IN_THIRD_BATCH = """
import os, signal, sys
from forcefit.labeling import runner
from forcefit.labeling.campaign import Campaign

runner.COMMIT_LABELS, runner.COMMIT_SECONDS = 4, 1e9  # commit every 4 labels, never on time
real, calls = Campaign.write_results, []

def write_then_die(self, level, results, commit=True):
    calls.append(len(results))
    if len(calls) == 3:  # the third batch: written inside its transaction, killed before the commit
        real(self, level, results, commit=False)
        os.kill(os.getpid(), signal.SIGKILL)
    real(self, level, results, commit)

Campaign.write_results = write_then_die
runner.label(sys.argv[1], "gfn2", progress=False)
"""


def test_kill_between_batch_commits_loses_only_the_uncommitted_batch(tmp_path):
    needs("tblite")
    from ase.db import connect

    path, script = tmp_path / "c.db", tmp_path / "kill.py"
    frames = ethanols(16, seed=4)
    Campaign(path).add(frames)
    script.write_text(_KILL_IN_THIRD_BATCH)
    proc = subprocess.run([sys.executable, str(script), str(path)], cwd=tmp_path, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    before = _labelled(path, "gfn2")
    assert sorted(before) == list(range(1, 9))  # two committed batches of 4; the third (rows 9-12) is gone whole
    db = connect(str(path), use_lock_file=False)
    assert db.count("has_gfn2=1") == 8 and db.count("cost_gfn2>0") == 8  # ase's key index agrees with the rows
    stamps = {row.id: row.data["label.gfn2"]["time"] for row in db.select("has_gfn2=1")}

    report = label(str(path), "gfn2", progress=False)
    assert report.labelled == 8 and report.remaining == 0  # only the lost batch and the never-started rows
    after = _labelled(path, "gfn2")
    assert len(after) == 16 and {k: after[k] for k in before} == before
    db = connect(str(path), use_lock_file=False)
    assert {i: db.get(id=i).data["label.gfn2"]["time"] for i in stamps} == stamps  # committed labels not relabelled
    assert db.count() == 16 and len({row.structure_hash for row in db.select()}) == 16 and db.count("has_gfn2=1") == 16

    clean = Campaign(tmp_path / "clean.db")  # an uninterrupted run gives the same labels, bit for bit
    clean.add(frames)
    label(clean, "gfn2", progress=False)
    ref = {f.index: f for f in clean.frames("gfn2")}
    for f in read_frames(path, level="gfn2"):
        assert f.energy == ref[f.index].energy
        np.testing.assert_array_equal(f.forces, ref[f.index].forces)


def test_interrupted_run_commits_the_labels_it_finished(tmp_path, monkeypatch):
    needs("tblite")
    from forcefit.labeling import executors, runner

    monkeypatch.setattr(runner, "COMMIT_LABELS", 1000)
    monkeypatch.setattr(runner, "COMMIT_SECONDS", 1e9)  # nothing would be committed before the end
    real, calls = executors.run_task, []

    def interrupted(method, task, *args, **kwargs):
        calls.append(task.row_id)
        if len(calls) == 6:
            raise KeyboardInterrupt  # Ctrl-C during the sixth label
        return real(method, task, *args, **kwargs)

    monkeypatch.setattr(executors, "run_task", interrupted)
    path = tmp_path / "c.db"
    camp = Campaign(path)
    camp.add(ethanols(10, seed=6))
    with pytest.raises(KeyboardInterrupt):
        label(camp, "gfn2", progress=False)
    assert sorted(_labelled(path, "gfn2")) == [1, 2, 3, 4, 5]  # committed on the way out
    monkeypatch.setattr(executors, "run_task", real)
    assert label(camp, "gfn2", progress=False).labelled == 5


def test_batched_writes_store_exactly_what_ase_db_update_stores(tmp_path, monkeypatch):
    """The SQLite fast path (one query and one statement per table per batch) against ase.db's own update."""
    import sqlite3
    from types import SimpleNamespace

    from ase.db import connect

    from forcefit.labeling import results as results_module
    from forcefit.labeling.campaign import Result

    monkeypatch.setattr(results_module, "time", SimpleNamespace(time=lambda: 1234.5))  # same stamps in both
    rng = np.random.default_rng(0)
    labels = {i: {"energy": float(rng.normal()), "forces": rng.normal(size=(9, 3)), "charges": rng.normal(size=9),
                  "dipole": rng.normal(size=3)} for i in range(1, 6)}
    batches = [
        [Result(1, None, "SCF did not converge", 1, False, False, 0.5, 0.0, "h"), Result(2, labels[2], None, 1, False, False, 0.1, 0.2, "h"),
         Result(3, None, "overlapping atoms", 1, False, True, 0.0, 0.0, "h"), Result(5, None, "SCF did not converge", 1, False, False, 0.1, 0.0, "h")],
        # row 5's failed_L changes (its index entries are replaced); row 4 fails and succeeds within one batch
        [Result(1, labels[1], None, 2, True, False, 0.3, 0.3, "h"), Result(4, None, "SCF did not converge", 1, False, False, 0.4, 0.0, "h"),
         Result(4, labels[4], None, 2, True, False, 0.2, 0.2, "h"), Result(5, None, "SCF did not converge", 2, True, True, 0.1, 0.0, "h")],
    ]
    camps = {}
    for name in ("fast", "generic"):
        camp = Campaign(tmp_path / f"{name}.db")
        camp.add(ethanols(5, seed=7), source="test")
        if name == "generic":
            camp._sqlite = False  # row by row through db.get / db.update, as on PostgreSQL
        for batch in batches:
            camp.write_results("lvl", batch)
        camps[name] = camp
    rows = {name: {r.id: r for r in connect(str(tmp_path / f"{name}.db"), use_lock_file=False).select()} for name in camps}
    assert rows["fast"].keys() == rows["generic"].keys()
    for i, a in rows["fast"].items():
        b = rows["generic"][i]
        assert a.key_value_pairs == b.key_value_pairs
        assert a.data.keys() == b.data.keys()
        for key in a.data:
            x, y = a.data[key], b.data[key]
            if isinstance(x, dict):
                assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x), key
            else:
                assert x == y, key
    for table in ("keys", "text_key_values", "number_key_values"):
        got = {name: sorted(sqlite3.connect(tmp_path / f"{name}.db").execute(f"SELECT * FROM {table}").fetchall()) for name in camps}
        assert got["fast"] == got["generic"], table
    fast = rows["fast"]
    assert fast[1]["failed_lvl"] == 1 and fast[1]["has_lvl"] == 1 and fast[3]["failed_lvl"] == 2 and "has_lvl" not in fast[3]
    assert [r["attempt"] for r in fast[4].data["failures.lvl"]] == [1] and fast[4].data["label.lvl"]["safer"] is True
    np.testing.assert_array_equal(fast[2].data["label.lvl"]["forces"], labels[2]["forces"])
    db = connect(str(tmp_path / "fast.db"), use_lock_file=False)
    assert sorted(r.id for r in db.select("has_lvl=1")) == [1, 2, 4] and [r.id for r in db.select("failed_lvl=2")] == [3, 5]
    assert db.count("failed_lvl=1") == 2  # rows 1 and 4: row 5's old value left no stale index entry


def test_data_encoding_is_byte_for_byte_ase_db(tmp_path):
    from ase.db.core import bytes_to_object, object_to_bytes

    from forcefit.labeling.sqlite_writer import data_to_bytes as _data_to_bytes

    rng = np.random.default_rng(1)
    samples = [
        {}, {"source": "x.xyz", "sampler": "md"},
        {"label.gfn2": {"energy": -311.5, "forces": rng.normal(size=(9, 3)), "charges": rng.normal(size=9),
                        "dipole": rng.normal(size=3), "cpu_seconds": 1e-3, "attempt": 1, "safer": False, "host": "h",
                        "time": 1.7e9},
         "failures.gfn2": [{"attempt": 1, "error": "SCF \"failed\"\n", "final": False}], "smiles": "CCO"},
        {"a": np.arange(5), "b": (1, 2.5, None), "c": np.zeros((0, 3)), "d": np.float64(2.5), "e": np.array(3.0),
         "f": np.ones(3, dtype=np.float32), "g": np.array([True, False]), "h": {"x": {"y": [np.arange(2)]}},
         "i": float("nan"), "j": np.array([np.inf, -np.inf]), "k": "é☃"},
        {"complex": 1 + 2j},  # beyond plain data: ase's own encoder
    ]
    for obj in samples:
        encoded = _data_to_bytes(obj)
        assert encoded == object_to_bytes(obj)
        assert bytes_to_object(encoded).keys() == obj.keys()
    for bad in ({"n": np.int64(3)}, {"o": np.array([None], dtype=object)}):  # what ase refuses, refused the same way
        with pytest.raises((AttributeError, AssertionError)):
            object_to_bytes(bad)
        with pytest.raises((AttributeError, AssertionError)):
            _data_to_bytes(bad)


def test_work_list_is_the_same_through_sql_json_and_python_decoding(tmp_path):
    camp = Campaign(tmp_path / "c.db")
    camp.add(ethanols(6, seed=8))
    label(camp, f"{HELPERS}:pair", level="p", select=3, progress=False)
    u0, u1, u2 = [r["id"] for r in camp.status("p") if not r["selected"]]
    camp.write_failure(u0, "p", "SCF did not converge", 1, final=False)
    camp.write_failure(u1, "p", "overlapping atoms", 1, final=True)
    expected = {(False, False): [(u0, 1), (u2, 0)], (True, False): [(u0, 1), (u1, 2), (u2, 0)], (False, True): []}
    for (retry, selected), want in expected.items():
        assert camp.pending("p", retry, selected) == want  # SQL's json_extract
        assert [(r["id"], r["failed"]) for r in camp.status("p") if not r["labelled"] and (retry or r["failed"] < 2)
                and (r["selected"] or not selected)] == want  # Python's decoding of every row
    camp.db.update(u2, weird=float("nan"))  # not strict JSON any more: every row is decoded in Python instead
    assert camp.pending("p", True) == [(u0, 1), (u1, 2), (u2, 0)]


def test_bulk_geometry_screen_agrees_with_the_per_structure_check():
    from forcefit.labeling.calculators import GeometryError, check_geometry, find_unlabellable

    rng = np.random.default_rng(2)
    structures = []
    for k in range(60):
        n = [1, 2, 5, 9][k % 4]
        pos = rng.uniform(0, 4, size=(n, 3))
        if k % 7 == 0 and n > 1:
            pos[1] = pos[0] + 0.1  # overlapping
        if k % 11 == 0:
            pos[0, 1] = np.nan
        structures.append(Structure(numbers=np.ones(n, dtype=np.int64), positions=pos, cell=np.zeros((3, 3)), pbc=np.zeros(3, bool)))

    def rejected(s):
        try:
            check_geometry(s.numbers, s.positions)
        except GeometryError:
            return True
        return False

    expected = [k for k, s in enumerate(structures) if rejected(s)]
    assert len(expected) >= 10 and sorted(find_unlabellable(structures)) == expected


def test_poisoned_structure_fails_with_reason_while_the_rest_finish(tmp_path):
    needs("tblite")
    frames = ethanols(5)
    bad = frames[0].copy()
    bad.positions[3] = bad.positions[2]
    camp = Campaign(tmp_path / "c.db")
    camp.add(frames + [bad])
    report = label(camp, "gfn2", progress=False)
    assert report.labelled == 5 and report.failed == 1
    [(row_id, records)] = camp.failures("gfn2")
    assert len(records) == 1 and "overlapping atoms 2 and 3" in records[0]["error"]  # not retried: no SCF can fix it
    assert len(camp.frames("gfn2")) == 5
    again = label(camp, "gfn2", progress=False)  # given up: not tried again unless asked
    assert again.labelled == again.failed == 0
    assert camp.info()["levels"]["gfn2"]["failed"] == 1


def test_failed_scf_is_recorded_retried_safer_once_then_skipped(tmp_path):
    camp = Campaign(tmp_path / "c.db")
    water = molecule("H2O")
    camp.add(ethanols(3) + [molecule("CH4")])
    report = label(camp, f"{HELPERS}:flaky", level="flaky", progress=False)
    assert report.labelled == 4 and report.retried == 1 and report.failed == 0
    [(row_id, records)] = camp.failures("flaky")
    assert "did not converge" in records[0]["error"] and not records[0]["final"]
    assert camp.db.get(id=row_id).data["label.flaky"]["safer"] is True

    camp.add([water])
    report = label(camp, f"{HELPERS}:picky", level="picky", progress=False)
    assert report.labelled == 1 and report.failed == 4  # CH4 works; O-containing ones fail twice
    for _, records in camp.failures("picky"):
        assert [r["attempt"] for r in records] == [1, 2] and records[1]["safer"] and records[1]["final"]
    info = camp.info()["levels"]["picky"]
    assert info["failed"] == 4 and info["labelled"] == 1 and info["pending"] == 0


def test_a_crashing_worker_fails_only_its_structure(tmp_path):
    camp = Campaign(tmp_path / "c.db")
    camp.add(ethanols(3) + [molecule("NH3")] + ethanols(2, seed=5))
    report = label(camp, f"{HELPERS}:crashy", level="c", progress=False)
    assert report.labelled == 5 and report.failed == 1
    [(_, records)] = camp.failures("c")
    assert all("worker process died" in r["error"] for r in records)


def test_dask_and_local_pools_give_identical_results(tmp_path):
    needs("tblite", "distributed")
    from distributed import LocalCluster

    frames = ethanols(8, seed=3)
    results = {}
    for mode in ("thread", "pool", "dask"):
        camp = Campaign(tmp_path / f"{mode}.db")
        camp.add(frames)
        if mode == "dask":
            with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp",
                              dashboard_address=None) as cluster:
                assert cluster.scheduler_address.startswith("tcp://")
                report = label(camp, "gfn2", scheduler=cluster.scheduler_address, progress=False)
        else:
            report = label(camp, "gfn2", workers=1 if mode == "thread" else 2, progress=False)
        assert report.labelled == 8
        results[mode] = camp.frames("gfn2")
    for mode in ("pool", "dask"):
        for a, b in zip(results["thread"], results[mode]):
            assert a.energy == b.energy
            np.testing.assert_array_equal(a.forces, b.forces)


# ---------------------------------------------------------------- store, selection, data layer
def test_read_campaign_round_trip_and_errors(tmp_path):
    needs("tblite")
    path = tmp_path / "c.db"
    camp = Campaign(path)
    frames = ethanols(3) + rattle(molecule("H2O"), n=2, config_type="water")
    assert len(camp.add(frames)) == 5 and camp.add(frames) == []  # every structure once
    label(camp, "gfn2", progress=False)
    got = read_frames(path, level="gfn2")
    assert [f.config_type for f in got] == ["md"] * 3 + ["water"] * 2
    assert all(f.level == "gfn2" and f.forces.shape == (f.n_atoms, 3) for f in got)
    np.testing.assert_allclose(got[3].positions, frames[3].positions)
    assert read_frames(path)[0].energy == got[0].energy  # one level: no need to name it

    label(camp, f"{HELPERS}:pair", level="pair", select=2, progress=False)
    with pytest.raises(DataError, match="gfn2, pair"):
        read_frames(path)
    with pytest.raises(DataError, match="available levels: gfn2, pair"):
        read_frames(path, level="dft")
    assert len(read_frames(path, level="pair")) == 2  # unlabelled structures skipped
    camp.register_level("empty", {"method": "x"})
    with pytest.raises(DataError, match="no structure is labelled at level 'empty'"):
        read_frames(path, level="empty")
    with pytest.raises(DataError, match="other settings"):
        label(camp, "gfn2", level="pair", progress=False)


def test_select_resumes_the_same_subset_and_tops_up(tmp_path):
    camp = Campaign(tmp_path / "c.db")
    camp.add(ethanols(12, seed=2, stdev=0.1))
    first = label(camp, f"{HELPERS}:pair", level="p", select=4, select_by="fps", progress=False)
    assert first.labelled == 4
    assert label(camp, f"{HELPERS}:pair", level="p", select=4, select_by="fps", progress=False).labelled == 0
    assert label(camp, f"{HELPERS}:pair", level="p", select=6, progress=False).labelled == 2
    assert camp.info()["levels"]["p"]["labelled"] == 6
    assert label(camp, f"{HELPERS}:pair", level="p", progress=False).labelled == 6  # no --select: all the rest
    with pytest.raises(DataError, match="not available yet"):
        label(camp, f"{HELPERS}:pair", level="u", select=3, select_by="uncertainty", progress=False)


def test_farthest_point_selection_spreads_out():
    base = molecule("H2O")
    close = rattle(base, stdev=0.005, n=6, seed=1)
    far = rattle(base, stdev=0.3, n=2, seed=2)
    picked = select(close + far, 3, "fps", seed=0)
    assert len(picked) == 3 and {6, 7} <= set(picked.tolist())
    assert select(close, 10, "random").tolist() == list(range(6))


# ---------------------------------------------------------------- samplers
def test_samplers_return_tagged_structures():
    needs("tblite", "rdkit")
    md = sample_md("CCO", temperature=500, steps=40, every=10, seed=0)
    assert len(md) == 4 and all(a.info["config_type"] == "md_500K" and a.calc is None for a in md)
    assert not np.allclose(md[0].positions, md[1].positions)
    assert np.allclose(md[1].get_center_of_mass(), md[0].get_center_of_mass(), atol=1e-6)
    nm = sample_normal_modes(molecule("H2O"), temperature=300, n=3, seed=1)
    assert len(nm) == 3 and nm[0].info["config_type"] == "nm_300K"
    assert 0.001 < np.abs(nm[0].positions - nm[1].positions).max() < 0.5
    again = sample_normal_modes(molecule("H2O"), temperature=300, n=3, seed=1)
    np.testing.assert_allclose(again[2].positions, nm[2].positions)


# ---------------------------------------------------------------- command line
def test_cli_sample_label_info_export(tmp_path):
    needs("tblite", "rdkit")
    db, xyz = tmp_path / "eth.db", tmp_path / "eth.xyz"
    res, out = run_cli("sample", "--smiles", "CCO", "--temperature", "500", "--steps", "60", "--every", "20", "--out", db)
    assert res.exit_code == 0, out
    res, out = run_cli("sample", "--from", db, "--rattle", "0.05", "--n", "2", "--out", db)
    assert res.exit_code == 0 and "added 6 structures" in out, out
    res, out = run_cli("label", db, "--method", "gfn2", "--no-progress")
    assert res.exit_code == 0 and "9 labelled" in out, out
    res, out = run_cli("label", db, "--calculator", f"{HELPERS}:pair", "--level", "pair", "--select", "2", "--no-progress")
    assert res.exit_code == 0 and "2 labelled" in out, out
    res, out = run_cli("campaign-info", db)
    assert res.exit_code == 0 and "9 structures" in out and "GFN2-xTB" in out and "pair" in out, out
    res, out = run_cli("export-data", db, "--level", "gfn2", "--out", xyz)
    assert res.exit_code == 0, out
    frames = read_frames(xyz)
    assert len(frames) == 9 and {f.config_type for f in frames} == {"md_500K", "rattle_0.05"}
    assert frames[0].energy == pytest.approx(Campaign(db).frames("gfn2")[0].energy)


def test_cli_labels_a_file_into_a_new_campaign(tmp_path):
    needs("tblite")
    import ase.io

    xyz, db = tmp_path / "frames.xyz", tmp_path / "new.db"
    ase.io.write(xyz, ethanols(3), format="extxyz")
    for _ in range(2):  # the second run finds everything done: nothing duplicated
        res, out = run_cli("label", xyz, "--method", "gfn2", "--out", db, "--no-progress")
        assert res.exit_code == 0, out
    assert len(Campaign(db)) == 3 and len(Campaign(db).frames("gfn2")) == 3


@pytest.mark.parametrize("args, words, modules", [
    (["sample", "--smiles", "C1CC", "--out", "x.db"], "SMILES", ["rdkit"]),
    (["sample", "--out", "x.db"], "--smiles", []),
    (["label", "missing.db"], "missing.db", ["tblite"]),
    (["label", "frames.xyz"], "--out", ["tblite"]),
    (["label", "garbage.xyz", "--out", "x.db"], "garbage.xyz", ["tblite"]),
    (["label", "c.db", "--method", "hartree"], "unknown method", []),
    (["label", "c.db", "--calculator", "no_such_module_q:make"], "no_such_module_q", []),
    (["label", "c.db", "--calculator", "nocolon"], "module:function", []),
    (["label", "c.db", "--method", "dft", "--basis", "nonsense-basis"], "basis", ["pyscf"]),
    (["label", "c.db", "--select", "2", "--select-by", "uncertainty"], "not available yet", ["tblite"]),
    (["export-data", "c.db", "--level", "dft", "--out", "o.xyz"], "available levels", []),
])
def test_cli_bad_input_is_one_clear_line_with_exit_code_2(tmp_path, monkeypatch, args, words, modules):
    import ase.io

    needs(*modules)

    monkeypatch.chdir(tmp_path)
    ase.io.write("frames.xyz", ethanols(2), format="extxyz")
    Path("garbage.xyz").write_text("this is not\na structure file\n")
    Campaign("c.db").add(ethanols(2))
    res, out = run_cli(*args)
    assert res.exit_code == 2, out
    assert words in out and "Traceback" not in out
    assert "error" in out.lower()


def test_every_option_is_documented_in_help():
    for command in ("sample", "label", "export-data", "campaign-info"):
        res, out = run_cli(command, "--help")
        assert res.exit_code == 0
        for param in typer.main.get_command(cli()).commands[command].params:
            assert param.help, f"{command} {param.name} has no help"


def test_dft_d3_dispersion_matches_dftd3_called_directly():
    needs("pyscf")
    pytest.importorskip("dftd3")
    from dftd3.ase import DFTD3

    h2 = Atoms("H2", positions=[[0, 0, 0], [0.05, 0.02, 0.80]])
    s = Structure.from_atoms(h2)
    plain = make_method("dft", basis="sto-3g").compute(s)
    d3 = make_method("dft", basis="sto-3g", dispersion="d3bj").compute(s)
    ref = h2.copy()
    ref.calc = DFTD3(method="PBE", damping="d3bj")
    assert d3["energy"] - plain["energy"] == pytest.approx(ref.get_potential_energy(), abs=1e-9)
    np.testing.assert_allclose(d3["forces"] - plain["forces"], ref.get_forces(), atol=1e-9)


def test_smiles_formal_charge_reaches_the_reference_method(tmp_path):
    needs("tblite", "rdkit")
    from tblite.ase import TBLite

    from forcefit.labeling import from_smiles

    [ammonium] = from_smiles("[NH4+]", seed=1)
    assert ammonium.get_initial_charges().sum() == 1
    camp = Campaign(tmp_path / "c.db")
    camp.add([ammonium])
    label(camp, "gfn2", progress=False)
    ref = ammonium.copy()
    ref.calc = TBLite(method="GFN2-xTB", charge=1, verbosity=0)
    assert camp.frames()[0].energy == pytest.approx(ref.get_potential_energy(), abs=1e-9)
