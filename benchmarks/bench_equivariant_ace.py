"""Time the equivariant-ace backbone on ethanol: energy+forces eval and one training step.

    python benchmarks/bench_equivariant_ace.py [--threads 1] [--compile] [--l-max 2] [--profile]

Uses ../shared/data/ethanol/train.xyz when present (a random 9-atom molecule
otherwise). Times the backbone plus the energy sum and autograd forces, i.e.
what the Potential wrapper adds on top is left out (it is a handful of ops).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from forcefit.models.equivariant_ace import EquivariantACE

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ethanol" / "train.xyz"


def ethanol_frames(k: int):
    if DATA.exists():
        import ase.io

        atoms = ase.io.read(DATA, f":{k}")
        return [(a.get_positions(), a.get_atomic_numbers()) for a in atoms]
    print(f"{DATA} not found: using random 9-atom molecules")
    rng = np.random.default_rng(0)
    return [(rng.normal(size=(9, 3)) * 1.2, np.array([6, 6, 8, 1, 1, 1, 1, 1, 1])) for _ in range(k)]


def batch(frames, cutoff, dtype):
    species_map = {1: 0, 6: 1, 8: 2}
    pos, spec, edges, bidx, off = [], [], [], [], 0
    for g, (p, z) in enumerate(frames):
        n = len(z)
        d = np.linalg.norm(p[None] - p[:, None], axis=-1)
        i, j = np.nonzero((d < cutoff) & (d > 0))
        edges.append(np.stack([i, j]) + off)
        pos.append(p)
        spec.append([species_map[int(x)] for x in z])
        bidx.append(np.full(n, g))
        off += n
    return (
        torch.tensor(np.concatenate(pos), dtype=dtype),
        torch.tensor(np.concatenate(spec)),
        torch.tensor(np.concatenate(edges, 1)),
        torch.tensor(np.concatenate(bidx)),
    )


def timeit(fn, repeats: int, warmup: int = 10):
    """Median wall time and median CPU time of this process, in ms.

    The machine is shared, so wall time swings with other people's load; with
    one thread the process CPU time is the steadier number to compare changes.
    """
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return 1e3 * statistics.median(wall), 1e3 * statistics.median(cpu)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--l-max", type=int, default=2)
    ap.add_argument("--edge-l-max", type=int, default=None, help="degree of edge harmonics / density (default max(3, l_max))")
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--correlation", type=int, default=3)
    ap.add_argument("--heads", default="")
    ap.add_argument("--radial-hidden", type=int, default=64)
    ap.add_argument("--compile", action="store_true", help="torch.compile the backbone for the eval timing")
    ap.add_argument("--compile-train", action="store_true", help="also try the compiled backbone in the training step (double backward)")
    ap.add_argument("--dynamic", action="store_true", help="torch.compile(dynamic=True) (edge count varies in MD)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    heads = tuple(h for h in args.heads.split(",") if h)
    model = EquivariantACE(3, l_max=args.l_max, edge_l_max=args.edge_l_max, channels=args.channels, correlation=args.correlation, vector_heads=heads, radial_hidden=args.radial_hidden)
    print(f"parameters: {sum(p.numel() for p in model.parameters())}")
    fwd = torch.compile(model, dynamic=args.dynamic) if (args.compile or args.compile_train) else model

    frames = ethanol_frames(5)
    pos1, spec1, edge1, _ = batch(frames[:1], model.cutoff, torch.float32)

    def eval_step():
        pos = pos1.clone().requires_grad_(True)
        vec = pos[edge1[1]] - pos[edge1[0]]
        energy = fwd(spec1, edge1, vec)["node_energy"].sum()
        forces = -torch.autograd.grad(energy, pos)[0]
        return energy.detach(), forces

    t0 = time.perf_counter()
    eval_step()
    print(f"first call (includes compilation if any): {time.perf_counter() - t0:.1f} s")
    med, p10 = timeit(eval_step, args.repeats)
    print(f"eval 9 atoms ({edge1.shape[1]} edges) energy+forces: wall {med:.2f} ms, cpu {p10:.2f} ms (medians)")

    pos5, spec5, edge5, b5 = batch(frames, model.cutoff, torch.float32)
    e_ref = torch.randn(5)
    f_ref = torch.randn(len(spec5), 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train_step():
        pos = pos5.clone().requires_grad_(True)
        vec = pos[edge5[1]] - pos[edge5[0]]
        node_e = (fwd if args.compile_train else model)(spec5, edge5, vec)["node_energy"]
        energy = torch.zeros(5).index_add(0, b5, node_e)
        forces = -torch.autograd.grad(energy.sum(), pos, create_graph=True)[0]
        loss = (energy - e_ref).pow(2).mean() + (forces - f_ref).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if args.compile_train or not args.compile:
        try:
            med, p10 = timeit(train_step, max(args.repeats // 2, 20))
        except Exception as exc:  # double backward through a compiled graph
            print(f"train step failed: {type(exc).__name__}: {str(exc).splitlines()[0]}")
            return
        print(f"train step 5x9 atoms (create_graph): wall {med:.2f} ms, cpu {p10:.2f} ms (medians)")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(50):
                eval_step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(20):
                train_step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))


if __name__ == "__main__":
    main()
