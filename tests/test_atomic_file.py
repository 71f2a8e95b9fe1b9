"""Atomic files: a kill or an error mid-write leaves the previous file whole (config.yaml, metrics.json, exports)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from forcefit.atomic_file import atomic_path, write_text_atomic


def test_write_replaces_the_file_and_leaves_no_temporary_behind(tmp_path):
    path = tmp_path / "sub" / "metrics.json"
    write_text_atomic(path, "first")
    write_text_atomic(path, "second")
    assert path.read_text() == "second"
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


def test_an_error_mid_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "train.xyz"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            assert tmp.suffix == ".xyz" and tmp.parent == tmp_path  # same folder (rename is atomic), format by suffix
            tmp.write_text("half a fi")
            raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["train.xyz"]


def test_a_kill_mid_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("seed: 7\n")
    script = textwrap.dedent(f"""
        import os, signal
        from forcefit.atomic_file import atomic_path
        with atomic_path({str(path)!r}) as tmp:
            with open(tmp, "w") as fh:
                fh.write("data: {{}}\\n")
                fh.flush()
                os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert path.read_text() == "seed: 7\n"


def test_a_new_file_gets_the_umasks_mode_and_a_replaced_one_keeps_its_own(tmp_path):
    """mkstemp's temporary file is 0o600; the file it becomes must read like one open() made (a model file a user's
    group could not read was the defect), and a replaced file keeps the mode its owner gave it."""
    import os
    import stat

    old = os.umask(0o027)
    try:
        new = tmp_path / "model.json"
        write_text_atomic(new, "{}")
        assert stat.S_IMODE(new.stat().st_mode) == 0o640
        kept = tmp_path / "metrics.json"
        kept.write_text("old")
        kept.chmod(0o604)
        write_text_atomic(kept, "new")
        assert stat.S_IMODE(kept.stat().st_mode) == 0o604 and kept.read_text() == "new"
    finally:
        os.umask(old)
