"""Reading a model file and running it (forcefit.load, the ASE calculator, evaluate) never loads the training framework."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def test_inference_path_imports_neither_lightning_nor_training(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from ase import Atoms
        import forcefit
        from forcefit.model_file import save_model
        from forcefit.models.build import build_potential
        from forcefit.evaluate import evaluate
        from forcefit.data import Frame

        arch = {{"name": "painn", "cutoff": 4.0, "options": {{"features": 8, "num_layers": 1}}, "species": [1, 8]}}
        save_model(build_potential(arch), arch, {str(tmp_path / "m.pt")!r})
        ff = forcefit.load({str(tmp_path / "m.pt")!r})
        atoms = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
        atoms.calc = ff.calculator
        atoms.get_forces()
        evaluate(ff.model, [Frame(positions=atoms.positions, numbers=atoms.numbers, energy=0.0)])
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("lightning", "pytorch_lightning") or m.startswith("forcefit.training"))
        print("LOADED", bad)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "LOADED []" in out.stdout, out.stdout
