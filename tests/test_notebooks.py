"""Smoke runs of the numbered notebooks: each one executes headless through papermill with the small
CI parameters of ``notebook_runner.CI_PARAMETERS`` (tiny random encoder, a few dozen examples, one
epoch, output into a temporary folder), then its key-numbers JSON is checked: shapes, ranges, and
agreement with the package's own functions."""

from __future__ import annotations

import math
import os
import time

import pytest

from tasktransfer_utils.notebook_runner import (NOTEBOOKS_DIR, ci_parameters, execute_notebook, list_notebooks,
                                                load_key_numbers)

pytestmark = pytest.mark.notebook

CELL_TIMEOUT_S = 300
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def _offline_env():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MPLBACKEND", "Agg")
    yield
    if TIMINGS:
        print("\nnotebook wall times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in TIMINGS.items()))


def run_notebook(stem: str, tmp_path, encoder: str | None = None, **extra):
    """Execute notebooks/<stem>.ipynb with CI parameters under tmp_path; return (key numbers, params)."""
    path = NOTEBOOKS_DIR / f"{stem}.ipynb"
    if not path.exists():
        pytest.fail(f"{path} missing")
    params = ci_parameters(path, tmp_path, encoder=encoder, **extra)
    start = time.perf_counter()
    execute_notebook(path, params, output_path=tmp_path / "executed" / path.name, timeout_s=CELL_TIMEOUT_S)
    TIMINGS[stem] = time.perf_counter() - start
    return load_key_numbers(params["output_dir"], stem), params


def _figures_exist(numbers, params):
    for name in numbers["figures"]:
        path = os.path.join(params["output_dir"], name)
        assert os.path.getsize(path) > 5000, f"{path} missing or empty"


def test_every_notebook_is_covered_here():
    tested = {name[len("test_"):] for name in globals() if name.startswith("test_0")}
    missing = {p.stem for p in list_notebooks()} - tested
    assert not missing, f"notebooks without a smoke test: {sorted(missing)}"


def test_01_explore_tasks(tmp_path):
    from tasktransfer_utils.data.loaders import task_size
    from tasktransfer_utils.data.tasks import SUITES

    numbers, params = run_notebook("01_explore_tasks", tmp_path)
    assert numbers["n_paper_tasks"] == 33
    assert numbers["paper_tasks_per_class"] == {"CR": 11, "QA": 11, "SL": 11}
    assert numbers["suite_tasks"] == list(SUITES[params["suite"]])
    for name, n in numbers["train_examples"].items():
        assert n == task_size(name), name  # agrees with the DataSize count the package uses
        assert numbers["validation_examples"][name] > 0
    lim = numbers["limited"]
    assert lim["limited_size"] == min(1000, lim["full_size"])
    assert lim["same_seed_identical"] is True
    assert 0.0 < lim["overlap_with_next_seed"] < 1.0
    _figures_exist(numbers, params)


def test_02_finetune_and_transfer(tmp_path, tiny_encoder_dir):
    from tasktransfer_utils.selection.evaluation import mean_transfer
    from tasktransfer_utils.training.fine_tuning import RunResult

    numbers, params = run_notebook("02_finetune_and_transfer", tmp_path, encoder=tiny_encoder_dir)
    n_train = params["max_train_examples"]
    assert numbers["encoder"] == tiny_encoder_dir
    assert numbers["from_study_records"] == []  # recompute: every run trained here
    assert numbers["train_examples"]["target"] == n_train
    assert set(numbers["epochs"].values()) == {params["num_epochs"]}
    kinds = sorted(v["kind"] for v in numbers["sources"].values())
    assert kinds == ["in-class", "out-of-class"]
    base = numbers["baseline_score"]
    assert -1.0 <= base <= 1.0
    rows = [{"source": None, "target": numbers["target"], "regime": numbers["regime"], "seed": 0, "score": base}]
    for source, v in numbers["sources"].items():
        assert -1.0 <= v["transfer_score"] <= 1.0
        assert v["rel_gain"] == pytest.approx((v["transfer_score"] - base) / abs(base))
        rows.append({"source": source, "target": numbers["target"], "regime": numbers["regime"], "seed": 0,
                     "score": v["transfer_score"]})
    import pandas as pd

    gains = mean_transfer(pd.DataFrame(rows)).set_index("source")["rel_gain"]
    for source, v in numbers["sources"].items():
        assert gains[source] == pytest.approx(v["rel_gain"])
    # the stored run results are what the notebook reported
    runs = {RunResult.from_json(p).init_from: RunResult.from_json(p)
            for p in (tmp_path / "work").glob(f"*to_{numbers['target']}*/result.json")}
    assert len(runs) == 2
    assert sorted(r.score for r in runs.values()) == pytest.approx(
        sorted(v["transfer_score"] for v in numbers["sources"].values()))
    for label, scores in numbers["epoch_scores"].items():
        assert len(scores) == params["num_epochs"] and all(math.isfinite(s) for s in scores)
    _figures_exist(numbers, params)


def test_04_compute_textemb(tmp_path, tiny_encoder_dir):
    import numpy as np

    from tasktransfer_utils.embeddings.store import EmbeddingLibrary
    from tasktransfer_utils.embeddings.similarity import cosine_similarity_matrix

    numbers, params = run_notebook("04_compute_textemb", tmp_path, encoder=tiny_encoder_dir)
    tasks = numbers["tasks"]
    assert tasks == params["tasks"]
    assert numbers["dim"] == 32  # the tiny encoder's hidden size
    assert all(0 < n for n in numbers["num_examples"].values())
    assert all(n <= params["max_examples"] for name, n in numbers["num_examples"].items() if name != "SQuAD-1")
    sim = np.array([[numbers["similarity"][a][b] for b in tasks] for a in tasks])
    assert sim.shape == (len(tasks), len(tasks))
    assert np.allclose(np.diag(sim), 1.0) and np.allclose(sim, sim.T) and (np.abs(sim) <= 1 + 1e-9).all()
    # agreement with the package: the stored embeddings give the same matrix
    stored = EmbeddingLibrary(params["embeddings_dir"]).load(method="TextEmb")
    ref = cosine_similarity_matrix(stored).loc[tasks, tasks].to_numpy()
    assert np.allclose(sim, ref, atol=1e-12)
    for t in tasks:  # nearest = argmax of the off-diagonal row
        row = {b: numbers["similarity"][t][b] for b in tasks if b != t}
        assert numbers["nearest"][t] == max(row, key=row.get)
    assert 0.0 <= numbers["nearest_in_class_share"] <= 1.0
    _figures_exist(numbers, params)


def test_05_compute_taskemb(tmp_path, tiny_encoder_dir):
    import numpy as np

    from tasktransfer_utils.embeddings.store import EmbeddingLibrary
    from tasktransfer_utils.embeddings.similarity import cosine_similarity_matrix

    numbers, params = run_notebook("05_compute_taskemb", tmp_path, encoder=tiny_encoder_dir)
    tasks = numbers["tasks"]
    assert tasks == params["tasks"] and numbers["estimators"] == ["paper", "empirical"]
    dims = numbers["component_dims"]
    assert dims["encoder.layer.1.layer_output"] == 32 and dims["encoder.layer.0.multihead_output"] == 32
    assert numbers["map_component"] == "encoder.layer.1.layer_output"  # last layer of the 2-layer encoder
    assert "cls_output" not in numbers["shared_components"]  # POS-PTB (SL) has none
    assert numbers["noise_components"] == []  # no QA task, and no key bias among the activation components
    lib = EmbeddingLibrary(params["embeddings_dir"])
    for est in numbers["estimators"]:
        sim = np.array([[numbers["similarity"][est][a][b] for b in tasks] for a in tasks])
        assert np.allclose(np.diag(sim), 1.0) and np.allclose(sim, sim.T)
        stored = lib.load(method="TaskEmb", estimator=est, component=numbers["map_component"])
        ref = cosine_similarity_matrix(stored).loc[tasks, tasks].to_numpy()
        assert np.allclose(sim, ref, atol=1e-12)
    for row in numbers["per_component"]:
        assert -1.0 <= row["spearman(paper, empirical)"] <= 1.0
        assert 0.0 <= row["nearest in-class (paper)"] <= 1.0
    assert all(0 < n <= params["max_examples"] for n in numbers["num_examples"].values())
    _figures_exist(numbers, params)


def test_07_choose_source_for_your_task(tmp_path, tiny_encoder_dir, data_dir):
    from tasktransfer_utils.embeddings.store import EmbeddingLibrary
    from tasktransfer_utils.data.loaders import load_task
    from tasktransfer_utils.practitioner.rank import rank_sources
    from tasktransfer_utils.embeddings.textemb import compute_textemb

    library = EmbeddingLibrary(tmp_path / "embeddings")  # the source library the notebook reads
    for name in ("SST-2", "MRPC", "RTE", "SQuAD-1", "POS-PTB"):
        library.add([compute_textemb(load_task(name), encoder=tiny_encoder_dir, max_examples=16)])
    numbers, params = run_notebook("07_choose_source_for_your_task", tmp_path)
    assert numbers["target_class"] == "CR" and numbers["num_examples"] == 277  # RTE dev
    ranking = numbers["ranking"]
    assert [r["source"] for r in ranking if r["source"] == "RTE"] == []  # excluded
    assert sorted(r["source"] for r in ranking) == ["MRPC", "POS-PTB", "SQuAD-1", "SST-2"]
    assert [r["rank"] for r in ranking] == [1, 2, 3, 4]
    scores = [r["score"] for r in ranking]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    # the key numbers name the data file without this machine's path
    assert numbers["target_file"] == "$TASKTRANSFER_DATA_DIR/glue/RTE/dev.tsv"
    direct = rank_sources(data_dir / "glue" / "RTE" / "dev.tsv", library, method="TextEmb", exclude=["RTE"],
                          max_examples=params["max_examples"])
    assert list(direct["source"]) == [r["source"] for r in ranking]
    assert list(direct["score"]) == pytest.approx(scores, abs=1e-9)
    _figures_exist(numbers, params)


@pytest.fixture(scope="module")
def study_tmp(tmp_path_factory):
    """One folder for notebooks 3 and 6: the CI study runs once (in notebook 3) and is reused by 6."""
    return tmp_path_factory.mktemp("ci_study")


def test_03_run_transfer_study(study_tmp, tiny_encoder_dir):
    import pandas as pd

    from tasktransfer_utils.study.config import load_study_config
    from tasktransfer_utils.selection.evaluation import mean_transfer

    numbers, params = run_notebook("03_run_transfer_study", study_tmp, encoder=tiny_encoder_dir)
    cfg = load_study_config(params["study_config"])
    n = len(cfg.tasks)
    assert numbers["tasks"] == cfg.tasks and numbers["regimes"] == ["LIMITED→LIMITED"]
    assert numbers["n_baselines"] == n and numbers["n_transfers"] == n * (n - 1)
    results = pd.read_csv(cfg.results_dir / "transfer_results.csv")
    assert len(results) == numbers["n_runs"]
    assert set(results["train_examples"]) == {cfg.limited_size}
    gains = mean_transfer(results)
    regime = "LIMITED→LIMITED"
    got = numbers["rel_gain"][regime]
    assert len(got) == n * (n - 1)
    for r in gains.itertuples():
        assert got[f"{r.source}->{r.target}"] == pytest.approx(r.rel_gain)
        assert numbers["baseline_score"][regime][r.target] == pytest.approx(r.baseline_score)
    for target, best in numbers["best_source"][regime].items():
        of_target = {k.split("->")[0]: v for k, v in got.items() if k.endswith(f"->{target}")}
        assert best["rel_gain"] == pytest.approx(max(of_target.values()))
    assert numbers["share_positive"][regime] == pytest.approx(float((gains["rel_gain"] > 0).mean()))
    assert numbers["mean_rel_gain"][regime] == pytest.approx(float(gains["rel_gain"].mean()))
    assert numbers["complete_targets"] == {regime: cfg.targets}
    assert numbers["figures"][0] == "fig2_target_scores_LIMITED-LIMITED.png"  # one Figure 2 per regime
    assert not any(f.startswith("regime_gains_") for f in numbers["figures"])  # one regime: nothing to pair
    choice = numbers["taskemb_choice"]  # TaskEmb's first-ranked source, marked on Figure 2
    assert sorted(k.split("|")[1] for k in choice) == sorted(cfg.targets)
    assert all(s != k.split("|")[1] and s in cfg.tasks for k, s in choice.items())
    _figures_exist(numbers, params)


def test_06_evaluate_source_selection(study_tmp, tiny_encoder_dir):
    import pandas as pd

    from tasktransfer_utils.selection.evaluation import (LOTO_COMPONENT_METHOD, evaluate_rankers, leave_one_target_out,
                                                         mean_transfer)
    from tasktransfer_utils.study.config import load_study_config
    from tasktransfer_utils.study.plan import plan_for
    from tasktransfer_utils.study.report import selection_rankers

    numbers, params = run_notebook("06_evaluate_source_selection", study_tmp, encoder=tiny_encoder_dir)
    cfg = load_study_config(params["study_config"])
    assert numbers["targets"] == sorted(cfg.tasks)
    for m in ("TextEmb", "TaskEmb", "TextEmb+TaskEmb", "DataSize", "CurveGrad", "Random"):
        assert m in numbers["methods"], m
    # the package's own evaluation, recomputed here from the records, gives the notebook's numbers
    results = pd.read_csv(cfg.results_dir / "transfer_results.csv")
    rankers = selection_rankers(plan_for(cfg), results)  # regime -> method -> ranker
    per_target = pd.concat([evaluate_rankers(results[results["regime"] == regime], by_method, per_seed=False)
                            for regime, by_method in rankers.items()], ignore_index=True)
    components = sorted(m for m in per_target["method"].unique() if m.startswith("TaskEmb[") and m.endswith("]"))
    loto, _ = leave_one_target_out(per_target, components)
    assert not loto.empty and set(loto["method"]) == {LOTO_COMPONENT_METHOD}
    per_target = pd.concat([per_target, loto], ignore_index=True)
    assert len(per_target) == len(numbers["per_target"])
    for r in per_target.itertuples(index=False):
        got = numbers["per_target"][f"{r.method}|{r.regime}|{r.candidate_set}|{r.target}"]
        assert got["rho"] == pytest.approx(r.rho)
        assert got["ndcg"] == pytest.approx(r.ndcg)
        assert 1.0 <= got["rho"] <= got["n_candidates"] and 0.0 <= got["ndcg"] <= 1.0 + 1e-12
    for row in numbers["random_check"]:  # exact expectation vs simulation
        assert abs(row["rho_exact"] - row["rho_sampled"]) <= 4 * row["rho_se"] + 1e-9
    assert numbers["summary"], "no summary cells"
    spread = {r["target"]: r for r in numbers["target_spread"] if r["candidate_set"] == "all-class"}
    assert sorted(spread) == numbers["targets"]
    for target, row in spread.items():
        scores = results[(results["target"] == target) & results["source"].notna()]["score"]
        assert row["spread"] == pytest.approx(scores.max() - scores.min(), abs=1e-6)
    # the paper's claims: five rows for the one regime, each with a verdict by the documented rules
    assert numbers["targets_by_regime"] == {"LIMITED→LIMITED": sorted(cfg.tasks)}
    claims = pd.DataFrame(numbers["claims"])
    assert list(claims["claim"]) == list("abcde") and (claims["targets"] == len(cfg.tasks)).all()
    assert claims["verdict"].str.match(r"^(reproduced|not reproduced|inconclusive: .+)$").all()
    summary = {r["pairs"]: r for r in numbers["transfer_summary"]}
    gains = mean_transfer(results)
    assert summary["all"]["mean_rel_gain"] == pytest.approx(gains["rel_gain"].mean())
    assert summary["all"]["n_positive"] == int((gains["rel_gain"] > 0).sum())
    _figures_exist(numbers, params)


def test_08_make_all_figures(tmp_path):
    numbers, params = run_notebook("08_make_all_figures", tmp_path)
    assert numbers["ci"] is True and numbers["notebooks"] == params["notebooks"] == ["01_explore_tasks"]
    assert numbers["figures_by_notebook"]["01_explore_tasks"] == ["tab1_task_sizes.png"]
    inner = load_key_numbers(params["output_dir"], "01_explore_tasks")  # written by the inner run
    assert inner["figures"] == ["tab1_task_sizes.png"] and inner["n_paper_tasks"] == 33
    assert numbers["seconds"]["01_explore_tasks"] > 0
    _figures_exist(numbers, params)
