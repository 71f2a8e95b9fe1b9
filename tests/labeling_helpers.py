"""ASE calculator factories for the labelling tests (imported by path "labeling_helpers:<name>").

A cheap pair potential stands in for a reference method; each factory adds
one behaviour the engine must survive: slowness (to kill a run mid-way),
a first-call SCF failure, a structure that always fails, a crashing worker.
"""
from __future__ import annotations

import os
import time

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

_calls = {"n": 0}


class PairCalculator(Calculator):
    """Morse-like pair potential; optional delay, call log, and failure rules."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, delay=0.0, fail_first_call=False, fail_on_oxygen=False, crash_on_nitrogen=False, **kw):
        super().__init__(**kw)
        self.delay, self.fail_first_call = delay, fail_first_call
        self.fail_on_oxygen, self.crash_on_nitrogen = fail_on_oxygen, crash_on_nitrogen

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        _calls["n"] += 1
        if self.fail_first_call and _calls["n"] == 1:
            raise RuntimeError("SCF did not converge (simulated)")
        if self.fail_on_oxygen and 8 in self.atoms.numbers:
            raise RuntimeError("SCF did not converge (simulated, always)")
        if self.crash_on_nitrogen and 7 in self.atoms.numbers:
            os._exit(3)
        log = os.environ.get("FORCEFIT_TEST_LOG")
        if self.delay:
            time.sleep(self.delay)
        pos = self.atoms.positions
        d = pos[None, :, :] - pos[:, None, :]
        r = np.linalg.norm(d, axis=-1) + np.eye(len(pos))
        e = np.exp(-1.5 * (r - 1.3))
        pair = (1 - e) ** 2 - 1
        np.fill_diagonal(pair, 0.0)
        de_dr = 2 * (1 - e) * 1.5 * e
        np.fill_diagonal(de_dr, 0.0)
        self.results["energy"] = float(pair.sum() / 2)
        self.results["forces"] = np.sum((de_dr / r)[:, :, None] * d, axis=1)
        if log:  # after the work: one line per finished calculation, written straight to the OS
            with open(log, "a") as fh:
                fh.write(f"{os.getpid()} {pos[0, 0]:.8f}\n")


def pair():
    return PairCalculator()


def slow():
    return PairCalculator(delay=0.15)


def flaky():
    return PairCalculator(fail_first_call=True)


def picky():
    return PairCalculator(fail_on_oxygen=True)


def crashy():
    return PairCalculator(crash_on_nitrogen=True)
