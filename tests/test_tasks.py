"""The task registry: the paper's 33 tasks (Vu et al. 2020, Table 1), lookups, suites."""

from __future__ import annotations

import pytest

from tasktransfer_utils.data.tasks import SUITES, TaskClass, TaskSpec, UnknownTaskError, get_suite, get_task, list_tasks

PAPER = {
    "CR": ["SNLI", "MNLI", "QQP", "QNLI", "SST-2", "SciTail", "CoLA", "STS-B", "MRPC", "RTE", "WNLI"],
    "QA": ["SQuAD-1", "SQuAD-2", "NewsQA", "HotpotQA", "BoolQ", "DROP", "WikiHop", "DuoRC-p", "DuoRC-s", "CQ",
           "ComQA"],
    "SL": ["CCG", "POS-PTB", "POS-EWT", "Parent", "GParent", "GGParent", "ST", "Chunk", "NER", "GED", "Conj"],
}


def test_paper_tasks_are_the_33_of_the_paper():
    for cls, names in PAPER.items():
        got = [t.name for t in list_tasks(cls, paper_only=True)]
        assert sorted(got) == sorted(names)
        assert all(get_task(n).task_class is TaskClass(cls) for n in names)
    assert len(list_tasks(paper_only=True)) == 33
    assert list(SUITES["paper"]) == [t.name for t in list_tasks(paper_only=True)]


@pytest.mark.parametrize("name,metrics", [
    ("SST-2", ("accuracy",)), ("MRPC", ("accuracy", "f1")), ("QQP", ("accuracy", "f1")),
    ("CoLA", ("matthews_corrcoef",)), ("STS-B", ("pearson", "spearman")), ("SQuAD-2", ("exact_match", "f1")),
    ("NER", ("seqeval_f1",)), ("Chunk", ("seqeval_f1",)), ("POS-PTB", ("token_accuracy",)),
    ("Parent", ("token_accuracy",)),
])
def test_metrics_follow_the_paper(name, metrics):
    assert get_task(name).metrics == metrics


def test_label_sets_and_input_kinds():
    assert get_task("STS-B").is_regression and get_task("STS-B").labels is None and get_task("STS-B").num_labels == 1
    assert get_task("MNLI").labels == ("entailment", "neutral", "contradiction")
    assert get_task("SST-2").num_labels == 2 and not get_task("SST-2").is_pair
    assert get_task("RTE").is_pair and get_task("QNLI").is_pair and not get_task("CoLA").is_pair
    # label order = index order of the GLUE hub ClassLabels
    assert get_task("WNLI").labels == ("not_entailment", "entailment")
    assert get_task("MRPC").labels == ("not_equivalent", "equivalent")
    assert get_task("NER").labels[0] == "O" and len(get_task("NER").labels) == 9
    for t in list_tasks("QA"):
        assert t.labels is None and t.num_labels is None


def test_hub_ids_of_loadable_paper_tasks():
    expected = {"SST-2": ("nyu-mll/glue", "sst2"), "MNLI": ("nyu-mll/glue", "mnli"),
                "SQuAD-1": ("rajpurkar/squad", None),
                "SQuAD-2": ("rajpurkar/squad_v2", None), "NER": ("eriktks/conll2003", None),
                "Chunk": ("eriktks/conll2000", None), "POS-EWT": ("universal_dependencies", "en_ewt"),
                "BoolQ": ("google/boolq", None), "SNLI": ("stanfordnlp/snli", None),
                "DuoRC-p": ("ibm/duorc", "ParaphraseRC"), "DuoRC-s": ("ibm/duorc", "SelfRC")}
    for name, (hub_id, config) in expected.items():
        spec = get_task(name)
        assert (spec.hub.dataset_id, spec.hub.config) == (hub_id, config)
    assert dict(get_task("MNLI").hub.splits)["validation"] == "validation_matched"
    # every paper task is loadable from somewhere, except the ones with no public copy
    unloadable = {t.name for t in list_tasks(paper_only=True) if t.hub is None and t.local is None}
    assert unloadable == {"CQ", "ComQA", "CCG", "ST", "GED", "Conj"}
    for name in unloadable:
        assert "no" in get_task(name).notes.lower()


def test_lookup_ignores_case_and_punctuation():
    assert get_task("sst2").name == "SST-2"
    assert get_task("squad_1").name == "SQuAD-1"
    assert get_task(" pos ptb ".strip()).name == "POS-PTB"
    assert get_task("CoNLL-2003").name == "NER"
    spec = get_task("RTE")
    assert get_task(spec) is spec and isinstance(spec, TaskSpec)


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownTaskError) as err:
        get_task("SST-3")
    assert "SST-2" in str(err.value)
    with pytest.raises(KeyError):
        get_task("Squad3")
    with pytest.raises(ValueError, match="SQuAD"):
        get_task("Squad3")


def test_offline_suite_is_local_with_four_tasks_per_class():
    for suite in ("offline", "offline-small"):
        specs = get_suite(suite)
        assert all(t.local is not None for t in specs)
        for cls in TaskClass:
            assert sum(t.task_class is cls for t in specs) >= 4
    offline = [t.name for t in get_suite("offline")]
    local_paper = [t.name for t in list_tasks(paper_only=True, local_only=True)]
    assert sorted(local_paper) == sorted(n for n in offline if get_task(n).paper_task)
    assert len(local_paper) == 17
    assert [t.name for t in get_suite("offline") if not t.paper_task] == ["FAQ-TR"]
    assert all(not t.paper_task for t in get_suite("offline-extra"))
    with pytest.raises(KeyError, match="offline"):
        get_suite("ofline")


def test_list_tasks_filters():
    assert {t.task_class for t in list_tasks("SL")} == {TaskClass.SL}
    assert all(t.local is not None for t in list_tasks(local_only=True))
    assert len(list_tasks()) > 33
    names = [t.name for t in list_tasks()]
    assert len(names) == len(set(names))


def test_tasks_command_lists_a_suite_with_real_sizes(capsys, data_dir):
    from tasktransfer_utils.cli import main

    assert main(["tasks", "--suite", "offline-small", "--class", "CR", "--sizes", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["task", "class", "metrics"]
    rows = {line.split()[0]: line.split() for line in out[1:]}
    assert list(rows) == ["SST-2", "MRPC", "STS-B", "RTE"]
    assert "67349" in rows["SST-2"] and "872" in rows["SST-2"] and "nyu-mll/glue/sst2" in rows["SST-2"]
