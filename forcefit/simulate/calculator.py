"""ASE calculator around a Potential, built for MD speed on small systems.

For a 9-atom molecule the model call is a few milliseconds, so everything
around it must cost microseconds: the graph is built straight from the Atoms
with vesin (no Frame, no GraphDataset, no collate), the model is a frozen
eval-mode copy moved to its device and dtype once, and its parameters do not
require grad so autograd only records the path to the positions. Nothing
geometric is cached between calls: positions (and possibly the cell) change
every step, so the neighbour list is rebuilt every call. Only tensors that
depend on the atomic numbers alone (species, batch index) are reused while
the numbers are unchanged. vesin is called directly (one NeighborList
object, only the quantities needed) rather than through
forcefit.data.neighbors, which saves its per-call conversions.

A Δ model (a model file with a baseline, ``forcefit.baseline``) adds the
cheap method's energy and forces to the network's every call; for xTB that
is one SCF per step and usually costs more than the network.
``model_seconds`` and ``baseline_seconds`` add up the wall time of each
part, so an MD benchmark can report where a step's time goes.
"""
from __future__ import annotations

import copy
import time

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes
from vesin import NeighborList

from ..baseline import baseline_of
from ..data.validate import unknown_elements

_NO_BOX = np.zeros((3, 3))


class ForcefitCalculator(Calculator):
    """Energy and forces (eV, eV/Å) from a :class:`forcefit.models.potential.Potential`.

    The calculator holds its own frozen copy of the potential: later training
    of the original does not leak into a running simulation (and the copy can
    change dtype/device without touching the caller's model). Stress is not
    implemented.
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, potential: torch.nn.Module, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
                 compile: bool = False, level: str | None = None, **kwargs):
        """``level``: the level of theory a multi-level model predicts (default: its default level).
        ``compile=True`` runs the backbone through ``torch.compile`` (dynamic shapes): a one-off
        compilation of tens of seconds, then ~2x faster small-molecule MD on CPU (benchmarks/NOTES.md).
        Inference only: training needs double backward, which compiled graphs do not support."""
        super().__init__(**kwargs)
        self.device = torch.device(device)
        self.dtype = dtype
        model = copy.deepcopy(potential).to(device=self.device, dtype=dtype).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        if compile:
            model.backbone = torch.compile(model.backbone, dynamic=True)
        self.potential = model
        self.level = level
        self._level = None if level is None else torch.tensor([model.level_index(level)], device=self.device)
        self.cutoff = float(model.cutoff)
        self.species = list(model.species)
        self._nl = NeighborList(cutoff=self.cutoff, full_list=True)
        self._numbers: np.ndarray | None = None
        self._fixed: dict = {}
        self.baseline = baseline_of(potential)  # None, or the cheap method this Δ model's predictions are added to
        if self.baseline is not None:
            self.baseline.check()
        self.model_seconds = 0.0  # wall time in the network (graph, forward, forces), summed over calls
        self.baseline_seconds = 0.0  # wall time in the baseline, summed over calls

    def _per_structure(self, numbers: np.ndarray) -> dict:
        """Tensors that depend only on the atomic numbers, re-made (and re-checked) when they change."""
        if self._numbers is None or not np.array_equal(numbers, self._numbers):
            unknown = unknown_elements(numbers, self.species)
            if unknown:
                raise ValueError(f"the structure contains {unknown}")
            n, dev = len(numbers), self.device
            self._numbers = numbers.copy()
            self._fixed = {
                "numbers": torch.as_tensor(numbers, dtype=torch.long, device=dev),
                "batch": torch.zeros(n, dtype=torch.long, device=dev),
                "ptr": torch.tensor([0, n], device=dev),
            }
            if self._level is not None:
                self._fixed["level"] = self._level
        return self._fixed

    def build_batch(self, atoms) -> dict:
        """The one-graph flat batch the Potential reads (keys as in forcefit.data.batch).

        Only what ``Potential.forward`` uses is built: positions, numbers,
        edge_index, edge_shift, batch, ptr (and level, when one was asked for).
        """
        batch = dict(self._per_structure(atoms.numbers))
        positions = atoms.positions
        pbc = atoms.pbc
        dev, dt = self.device, self.dtype
        if pbc.any():
            cell = atoms.cell.array
            i, j, shifts = self._nl.compute(points=positions, box=cell, periodic=pbc, quantities="ijS")
            batch["edge_shift"] = torch.as_tensor(shifts @ cell, dtype=dt, device=dev)
        else:
            i, j = self._nl.compute(points=positions, box=_NO_BOX, periodic=False, quantities="ij")
            batch["edge_shift"] = torch.zeros((len(i), 3), dtype=dt, device=dev)
        batch["edge_index"] = torch.as_tensor(np.stack([i, j]).astype(np.int64, copy=False), device=dev)
        batch["positions"] = torch.as_tensor(positions, dtype=dt, device=dev)
        return batch

    def check_state(self, atoms, tol: float = 1e-15) -> list[str]:
        """What changed since the last calculation, looking only at what the model reads.

        ASE's generic check compares every per-atom array with ``isclose`` and
        cost ~0.18 ms here (a few percent of a small-molecule step); exact
        equality on positions, numbers, cell and pbc is enough and cost ~3 µs.
        """
        old = self.atoms
        if old is None:
            return list(all_changes)
        changes = []
        if len(old) != len(atoms) or not np.array_equal(old.positions, atoms.positions):
            changes.append("positions")
        if len(old) != len(atoms) or not np.array_equal(old.numbers, atoms.numbers):
            changes.append("numbers")
        if not np.array_equal(old.cell.array, atoms.cell.array):
            changes.append("cell")
        if not np.array_equal(old.pbc, atoms.pbc):
            changes.append("pbc")
        return changes

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        # ASE's get_property has already stored a fresh copy of these atoms in
        # self.atoms; Calculator.calculate would copy them a second time.
        if atoms is not None and (self.atoms is None or self.check_state(atoms)):
            self.atoms = atoms.copy()
        start = time.perf_counter()
        out = self.potential(self.build_batch(self.atoms), compute_forces=True)
        energy = float(out["energy"].detach()[0])
        forces = out["forces"].detach().to("cpu", torch.float64).numpy()
        done = time.perf_counter()
        self.model_seconds += done - start
        if self.baseline is not None:
            a = self.atoms
            base_energy, base_forces = self.baseline.compute(a.numbers, a.positions, a.cell.array, a.pbc)
            energy, forces = energy + base_energy, forces + base_forces
            self.baseline_seconds += time.perf_counter() - done
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}
