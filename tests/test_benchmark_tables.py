"""The benchmark scripts' bookkeeping: which ASTEROID rows the force-centric comparison stands beside."""
import json
from pathlib import Path

import pytest

from conftest import BENCHMARKS, load_benchmark


@pytest.fixture(scope="module")
def force_centric():
    return load_benchmark("force_centric")


def _asteroid_file(folder: Path, name: str, rows: dict, seed: int = 0, **settings) -> None:
    base = {"pretrain_minutes": 6.0, "finetune_mode": "all", "gamma": 1.0, "energy": "reference", "accurate_minutes": 10.0}
    report = [{"recipe": k, "forces_mae_meV_per_A": v, "label_cpu_seconds": 100.0} for k, v in rows.items()]
    result = {"seed": seed, "n_accurate": 50, "costs": {"accurate": {"dft_cpu_s_per_label": 7.0, "valid_labels": 25}},
              "report": {"rows": report}}
    (folder / name).write_text(json.dumps({"settings": {**base, **settings}, "results": [result]}))


def test_every_asteroid_setting_is_a_row_and_the_plot_takes_each_recipes_best(force_centric, tmp_path):
    """The 6-minute base file sorts first; before, its 'asteroid' row hid the 30-minute ones."""
    _asteroid_file(tmp_path, "asteroid_ethanol.json", {"accurate-only": 34.0, "asteroid": 26.0, "pretrain-finetune": 25.0, "delta": 17.0})
    _asteroid_file(tmp_path, "asteroid_ethanol_pretrain30.json", {"asteroid": 18.8, "pretrain-finetune": 19.6}, pretrain_minutes=30.0)
    _asteroid_file(tmp_path, "asteroid_ethanol_pretrain30_backbone_lr.json", {"asteroid": 16.4, "pretrain-finetune": 16.5},
                   pretrain_minutes=30.0, finetune_mode="backbone-lr=0.1", variant="backbone_lr")
    _asteroid_file(tmp_path, "asteroid_ethanol_theta0.json", {"asteroid": 25.5, "pretrain-finetune": 25.0}, energy="theta0",
                   variant="theta0")  # its pretrain-finetune row is the base run's, taken over
    _asteroid_file(tmp_path, "asteroid_ethanol_seed1.json", {"asteroid": 1.0}, seed=1)
    _asteroid_file(tmp_path, "asteroid_ethanol_md5000.json", {"asteroid": 15.9}, pretrain_minutes=30.0, md_frames=5000)
    rows = force_centric.asteroid_rows("ethanol", 0, 50, 10.0, results=tmp_path)["rows"]
    assert {k: v["forces_mae_meV_per_A"] for k, v in rows.items()} == {
        "asteroid (6 min pretraining)": 26.0, "pretrain-finetune (6 min pretraining)": 25.0, "delta": 17.0,
        "asteroid (30 min pretraining)": 18.8, "pretrain-finetune (30 min pretraining)": 19.6,
        "asteroid (30 min pretraining, fine-tuning backbone-lr=0.1)": 16.4,
        "pretrain-finetune (30 min pretraining, fine-tuning backbone-lr=0.1)": 16.5,
        "asteroid (6 min pretraining, γ 1, theta0 energies)": 25.5,
        "asteroid (30 min pretraining, 5000 xTB MD frames)": 15.9}
    best = force_centric.best_per_recipe(rows)
    assert {k: v["forces_mae_meV_per_A"] for k, v in best.items()} == {
        "asteroid (30 min pretraining, 5000 xTB MD frames)": 15.9,
        "pretrain-finetune (30 min pretraining, fine-tuning backbone-lr=0.1)": 16.5, "delta": 17.0}


def test_refresh_rereads_the_asteroid_rows_without_training(force_centric, tmp_path):
    _asteroid_file(tmp_path, "asteroid_acac_pretrain30.json", {"asteroid": 13.1}, pretrain_minutes=30.0)
    arm = {"test_forces_mae_meV_per_A": 30.0}
    result = {"molecule": "acac", "seed": 0, "n_accurate": 50, "scratch": arm, "finetune": {"test_forces_mae_meV_per_A": 22.0},
              "asteroid": {"asteroid": {"recipe": "asteroid", "forces_mae_meV_per_A": 20.0, "label_cpu_seconds": 1.0}}}
    path = tmp_path / "force_centric.json"
    path.write_text(json.dumps({"settings": {"init": "a-model-file.pt", "minutes": 10.0}, "results": [result]}))
    data = force_centric.refresh_asteroid(path, results=tmp_path)
    assert data["results"][0]["asteroid"]["asteroid (30 min pretraining)"]["forces_mae_meV_per_A"] == 13.1
    assert "asteroid" not in data["results"][0]["asteroid"]
    assert data["results"][0]["costs"]["accurate_only"] == pytest.approx(7.0 * 75)
    assert json.loads(path.read_text()) == data and path.with_suffix(".png").stat().st_size > 0


def test_the_docs_default_md_frame_count_is_the_benchmarks(monkeypatch):
    """make_docs labels a run 'N xTB MD frames' only where N is not asteroid_data's default: the two must agree."""
    import os

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    # asteroid_data pins OMP_NUM_THREADS on import; undone after the test
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    import asteroid_data
    import make_docs

    assert make_docs.ASTEROID_MD_FRAMES == asteroid_data.MD_FRAMES


def test_a_continued_build_of_the_shipped_model_lists_every_pretraining_stage():
    """pretrain_shipped.py --init: the card's stages are the earlier card's (one stage if it predates them) plus the new one."""
    module = load_benchmark("pretrain_shipped")
    first = {"training": {"wall_minutes_budget": 30.0, "epochs": 5, "processes": 2, "threads": 1},
             "validation": {"forces_mae_meV_per_A": 47.5}}
    second = {"minutes": 60.0, "epochs": 9, "processes": 2, "threads": 1, "init": "organic-gfn2", "forces_mae_meV_per_A": 40.0}
    stages = module.chain_stages(first, second)
    assert [s["minutes"] for s in stages] == [30.0, 60.0] and stages[0]["forces_mae_meV_per_A"] == 47.5 and stages[0]["init"] is None
    assert stages[0]["lr"] == module.LR_DEFAULT == 5e-3  # stages recorded before --lr ran at the default peak
    third = {**second, "minutes": 15.0, "lr": 1e-3}
    chained = module.chain_stages({**first, "training": {**first["training"], "stages": stages}}, third)
    assert [(s["minutes"], s["lr"]) for s in chained] == [(30.0, 5e-3), (60.0, 5e-3), (15.0, 1e-3)]
    assert module.chain_stages(None, second) == [second]


def test_a_continued_build_trains_every_weight_from_the_earlier_one_at_the_peak_lr_asked(tmp_path):
    """pretrain_shipped.py's config: --lr sets the peak learning rate, --init the model every weight starts from."""
    from forcefit.config import build_config

    module = load_benchmark("pretrain_shipped")
    fresh = module.pretrain_config(threads=1, processes=2)
    assert "lr" not in fresh["training"] and "finetune" not in fresh and fresh["training"]["strategy"] == "ddp"
    continued = module.pretrain_config(threads=1, processes=1, init=tmp_path / "init.pt", lr=1e-3)
    assert continued["finetune"] == {"init": str(tmp_path / "init.pt"), "mode": "all", "reestimate_energy": False}
    assert "strategy" not in continued["training"]
    config = build_config(continued)
    assert config.training.lr == 1e-3 and config.finetune.mode == "all" and config.finetune.reestimate_energy is False


def test_an_md_result_of_another_model_is_never_read_back(force_centric, tmp_path):
    """A fine-tuning variant writes its own MD file; a file made for another model is refused, not reused."""
    out = tmp_path / "md_finetune_2ps.json"
    out.write_text(json.dumps({"model": str(tmp_path / "finetune" / "model.pt"), "stable_ps": [2.0]}))
    assert force_centric.md_job({"model": str(tmp_path / "finetune" / "model.pt"), "out": str(out)})["stable_ps"] == [2.0]
    with pytest.raises(SystemExit, match="MD of .*finetune/model.pt, not of .*finetune_backbone-lr=0.1/model.pt"):
        force_centric.md_job({"model": str(tmp_path / "finetune_backbone-lr=0.1" / "model.pt"), "out": str(out)})


def test_each_fine_tuning_change_gets_its_own_arm_folder_settings_and_docs_label(force_centric):
    """--finetune-mode/-lr/-readout: the variant arm's folder names every change, its config carries them, the docs say them."""
    import argparse

    make_docs = load_benchmark("make_docs")
    default = argparse.Namespace(init="organic-gfn2", finetune_mode="all", finetune_lr=None, finetune_readout="keep")
    assert force_centric.finetune_variant(default) == "" and force_centric.finetune_settings(default) == {"init": "organic-gfn2"}
    changed = argparse.Namespace(init="organic-gfn2", finetune_mode="backbone-lr=0.1", finetune_lr=0.002, finetune_readout="reinit")
    assert force_centric.finetune_variant(changed) == "_backbone-lr=0.1_lr0.002_readout-reinit"
    assert force_centric.finetune_settings(changed) == {"init": "organic-gfn2", "mode": "backbone-lr", "backbone_lr": 0.1,
                                                        "readout": "reinit"}
    card = {"training": {"wall_minutes_budget": 90.0}}
    assert make_docs.build_label({"pretraining": card, "settings": vars(default)}) == "90 min pretraining"
    assert make_docs.build_label({"pretraining": card, "settings": vars(changed)}) == (
        "90 min pretraining, fine-tuning backbone-lr=0.1, fine-tuning lr 0.002, energy readout re-initialised")
    assert [flag for _, flag, _ in make_docs.finetune_changes(vars(changed))] == [
        "--finetune-mode backbone-lr=0.1", "--finetune-lr 0.002", "--finetune-readout reinit"]


def test_maces_own_pretrain_finetune_is_a_row_against_its_dft_only_run():
    """asteroid.py --mace-finetune: the row names the cheap labels MACE pretrained on, its budget and its ratio to MACE."""
    make_docs = load_benchmark("make_docs")
    arm = lambda f, minutes: {"test_forces_mae_meV_per_A": f, "test_energy_mae_meV_per_atom": 0.5, "train_minutes": minutes}  # noqa: E731
    run = {"pretrain": arm(340.0, 30.0), "finetune": arm(24.0, 10.0), "pretrain_minutes": 30.0, "finetune_minutes": 10.0}
    r = {"molecule": "ethanol", "seed": 0, "costs": {"cheap": {"labels": 2425}}, "report": {"rows": [{"accurate_labels": 75}]},
         "mace_finetune": [{**run, "mode": "single-estimated"}, {**run, "mode": "multihead-estimated"}]}
    single, multi = (make_docs.mace_finetune_row(r, m, mace=30.0) for m in make_docs.mace_finetunes(r))
    assert single[:2] == ["ethanol", "0"] and "--foundation_model" in single[2] and "single head, E0s fitted" in single[2]
    assert "multi-head" in multi[2]
    assert single[4:8] == ["30", "75", "2425", "0"] and single[9] == "24.0" and single[11] == "0.80" and single[13] == "40.0"
    assert make_docs.mace_finetune_row(r, r["mace_finetune"][0], mace=None)[11] == "–"
    # the first result file held one run, unnamed: the least-squares single-head fine-tune
    legacy = make_docs.mace_finetunes({**r, "mace_finetune": run})
    assert [m["mode"] for m in legacy] == ["single-average"] and legacy[0]["finetune"] == run["finetune"]


def test_maces_fine_tuning_arguments_name_its_mode(tmp_path):
    """mace_baseline: no foundation model adds nothing, one adds a single-head fine-tune, replay without one is refused
    before any MACE process starts."""
    mace = load_benchmark("mace_baseline")
    assert mace.foundation_args(None, None, tmp_path, 1) == []
    single = mace.foundation_args(tmp_path / "pre.model", None, tmp_path, 1)
    assert single == [f"--foundation_model={(tmp_path / 'pre.model').resolve()}", "--multiheads_finetuning=False"]
    with pytest.raises(ValueError, match="needs a foundation_model"):
        mace.run_mace("a.xyz", "b.xyz", "c.xyz", "average", 1.0, workdir=tmp_path, replay=("a.xyz", "b.xyz"))
    asteroid = load_benchmark("asteroid")
    assert asteroid.mace_finetune_folder("single-average") == "mace_finetune"  # the first measured run's folder
    assert asteroid.mace_finetune_folder("multihead-estimated") == "mace_finetune_multihead-estimated"
    assert asteroid.MACE_FINETUNE["multihead-estimated"] == (True, "estimated")


def test_an_asteroid_fine_tuning_change_names_itself_in_both_benchmarks_labels(force_centric):
    """A fresh readout (--finetune-readout reinit) and a backbone-lr factor label the recipes that fine-tune, in the
    ASTEROID table (make_docs.recipe_label) and in the force-centric comparison (asteroid_setting_label) alike."""
    make_docs = load_benchmark("make_docs")
    settings = {"pretrain_minutes": 30.0, "finetune_mode": "backbone-lr=0.03", "finetune_readout": "reinit",
                "gamma": 1.0, "energy": "reference"}
    assert make_docs.recipe_label({"settings": settings}, "asteroid") == (
        "asteroid (fine-tuning backbone-lr=0.03, energy readout re-initialised)")
    assert make_docs.recipe_label({"settings": settings}, "accurate-only") == "accurate-only"
    assert force_centric.asteroid_setting_label("pretrain-finetune", settings) == (
        "pretrain-finetune (30 min pretraining, fine-tuning backbone-lr=0.03, energy readout re-initialised)")
    assert make_docs.recipe_label({"settings": {**settings, "finetune_mode": "all", "finetune_readout": "keep"}},
                                  "asteroid") == "asteroid"


def test_maces_logged_validations_are_recorded_and_the_docs_quote_them(tmp_path):
    """The docs' account of how MACE's fine-tunes started comes from the validations its log shows, recorded in the
    result (mace_baseline.validation_history), not from numbers typed into make_docs."""
    mace, make_docs = load_benchmark("mace_baseline"), load_benchmark("make_docs")
    log = tmp_path / "train.log"
    log.write_text(
        "2026-12-07 21:31:16.911 INFO: Initial: head: pt_head, loss=0.1, RMSE_E_per_atom=    0.98 meV, RMSE_F=   25.69 meV / A\n"
        "2026-12-07 21:31:16.911 INFO: Initial: head: Default, loss=37563.0, RMSE_E_per_atom=433357.97 meV, RMSE_F=  402.37 meV / A\n"
        "some other line\n"
        "2026-12-07 21:31:19.870 INFO: Epoch 0: head: Default, loss=3.6e4, RMSE_E_per_atom=427302.37 meV, RMSE_F= 2637.70 meV / A, "
        "RMSE_stress=None meV / A^3\n"
        "2026-12-07 21:31:22.829 INFO: Epoch 1: head: Default, loss=3.5e4, RMSE_E_per_atom=418515.05 meV, RMSE_F= 5576.85 meV / A\n"
        "2026-12-07 21:31:25.829 INFO: Epoch 2: head: Default, loss=3.5e4, RMSE_E_per_atom=418515.05 meV, RMSE_F= 9999.00 meV / A\n")
    seen = mace.validation_history(log, epochs=2)
    assert [(v["epoch"], v["head"]) for v in seen] == [(None, "pt_head"), (None, "Default"), (0, "Default"), (1, "Default")]
    assert seen[1]["energy_rmse_meV_per_atom"] == 433357.97 and seen[3]["forces_rmse_meV_per_A"] == 5576.85
    assert mace.validation_history(tmp_path / "absent.log") == []
    run = {"molecule": "ethanol", "seed": 0, "mace_finetune": [{
        "mode": "single-average", "pretrain_minutes": 6.0, "finetune_minutes": 10.0,
        "pretrain": {"epochs": 3, "n_train": 2304}, "finetune": {"epochs": 214, "first_validations": seen}}]}
    assert make_docs.mace_finetune_starts([("f.json", run)]) == (
        "`single-average` (ethanol, seed 0): 433 eV/atom and 402 meV/Å before training, 2638-5577 meV/Å over the first 2 "
        "epochs; 214 epochs in 10 minutes (its 6-minute pretraining on 2304 xTB frames made 3)")


def test_a_seed_measured_in_two_sittings_is_two_runs_in_the_summary():
    """make_docs.seed_mean: the same seed rerun in another workdir (another sitting) joins the mean and is named twice;
    before, the later file silently replaced the earlier one's value."""
    make_docs = load_benchmark("make_docs")
    assert make_docs.seed_mean({(0, "/a"): 0.5}) == (0.5, "0.50×")
    mean, label = make_docs.seed_mean({(0, "/a"): 0.46, (0, "/b"): 0.52})
    assert mean == pytest.approx(0.49) and label == "0.49× (mean of 2 runs, seeds 0, 0: 0.46, 0.52)"
    assert make_docs.seed_mean({(1, "/a"): 0.4, (0, "/a"): 0.6})[1] == "0.50× (mean of seeds 0, 1: 0.60, 0.40)"
