"""key_numbers: each notebook's dictionary, built from the committed offline study the way the notebook's
default run builds it, equals the committed ``figures/<notebook>_key_numbers.json`` (written by that run),
and its values agree with the records and embeddings read by hand."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tasktransfer_utils import key_numbers
from tasktransfer_utils.study import selection_analysis as sa
from tasktransfer_utils.selection import embedding_analysis as ea
from tasktransfer_utils.embeddings.store import EmbeddingLibrary
from tasktransfer_utils.notebook_runner import _jsonable, portable_paths
from tasktransfer_utils.paths import CONFIGS_DIR, FIGURES_DIR, RESULTS_DIR, default_encoder
from tasktransfer_utils.data.regimes import get_transfer_regime
from tasktransfer_utils.study.config import load_study_config
from tasktransfer_utils.study.transfer_runs import read_stored_runs, transfer_job_ids, transfer_runs
from tasktransfer_utils.data.tasks import SUITES


def _as_saved(numbers):
    """What save_key_numbers writes, read back."""
    return json.loads(json.dumps(portable_paths(_jsonable(dict(numbers))), sort_keys=True))


def _committed(stem):
    return json.loads((FIGURES_DIR / f"{stem}_key_numbers.json").read_text())


def test_finetune_and_transfer_from_the_study_records(tmp_path):
    regime = get_transfer_regime("LIMITED→LIMITED")
    sources = ["MRPC", "POS-PTB"]  # notebook 2's defaults
    records = load_study_config(CONFIGS_DIR / "offline_study.yaml").results_dir / "records"
    ids = transfer_job_ids("RTE", sources, regime, 0)
    stored = read_stored_runs(records, ids, default_encoder())
    runs = transfer_runs("RTE", sources, regime, encoder=default_encoder(), stored=stored, runs_dir=tmp_path)
    numbers = key_numbers.finetune_and_transfer(runs, encoder=default_encoder(),
                                                figures=["fig_transfer_epoch_curves.png"])
    assert _as_saved(numbers) == _committed("02_finetune_and_transfer")
    # by hand from the record files
    score = {k: json.loads((records / f"{v}.json").read_text())["result"]["score"] for k, v in ids.items()}
    assert numbers["baseline_score"] == score["alone"]
    for s in sources:
        assert numbers["sources"][s]["transfer_score"] == score[f"{s}→RTE"]
        assert numbers["sources"][s]["source_score"] == score[s]
        assert numbers["sources"][s]["rel_gain"] == pytest.approx((score[f"{s}→RTE"] - score["alone"]) / score["alone"])
    assert numbers["from_study_records"] == sorted(ids)


def test_compute_taskemb_from_the_offline_library():
    library = EmbeddingLibrary(RESULTS_DIR / "offline_study" / "embeddings")
    tasks = list(SUITES["offline-small"])
    encoder = default_encoder()
    taskemb, _ = ea.load_or_compute_taskemb(tasks, ["paper", "empirical"], library, encoder=encoder, regime="LIMITED",
                                            labels="gold", seed=0, qa_loss="masked", recompute=False, components=[],
                                            runs_dir="unused")
    estimators = ea.estimators_with_every_task(taskemb, tasks, ["paper", "empirical"])
    noise, shared = ea.noise_components(taskemb), ea.shared_components(taskemb)
    component = ea.choose_map_component(shared, noise)
    similarity = ea.similarity_by_estimator(taskemb, tasks, estimators, component)
    per_component = ea.per_component_table(taskemb, tasks, estimators, shared)
    qa_loss_moves = ea.qa_loss_comparison(library, tasks, encoder=encoder, regime="LIMITED", seed=0, labels="gold")
    variant_table = sa.taskemb_variant_table(pd.read_csv(RESULTS_DIR / "offline_study" / "evaluation" / "summary.csv"))
    assert estimators == ["paper", "empirical"]  # the study stores both estimators for its 12 LIMITED tasks
    assert set(qa_loss_moves["task"]) == {"SQuAD-1", "SQuAD-2", "BoolQ", "FAQ-TR"}  # and both QA losses
    numbers = key_numbers.compute_taskemb(
        taskemb, encoder=encoder, regime="LIMITED", labels="gold", qa_loss="masked", estimators=estimators,
        task_names=tasks, map_component=component, shared=shared, noise=noise, similarity=similarity,
        per_component=per_component, embeddings_dir=library.root, qa_loss_moves=qa_loss_moves,
        variant_table=variant_table,
        figures=["taskemb_similarity.png", "fig3b_taskemb_task_space.png", "taskemb_estimators_agreement.png"])
    assert _as_saved(numbers) == _committed("05_compute_taskemb")
    a, b = taskemb["SST-2", "paper"][component].vector, taskemb["NER", "paper"][component].vector
    a, b = a.astype(np.float64), b.astype(np.float64)
    assert numbers["similarity"]["paper"]["SST-2"]["NER"] == pytest.approx(a @ b / np.sqrt((a @ a) * (b @ b)), abs=1e-6)
    assert numbers["num_examples"]["SST-2"] == taskemb["SST-2", "paper"][component].meta["num_examples"]


def test_evaluate_source_selection_from_the_committed_tables():
    """Notebook 6's numbers from the evaluation tables ``study.report`` wrote (committed), the example ranking
    and the Random check stubbed: those parts are checked by hand, the rest against the committed file."""
    from types import SimpleNamespace

    cfg = load_study_config(CONFIGS_DIR / "offline_study.yaml")
    ev = cfg.results_dir / "evaluation"
    per_target, summary = pd.read_csv(ev / "per_target.csv"), pd.read_csv(ev / "summary.csv")
    committed = _committed("06_evaluate_source_selection")
    regimes = sorted(per_target["regime"].unique())
    targets = sorted(per_target["target"].unique())
    tables = sa.metric_tables(summary, ["rho", "ndcg", "regret@1", "regret@3"])
    check = pd.DataFrame(committed["random_check"])
    ex = committed["example"]
    example = SimpleNamespace(regime=ex["regime"], target=ex["target"], method=ex["method"],
                              ranking=pd.DataFrame(ex["ranking"]), truth=pd.Series(ex["rel_gain"]))
    numbers = key_numbers.evaluate_source_selection(
        cfg, regimes=regimes, targets=targets, targets_by_regime=sa.evaluated_targets(per_target, cfg.regimes),
        claims=pd.read_csv(ev / "claims.csv"), transfer_summary=pd.read_csv(ev / "transfer_summary.csv"),
        methods=list(dict.fromkeys(per_target["method"])), metrics=list(tables), summary=summary,
        per_target=per_target, random_check=check, paired=sa.headline_comparisons(per_target),
        spread=pd.read_csv(ev / "target_spread.csv"), example=example, figures=committed["figures"])
    saved = _as_saved(numbers)
    for key in committed:
        if key in ("summary", "per_target", "transfer_summary", "target_spread", "claims", "paired"):
            assert saved[key].keys() == committed[key].keys() if isinstance(saved[key], dict) else \
                len(saved[key]) == len(committed[key]), key
        else:
            assert saved[key] == committed[key], key
    # floats went through a CSV (6 significant digits) here, through memory in the notebook
    for cell, value in committed["summary"].items():
        assert saved["summary"][cell] == pytest.approx(value, rel=1e-5, abs=1e-9), cell
    for cell, value in committed["per_target"].items():
        assert saved["per_target"][cell] == pytest.approx(value, rel=1e-5, abs=1e-9), cell
    # a summary cell by hand: the mean of the seed-averaged per-target ρ of TextEmb over all targets
    pt = per_target[per_target["seed"].isna() & (per_target["method"] == "TextEmb")
                    & (per_target["regime"] == regimes[0]) & (per_target["candidate_set"] == "all-class")]
    assert saved["summary"][f"TextEmb|{regimes[0]}|all-class|all|rho"] == pytest.approx(pt["rho"].mean(), rel=1e-5)


def test_run_transfer_study_from_the_committed_results():
    """Notebook 3's numbers from the committed transfer results, TaskEmb's choices and the source sizes taken
    from the committed file (they need the embeddings and the data; checked by the notebook's own test)."""
    from tasktransfer_utils.study import transfer_analysis
    from tasktransfer_utils.selection.evaluation import mean_transfer
    from tasktransfer_utils.study.report import complete_targets_by_regime

    cfg = load_study_config(CONFIGS_DIR / "offline_study.yaml")
    committed = _committed("03_run_transfer_study")
    results = pd.read_csv(cfg.results_dir / "transfer_results.csv")
    gains = mean_transfer(results)
    regimes = list(dict.fromkeys(gains["regime"]))
    choice = {tuple(k.split("|")): v for k, v in committed["taskemb_choice"].items()}
    numbers = key_numbers.run_transfer_study(cfg, results=results, gains=gains, regimes=regimes,
                                             complete_targets=complete_targets_by_regime(cfg, results),
                                             taskemb_choice=choice, source_sizes=committed["source_sizes"],
                                             figures=committed["figures"])
    assert _as_saved(numbers) == committed
    # by hand: the share of helpful pairs and each target's best source, one regime
    regime = regimes[0]
    g = gains[gains["regime"] == regime]
    assert numbers["share_positive"][regime] == pytest.approx(sum(v > 0 for v in g["rel_gain"]) / len(g))
    for target, grp in g.groupby("target"):
        tied = grp[grp["rel_gain"] == grp["rel_gain"].max()]
        top = {"source": min(tied["source"])}  # ties go to the first name in alphabetical order
        assert numbers["best_source"][regime][target]["source"] == top["source"]
    assert transfer_analysis.best_sources(gains)["in_class"].dtype == bool


def test_compute_textemb_from_the_offline_library():
    from tasktransfer_utils.selection import embedding_analysis as ea
    from tasktransfer_utils.embeddings.similarity import cosine_similarity_matrix

    library = EmbeddingLibrary(RESULTS_DIR / "offline_study" / "embeddings")
    tasks = list(SUITES["offline-small"])
    encoder = default_encoder()
    embeddings = ea.load_or_compute_textemb(tasks, library, encoder=encoder, regime="LIMITED", seed=0,
                                            max_examples=None, recompute=False, log=lambda line: None)
    similarity = cosine_similarity_matrix(list(embeddings.values()))
    nearest = ea.nearest_sources({n: embeddings[n].vector for n in tasks}, k=3)
    numbers = key_numbers.compute_textemb(embeddings, encoder=encoder, regime="LIMITED", similarity=similarity,
                                          nearest=nearest, embeddings_dir=library.root,
                                          figures=["textemb_similarity.png", "fig3a_textemb_task_space.png"])
    assert _as_saved(numbers) == _committed("04_compute_textemb")
    for t in tasks:  # the nearest task is the argmax of the similarity row, by hand
        row = {b: numbers["similarity"][t][b] for b in tasks if b != t}
        assert numbers["nearest"][t] == max(row, key=row.get)


def test_explore_tasks_numbers(data_dir):
    from tasktransfer_utils.data import overview as data_overview
    from tasktransfer_utils.data.loaders import load_task

    data = {n: load_task(n, seed=0) for n in ("RTE", "MRPC")}
    sizes = data_overview.task_sizes_table(data)
    check = data_overview.limited_sample_check("RTE", data["RTE"].train, 0, 100)
    numbers = key_numbers.explore_tasks(paper=data_overview.paper_tasks_table(), suite="mine", sizes=sizes,
                                        limited=check, figures=["f.png"])
    assert numbers["n_paper_tasks"] == 33 and numbers["paper_tasks_per_class"] == {"CR": 11, "QA": 11, "SL": 11}
    assert numbers["suite_tasks"] == ["RTE", "MRPC"] and numbers["suite"] == "mine"
    assert numbers["train_examples"] == {n: len(d.train) for n, d in data.items()}
    assert numbers["validation_examples"] == {n: len(d.validation) for n, d in data.items()}
    assert numbers["limited"] == {"task": "RTE", "seed": 0, "full_size": len(data["RTE"].train), "limited_size": 100,
                                  "same_seed_identical": True, "overlap_with_next_seed": check.overlap_with_next_seed}
    committed = _committed("01_explore_tasks")
    assert numbers["n_paper_tasks_local"] == committed["n_paper_tasks_local"]
    assert numbers["train_examples"]["RTE"] == committed["train_examples"]["RTE"]
