"""The higher-order backbone (equivariant-ace): exact O(3)/translation/permutation symmetry, forces, seams.

Everything in float64 on small random molecules built here. Rotations are
random proper rotations and their products with the inversion (reflections);
forces, vector heads and the DeNS condition are polar vectors (1o), so under
x → Q x (det Q = ±1) they all map to Q v, the energy stays put.
"""
from __future__ import annotations

import pytest
import torch
from e3nn import o3

from forcefit.models.equivariant_ace import EquivariantACE
from forcefit.models.registry import backbone_class

TOL = 1e-6  # absolute, float64; observed errors are ~1e-14


def molecule(n: int = 7, num_species: int = 3, seed: int = 0, spread: float = 1.3):
    """Random positions with no two atoms closer than 0.7 Å, random species."""
    g = torch.Generator().manual_seed(seed)
    while True:
        pos = torch.randn(n, 3, generator=g, dtype=torch.float64) * spread
        d = torch.cdist(pos, pos) + 10 * torch.eye(n, dtype=torch.float64)
        if d.min() > 0.7:
            break
    species = torch.randint(0, num_species, (n,), generator=g)
    return pos, species


def full_graph(pos: torch.Tensor, cutoff: float) -> torch.Tensor:
    """All ordered pairs (i, j), i ≠ j, closer than the cutoff; rows (centre, neighbour)."""
    d = torch.cdist(pos, pos)
    i, j = torch.nonzero((d < cutoff) & ~torch.eye(len(pos), dtype=torch.bool), as_tuple=True)
    return torch.stack([i, j])


def evaluate(model, pos, species, edge_index, condition=None):
    """Energy, conservative forces (−dE/dx through edge_vec) and vector heads."""
    pos = pos.clone().requires_grad_(True)
    edge_vec = pos[edge_index[1]] - pos[edge_index[0]]
    out = model(species, edge_index, edge_vec, condition)
    energy = out["node_energy"].sum()
    forces = -torch.autograd.grad(energy, pos)[0]
    return energy.detach(), forces, {k: v.detach() for k, v in out["vectors"].items()}


def make(**kwargs):
    torch.manual_seed(kwargs.pop("seed", 0))
    kwargs.setdefault("vector_heads", ("forces", "noise"))
    model = EquivariantACE(num_species=3, **kwargs).double()
    # non-trivial embedding scale so that all paths carry signal
    return model


def random_orthogonal(seed: int, improper: bool) -> torch.Tensor:
    torch.manual_seed(seed)
    q = o3.rand_matrix(dtype=torch.float64)
    return -q if improper else q


CONFIGS = [
    dict(),  # defaults: l_max=2, edge_l_max=3, correlation=3, two layers
    dict(l_max=3, channels=8),
    dict(l_max=1, edge_l_max=3, channels=8),  # MACE's small model: l ≤ 1 features, l ≤ 3 density
    dict(l_max=2, edge_l_max=2, channels=8),  # the model before edge_l_max existed
    dict(correlation=2, gate=True, num_layers=3, channels=8),
    dict(correlation=1, channels=8),
    dict(species_self_connection=True, channels=8),
    dict(l_max=1, product_l_max=3, channels=8),  # every intermediate degree in the product, as MACE
    dict(path_mixing=True, channels=8),
    dict(energy_heads=2, channels=8),  # one energy readout per level of theory
]


@pytest.mark.parametrize("config", CONFIGS, ids=["default", "lmax3", "lmax1-edge3", "lmax2-edge2", "corr2-gate-3layers", "corr1", "species-skip", "lmax1-product3", "path-mixing", "two-levels"])
@pytest.mark.parametrize("with_condition", [False, True], ids=["no-condition", "condition"])
def test_o3_equivariance(config, with_condition):
    model = make(**config)
    pos, species = molecule()
    edges = full_graph(pos, model.cutoff)
    cond = torch.randn(len(pos), 3, dtype=torch.float64) if with_condition else None
    if cond is not None:
        cond[0] = 0.0  # a row without condition alongside conditioned ones
    e, f, v = evaluate(model, pos, species, edges, cond)
    assert f.abs().max() > 1e-4 and all(x.abs().max() > 1e-6 for x in v.values())
    for seed, improper in [(1, False), (2, True), (3, True)]:
        q = random_orthogonal(seed, improper)
        e2, f2, v2 = evaluate(model, pos @ q.T, species, edges, None if cond is None else cond @ q.T)
        assert torch.allclose(e2, e, atol=TOL, rtol=0)
        assert torch.allclose(f2, f @ q.T, atol=TOL, rtol=0)
        for name in v:
            assert torch.allclose(v2[name], v[name] @ q.T, atol=TOL, rtol=0), name


def test_translation_invariance():
    model = make()
    pos, species = molecule(seed=4)
    edges = full_graph(pos, model.cutoff)
    cond = torch.randn(len(pos), 3, dtype=torch.float64)
    e, f, v = evaluate(model, pos, species, edges, cond)
    e2, f2, v2 = evaluate(model, pos + torch.tensor([3.0, -1.5, 7.25], dtype=torch.float64), species, edges, cond)
    assert torch.allclose(e2, e, atol=TOL, rtol=0)
    assert torch.allclose(f2, f, atol=TOL, rtol=0)
    for name in v:
        assert torch.allclose(v2[name], v[name], atol=TOL, rtol=0)


def test_permutation_equivariance():
    model = make()
    pos, species = molecule(n=8, seed=5)
    edges = full_graph(pos, model.cutoff)
    cond = torch.randn(len(pos), 3, dtype=torch.float64)
    e, f, v = evaluate(model, pos, species, edges, cond)
    perm = torch.randperm(len(pos), generator=torch.Generator().manual_seed(1))
    inverse = torch.argsort(perm)  # new index of old atom k is inverse[k]
    edge_perm = torch.randperm(edges.shape[1], generator=torch.Generator().manual_seed(2))
    edges2 = inverse[edges][:, edge_perm]  # relabelled and shuffled edge list
    e2, f2, v2 = evaluate(model, pos[perm], species[perm], edges2, cond[perm])
    assert torch.allclose(e2, e, atol=TOL, rtol=0)
    assert torch.allclose(f2, f[perm], atol=TOL, rtol=0)
    for name in v:
        assert torch.allclose(v2[name], v[name][perm], atol=TOL, rtol=0)


def test_batch_of_two_molecules_is_the_sum_of_each():
    """Disjoint graphs do not talk to each other (what a flat batch relies on)."""
    model = make()
    (pa, sa), (pb, sb) = molecule(n=5, seed=6), molecule(n=6, seed=7)
    ea, eb = full_graph(pa, model.cutoff), full_graph(pb, model.cutoff)
    e_a, f_a, _ = evaluate(model, pa, sa, ea)
    e_b, f_b, _ = evaluate(model, pb, sb, eb)
    pos = torch.cat([pa, pb + 100.0])
    e, f, _ = evaluate(model, pos, torch.cat([sa, sb]), torch.cat([ea, eb + len(pa)], dim=1))
    assert torch.allclose(e, e_a + e_b, atol=TOL, rtol=0)
    assert torch.allclose(f, torch.cat([f_a, f_b]), atol=TOL, rtol=0)


@pytest.mark.parametrize("with_condition", [False, True], ids=["no-condition", "condition"])
def test_forces_match_finite_differences(with_condition):
    model = make(channels=16)
    pos, species = molecule(n=6, seed=8)
    edges = full_graph(pos, model.cutoff)
    cond = torch.randn(len(pos), 3, dtype=torch.float64) if with_condition else None
    _, forces, _ = evaluate(model, pos, species, edges, cond)
    h = 1e-5
    numeric = torch.zeros_like(pos)
    with torch.no_grad():
        for a in range(len(pos)):
            for k in range(3):
                shifted = []
                for sign in (1, -1):
                    p = pos.clone()
                    p[a, k] += sign * h
                    shifted.append(model(species, edges, p[edges[1]] - p[edges[0]], cond)["node_energy"].sum())
                numeric[a, k] = -(shifted[0] - shifted[1]) / (2 * h)
    assert torch.allclose(forces, numeric, atol=1e-7, rtol=1e-6)


def test_zero_condition_equals_no_condition():
    model = make()
    pos, species = molecule(seed=9)
    edges = full_graph(pos, model.cutoff)
    e0, f0, v0 = evaluate(model, pos, species, edges, None)
    e1, f1, v1 = evaluate(model, pos, species, edges, torch.zeros(len(pos), 3, dtype=torch.float64))
    assert torch.allclose(e1, e0, atol=1e-12, rtol=0)
    assert torch.allclose(f1, f0, atol=1e-12, rtol=0)
    for name in v0:
        assert torch.allclose(v1[name], v0[name], atol=1e-12, rtol=0)
    # a nonzero condition does change the outputs (the seam is wired), per atom
    cond = torch.zeros(len(pos), 3, dtype=torch.float64)
    cond[2] = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    e2, _, v2 = evaluate(model, pos, species, edges, cond)
    assert (e2 - e0).abs() > 1e-8
    assert (v2["noise"] - v0["noise"]).abs().max() > 1e-8


@pytest.mark.parametrize("config", [dict(), dict(l_max=3, channels=8), dict(num_layers=1, channels=8), dict(species_self_connection=True, channels=8)],
                         ids=["default", "lmax3", "1layer", "species-skip"])
def test_sparse_condition_equals_the_dense_first_layer(config):
    """The condition's messages are computed only on edges leaving conditioned atoms; that must equal
    feeding the dense features (embedding + condition at every degree) through the full first layer."""
    model = make(**config)
    pos, species = molecule(n=8, seed=4)
    edges = full_graph(pos, model.cutoff)
    cond = torch.zeros(len(pos), 3, dtype=torch.float64)
    cond[[1, 5]] = torch.tensor([[0.3, -0.2, 0.5], [-0.7, 0.1, 0.2]], dtype=torch.float64)
    energy, _, vectors = evaluate(model, pos, species, edges, cond)

    # reference: the dense first layer, all columns of its radial weights on every edge
    centre, neighbour = edges
    edge_vec = pos[neighbour] - pos[centre]
    r = edge_vec.norm(dim=-1)
    sh = model.spherical_harmonics(edge_vec / r.unsqueeze(-1))
    hidden = model.radial_trunk(model.bessel(r)) * model.envelope(r).unsqueeze(-1)
    h = model.embedding(species)
    c = model.condition_features(cond, h.dtype)
    h = torch.cat([c[:1] + h.unsqueeze(0), c[1:]])
    node_energy = 0
    for k, layer in enumerate(model.layers):
        w = torch.matmul(hidden, model.radial_out[k]).view(len(r), model.num_paths, model.channels)
        h = layer(h, species, sh, w.index_select(1, layer.message.path_of_column), centre, neighbour)
        readout = model.readouts[k] if k < model.num_layers - 1 else model.readout_mlp
        node_energy = node_energy + readout(h[0]).squeeze(-1)
    assert torch.allclose(energy, node_energy.sum().detach(), atol=TOL, rtol=0)
    gates = torch.sigmoid(model.vector_gate(h[0])).view(len(pos), 2, model.channels)
    v = torch.einsum("mnc,nhc,hc->nhm", h[1:4], gates, model.vector_weights) @ model.l1_to_xyz
    assert torch.allclose(vectors["noise"], v[:, 1].detach(), atol=TOL, rtol=0)
    # and the conditioned atoms really send messages: without them the outputs differ
    e_none, _, _ = evaluate(model, pos, species, edges, None)
    assert (energy - e_none).abs() > 1e-8


def test_species_self_connection_mixes_per_species():
    """Each atom's residual uses its own species' weights: changing one species' weights changes
    only what that species' atoms get from the skip."""
    from forcefit.models.irreps_ops import SpeciesDegreewiseLinear

    torch.manual_seed(0)
    lin = SpeciesDegreewiseLinear(2, 3, 4, 5).double()
    x = torch.randn(9, 6, 4, dtype=torch.float64)
    species = torch.tensor([0, 1, 2, 1, 0, 2])
    y = lin(x, species)
    w = lin.weight.view(3, 4, 3, 5)  # (degree, C_in, species, C_out)
    degree = [0] + [1] * 3 + [2] * 5
    expected = torch.stack([torch.stack([x[d, n] @ w[degree[d], :, species[n]] for n in range(6)]) for d in range(9)])
    assert torch.allclose(y, expected, atol=1e-12, rtol=0)


def test_smooth_cutoff():
    """An atom entering the cutoff sphere changes energy and forces continuously (no jump)."""
    model = make()
    pos, species = molecule(n=4, seed=10, spread=0.8)
    direction = torch.nn.functional.normalize(torch.tensor([1.0, 0.3, -0.2], dtype=torch.float64), dim=0)
    k = int(torch.argmax(pos @ direction))
    # every existing atom is at least cutoff − 1e-4 away from the new one (atom k exactly that)
    new = pos[k] + direction * (model.cutoff - 1e-4)
    pos5 = torch.cat([pos, new.unsqueeze(0)])
    species5 = torch.cat([species, torch.tensor([1])])
    edges = full_graph(pos5, model.cutoff)
    keep = (edges < 4).all(dim=0)
    assert keep.sum() < edges.shape[1]  # the new atom has at least one neighbour inside the cutoff
    e_in, f_in, _ = evaluate(model, pos5, species5, edges)
    e_out, f_out, _ = evaluate(model, pos5, species5, edges[:, keep])
    assert torch.allclose(e_in, e_out, atol=1e-9, rtol=0)
    assert torch.allclose(f_in, f_out, atol=1e-7, rtol=0)
    # and the same atom well inside the cutoff does interact
    pos_near = torch.cat([pos, (pos[k] + direction * 2.0).unsqueeze(0)])
    edges_near = full_graph(pos_near, model.cutoff)
    e_a, _, _ = evaluate(model, pos_near, species5, edges_near)
    e_b, _, _ = evaluate(model, pos_near, species5, edges_near[:, (edges_near < 4).all(dim=0)])
    assert (e_a - e_b).abs() > 1e-6


def test_vector_heads_and_outputs():
    model = make(vector_heads=("forces",))
    pos, species = molecule(seed=11)
    edges = full_graph(pos, model.cutoff)
    out = model(species, edges, pos[edges[1]] - pos[edges[0]])
    assert out["node_energy"].shape == (len(pos),)
    assert set(out["vectors"]) == {"forces"} and out["vectors"]["forces"].shape == (len(pos), 3)
    plain = make(vector_heads=())
    assert plain(species, edges, pos[edges[1]] - pos[edges[0]])["vectors"] == {}
    assert model.l_max == 2 and model.cutoff == 5.0


def test_l_max_3_carries_degree_3():
    model = make(l_max=3, channels=8)
    assert model.l_max == 3
    pos, species = molecule(seed=12)
    edges = full_graph(pos, model.cutoff)
    feats = {}
    model.layers[0].register_forward_hook(lambda mod, inp, out: feats.setdefault("h", out))
    cond = torch.randn(len(pos), 3, dtype=torch.float64)
    evaluate(model, pos, species, edges, cond)
    assert feats["h"].shape[0] == 16 and feats["h"][9:].abs().max() > 1e-6  # l = 3 components are live


def test_edge_degree_3_reaches_the_energy_through_the_density():
    """Default: l ≤ 2 node features, but the neighbour density A (and its products) carry l = 3."""
    model = make()
    assert model.l_max == 2 and model.edge_l_max == 3
    pos, species = molecule(seed=14)
    edges = full_graph(pos, model.cutoff)
    feats = {}
    # hooks that return None: a returned value would replace the module's output
    model.layers[0].linear_a.register_forward_hook(lambda mod, inp, out: feats.update(a=out))
    model.layers[0].register_forward_hook(lambda mod, inp, out: feats.update(h=out))
    e, _, _ = evaluate(model, pos, species, edges)
    assert feats["a"].shape[0] == 16 and feats["a"][9:].abs().max() > 1e-6  # A's l = 3 part is live
    assert feats["h"].shape[0] == 9  # node features stop at l_max = 2
    # the l = 3 part of A matters: zeroing its product weights changes the energy
    with torch.no_grad():
        product = model.layers[0].product.products[0]
        for p, path in enumerate(product.paths):
            if 3 in path[:2]:
                model.layers[0].product.weights[0][p] = 0.0
    assert not torch.allclose(evaluate(model, pos, species, edges)[0], e)
    with pytest.raises(ValueError, match="edge_l_max"):
        EquivariantACE(num_species=2, l_max=2, edge_l_max=1)
    with pytest.raises(ValueError, match="product_l_max"):
        EquivariantACE(num_species=2, l_max=2, product_l_max=4)


def test_product_l_max_adds_the_couplings_through_higher_intermediate_degrees():
    """product_l_max = 3 keeps (A ⊗ A)_3 between the steps: the model it builds has those paths, and they act."""
    cut = EquivariantACE(num_species=3, l_max=1, channels=4)
    full = EquivariantACE(num_species=3, l_max=1, product_l_max=3, channels=4)
    assert cut.product_l_max == 1 and full.product_l_max == 3
    first_cut, first_full = cut.layers[0].product.products[0], full.layers[0].product.products[0]
    assert max(p[2] for p in first_cut.paths) == 1 and max(p[2] for p in first_full.paths) == 3
    second = full.layers[0].product.products[1]
    assert any(p[0] == 3 for p in second.paths)  # the intermediate l = 3 is coupled again
    full = full.double()
    pos, species = molecule(seed=15)
    edges = full_graph(pos, full.cutoff)
    e, _, _ = evaluate(full, pos, species, edges)
    with torch.no_grad():
        for layer in full.layers:
            step = layer.product.products[1]
            for k, path in enumerate(step.paths):
                if path[0] > 1:
                    layer.product.weights[1][k] = 0.0
    assert not torch.allclose(evaluate(full, pos, species, edges)[0], e)


def test_path_mixing_with_one_matrix_for_every_path_is_the_plain_density():
    """path_mixing applies W_p per path before adding the paths; with W_p = W for all p it is W·(Σ_p), the plain layer."""
    mixed, plain = make(path_mixing=True, channels=8), make(channels=8)
    assert not hasattr(mixed.layers[0], "path_weights")  # a first layer has one path per degree
    pos, species = molecule(seed=16)
    edges = full_graph(pos, mixed.cutoff)
    e_mixed, f_mixed, _ = evaluate(mixed, pos, species, edges)
    state = mixed.state_dict()
    with torch.no_grad():
        for k in range(1, len(mixed.layers)):
            w = state.pop(f"layers.{k}.path_weights")[0]
            mixed.layers[k].path_weights.copy_(w.expand_as(mixed.layers[k].path_weights))
            state[f"layers.{k}.linear_a.weight"] = w.expand_as(plain.layers[k].linear_a.weight).clone()
    plain.load_state_dict(state, strict=True)
    e1, f1, _ = evaluate(mixed, pos, species, edges)
    e2, f2, _ = evaluate(plain, pos, species, edges)
    torch.testing.assert_close(e1, e2, rtol=0, atol=1e-10)
    torch.testing.assert_close(f1, f2, rtol=0, atol=1e-10)
    assert not torch.allclose(e_mixed, e1)  # distinct per-path matrices give another function


def test_float32_and_registry():
    assert backbone_class("equivariant-ace") is EquivariantACE
    torch.manual_seed(0)
    model = EquivariantACE(num_species=2)
    pos, species = molecule(n=5, num_species=2, seed=13)
    pos = pos.float()
    edges = full_graph(pos, model.cutoff)
    out = model(species, edges, pos[edges[1]] - pos[edges[0]], torch.randn(5, 3))
    assert out["node_energy"].dtype == torch.float32 and torch.isfinite(out["node_energy"]).all()


@pytest.mark.parametrize("aux_head", [False, True])
def test_training_step_with_create_graph(aux_head):
    """Force training needs double backward: gradients reach every parameter that should learn (the auxiliary head too)."""
    model = make(vector_heads=("forces",), channels=8)
    head = model.make_vector_head().double() if aux_head else None
    pos, species = molecule(seed=14)
    edges = full_graph(pos, model.cutoff)
    p = pos.clone().requires_grad_(True)
    out = model(species, edges, p[edges[1]] - p[edges[0]], torch.randn(len(pos), 3, dtype=torch.float64))
    forces = -torch.autograd.grad(out["node_energy"].sum(), p, create_graph=True)[0]
    loss = forces.pow(2).sum() + out["node_energy"].sum() ** 2 + out["vectors"]["forces"].pow(2).sum()
    if head is not None:
        loss = loss + head(out["features"]).pow(2).sum()
    loss.backward()
    params = list(model.named_parameters()) + ([] if head is None else [(f"head.{n}", q) for n, q in head.named_parameters()])
    missing = [n for n, q in params if q.grad is None or not torch.isfinite(q.grad).all()]
    assert not missing, missing


@pytest.mark.parametrize("config", [dict(), dict(num_layers=1, channels=8), dict(l_max=3, channels=8),
                                    dict(correlation=2, gate=True, num_layers=3, channels=8)])
@pytest.mark.parametrize("with_condition", [False, True], ids=["no-condition", "condition"])
def test_auxiliary_vector_head_is_o3_equivariant(config, with_condition):
    """The head built outside the backbone (the DeNS noise head) maps Q x to Q v, with and without a force condition."""
    model = make(vector_heads=(), **config)
    head = model.make_vector_head().double()
    pos, species = molecule(seed=8)
    edges = full_graph(pos, model.cutoff)
    cond = torch.randn(len(pos), 3, dtype=torch.float64) if with_condition else None

    def vectors(x, c):
        return head(model(species, edges, x[edges[1]] - x[edges[0]], c)["features"]).detach()

    v = vectors(pos, cond)
    assert v.abs().max() > 1e-6
    for seed, improper in [(1, False), (2, True)]:
        q = random_orthogonal(seed, improper)
        torch.testing.assert_close(vectors(pos @ q.T, None if cond is None else cond @ q.T), v @ q.T, atol=TOL, rtol=0)


@pytest.mark.parametrize("name", ["equivariant-ace", "painn"])
def test_an_auxiliary_head_leaves_the_backbone_and_its_outputs_alone(name):
    """Same seed, with and without the DeNS noise head: identical backbone weights at step 0, identical energy and forces."""
    from forcefit.models.build import build_potential

    arch = {"name": name, "cutoff": 4.0, "options": {"channels": 8} if name == "equivariant-ace" else {"features": 16},
            "species": [0, 1, 2]}
    torch.manual_seed(7)
    plain = build_potential(arch).double()
    torch.manual_seed(7)
    dens = build_potential({**arch, "aux_heads": ("noise",)}).double()
    sp, sd = plain.state_dict(), dens.state_dict()
    assert set(sd) - set(sp) and all(k.startswith("aux_heads.noise.") for k in set(sd) - set(sp))
    for key, value in sp.items():
        assert torch.equal(value, sd[key]), key
    pos, species = molecule(seed=9)
    edges = full_graph(pos, 4.0)
    batch = {"positions": pos, "numbers": species, "edge_index": edges, "edge_shift": torch.zeros(edges.shape[1], 3, dtype=torch.float64),
             "batch": torch.zeros(len(pos), dtype=torch.long), "ptr": torch.tensor([0, len(pos)])}
    a, b = plain(batch), dens(batch)
    torch.testing.assert_close(a["energy"], b["energy"], rtol=0, atol=0)
    torch.testing.assert_close(a["forces"], b["forces"], rtol=0, atol=0)
    assert set(b["vectors"]) == {"noise"} and not a["vectors"]


def test_format_1_model_file_keeps_its_edge_degree(tmp_path):
    """Files written before edge_l_max existed (format 1) load with edge harmonics up to l_max, as trained."""
    from forcefit.model_file import load_model, save_model
    from forcefit.models.build import build_potential

    arch = {"name": "equivariant-ace", "cutoff": 5.0, "options": {"channels": 8, "edge_l_max": 2}, "species": [1, 6, 8],
            "e0s": {1: -13.6, 6: -1029.0, 8: -2041.0}, "scale": 1.0, "shift": 0.0, "zbl": False,
            "direct_forces": False, "vector_heads": ()}
    torch.manual_seed(3)
    potential = build_potential(arch)
    save_model(potential, arch, tmp_path / "new.pt")
    payload = torch.load(tmp_path / "new.pt", weights_only=False)
    assert payload["architecture"]["options"]["edge_l_max"] == 2
    del payload["architecture"]["options"]["edge_l_max"]  # what format 1 wrote
    payload["format_version"] = 1
    torch.save(payload, tmp_path / "old.pt")
    old, new = load_model(tmp_path / "old.pt"), load_model(tmp_path / "new.pt")
    assert old.backbone.edge_l_max == 2
    for a, b in zip(old.state_dict().values(), new.state_dict().values()):
        assert torch.equal(a, b)


def test_model_file_keeps_its_model_when_a_default_changes(tmp_path, monkeypatch):
    """Files record every option as resolved; a later default change must not alter what an old file rebuilds."""
    import inspect

    from forcefit.model_file import ModelFileError, load_model, save_model
    from forcefit.models.build import build_potential

    arch = {"name": "equivariant-ace", "cutoff": 5.0, "options": {"channels": 8}, "species": [1, 6, 8],
            "e0s": {1: -13.6, 6: -1029.0, 8: -2041.0}, "scale": 1.0, "shift": 0.0, "zbl": False,
            "direct_forces": False, "vector_heads": ()}
    torch.manual_seed(4)
    potential = build_potential(arch)
    save_model(potential, arch, tmp_path / "m.pt")
    options = torch.load(tmp_path / "m.pt", weights_only=False)["architecture"]["options"]
    signature = inspect.signature(EquivariantACE.__init__).parameters
    assert set(options) == set(signature) - {"self", "num_species", "cutoff", "vector_heads", "energy_heads"}
    assert options["channels"] == 8 and options["edge_l_max"] == 3 and options["num_layers"] == 2  # None resolved

    defaults = list(EquivariantACE.__init__.__defaults__)
    names = [n for n, p in signature.items() if p.default is not p.empty]
    for name, value in (("num_layers", 1), ("edge_l_max", 2), ("num_bessel", 4)):
        defaults[names.index(name)] = value
    monkeypatch.setattr(EquivariantACE.__init__, "__defaults__", tuple(defaults))
    assert EquivariantACE(num_species=3).edge_l_max == 2  # the default did change
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.backbone.edge_l_max == 3 and len(loaded.backbone.layers) == 2
    for a, b in zip(loaded.state_dict().values(), potential.state_dict().values()):
        assert torch.equal(a, b)

    payload = torch.load(tmp_path / "m.pt", weights_only=False)
    payload["architecture"]["options"]["attention_heads"] = 4  # an option from a newer forcefit
    torch.save(payload, tmp_path / "newer.pt")
    with pytest.raises(ModelFileError, match="newer.pt: cannot rebuild.*attention_heads"):
        load_model(tmp_path / "newer.pt")
