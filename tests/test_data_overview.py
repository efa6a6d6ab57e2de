"""data_overview: the task tables and the LIMITED sample check of notebook 1, against the task registry,
the loaded splits and regimes.limited_indices."""

from __future__ import annotations

import datasets
import pytest

from tasktransfer_utils.data import overview as data_overview
from tasktransfer_utils.data.regimes import limited_indices
from tasktransfer_utils.data.tasks import list_tasks


def test_paper_tasks_table():
    table = data_overview.paper_tasks_table()
    assert len(table) == 33 and table.groupby("class").size().to_dict() == {"CR": 11, "QA": 11, "SL": 11}
    assert list(table["task"]) == [t.name for t in list_tasks(paper_only=True)]
    mrpc = table.set_index("task").loc["MRPC"]
    assert mrpc["metrics"] == "accuracy, f1" and mrpc["pair input"] and mrpc["class"] == "CR"


def test_task_sizes_table(data_dir):
    from tasktransfer_utils.data.loaders import load_task

    data = {n: load_task(n, seed=0) for n in ("RTE", "POS-PTB")}
    sizes = data_overview.task_sizes_table(data).set_index("task")
    assert sizes.loc["RTE", "train_examples"] == len(data["RTE"].train) == 2490
    assert sizes.loc["RTE", "validation_examples"] == len(data["RTE"].validation) == 277
    assert sizes.loc["RTE", "labels"] == 2 and sizes.loc["RTE", "task_class"] == "CR"
    assert sizes.loc["POS-PTB", "labels"] == len(data["POS-PTB"].label_names)


def test_limited_sample_check_against_limited_indices():
    n_rows, n, seed = 50, 20, 3
    train = datasets.Dataset.from_dict({"text_a": [f"row {i}" for i in range(n_rows)], "label": [i % 3 for i in range(n_rows)]})
    check = data_overview.limited_sample_check("toy", train, seed, n)
    assert len(check.full) == n_rows and len(check.limited) == n and check.same_seed_identical
    mine, nxt = set(limited_indices(n_rows, seed, n)), set(limited_indices(n_rows, seed + 1, n))
    assert check.overlap_with_next_seed == pytest.approx(len(mine & nxt) / n)
    assert check.key_numbers() == {"task": "toy", "seed": seed, "full_size": n_rows, "limited_size": n,
                                   "same_seed_identical": True, "overlap_with_next_seed": check.overlap_with_next_seed}
    shares = check.label_shares(["a", "b", "c"])
    labels = [i % 3 for i in sorted(mine)]
    assert shares.loc["b", f"LIMITED (seed {seed})"] == pytest.approx(labels.count(1) / n)
    assert shares.loc["a", "FULL"] == pytest.approx(17 / 50)
    assert check.label_shares(None) is None


def test_limited_sample_check_of_sl_rows_uses_tokens():
    train = datasets.Dataset.from_dict({"tokens": [[f"w{i}", "x"] for i in range(10)], "tags": [[0, 1]] * 10})
    check = data_overview.limited_sample_check("toy", train, 0, 4)
    assert len(check.limited) == 4 and check.label_shares(["A", "B"]) is None
