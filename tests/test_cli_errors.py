"""Every command's error paths through the ``tasktransfer`` entry point: one line on stderr naming the file,
flag, field or task at fault and what was expected, exit status 2, no traceback; ``--debug`` /
``TASKTRANSFER_DEBUG=1`` shows the traceback; a bug (any other exception) is not swallowed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasktransfer_utils import cli
from tasktransfer_utils.errors import UserInputError

REPO = Path(__file__).resolve().parents[1]
STUDY = str(REPO / "configs" / "offline_study.yaml")


def _one_error(capsys, argv: list[str], *fragments: str) -> str:
    """Run ``tasktransfer argv``; assert status 2 and exactly one stderr line holding every fragment."""
    status = cli.main(argv)
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert status == 2, (status, captured.err)
    assert len(lines) == 1, captured.err
    line = lines[0]
    assert line.startswith("tasktransfer") and ": error: " in line and "Traceback" not in line, line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


@pytest.fixture()
def files(tmp_path):
    """Small bad (and one good) user files."""
    f = {}

    def put(name: str, data: bytes | str) -> str:
        path = tmp_path / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        f[name] = str(path)
        return str(path)

    put("good.csv", "sentence,label\na fine film,1\na dull film,0\nwell acted,1\n")
    put("lone_token.conll", "EU B-ORG\nrejects O\nGerman\ncall O\n\nPeter B-PER\n")
    put("empty.csv", "")
    put("latin1.tsv", "sentence\tlabel\nCaf\xe9 au lait\t1\n".encode("latin-1"))
    put("image.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00")
    put("odd_header.csv", "txt,lbl\nhello there,1\n")
    put("records.csv", '{"text": "a fine film", "label": 1}\n')
    put("data.xlsx", "sentence,label\nfine,1\n")
    put("short.conll", "EU B-ORG\nrejects O\n")
    library = tmp_path / "empty_library"
    library.mkdir()
    f["empty_library"] = str(library)
    (tmp_path / "empty_data").mkdir()
    f["empty_data"] = str(tmp_path / "empty_data")
    return f


@pytest.fixture()
def configs(tmp_path):
    """Study configs with a typo, broken YAML, an unknown task."""
    (tmp_path / "typo.yaml").write_text("name: x\ntasks: [SST-2, RTE]\nregimez: [LIMITED->LIMITED]\n")
    (tmp_path / "broken.yaml").write_text("name: x\ntasks: [SST-2, RTE\n")
    (tmp_path / "unknown_task.yaml").write_text("name: x\ntasks: [SST-2, SST3]\n")
    return {name: str(tmp_path / f"{name}.yaml") for name in ("typo", "broken", "unknown_task")}


# --------------------------------------------------------------------------------------------- top level
def test_unknown_command(capsys):
    _one_error(capsys, ["nosuch"], "invalid choice: 'nosuch'", "rank")


# --------------------------------------------------------------------------------------------- tasks
def test_tasks_unknown_suite(capsys):
    _one_error(capsys, ["tasks", "--suite", "ofline"], "--suite", "'ofline'", "offline")


def test_tasks_missing_data_dir(capsys, tmp_path):
    _one_error(capsys, ["tasks", "--sizes", "--data-dir", str(tmp_path / "nope")], "--data-dir", str(tmp_path / "nope"))


def test_tasks_empty_data_dir(capsys, files):
    _one_error(capsys, ["tasks", "--sizes", "--data-dir", files["empty_data"]], f"--data-dir {files['empty_data']}",
               "the folder is empty")


# --------------------------------------------------------------------------------------------- rank: options
def test_rank_unknown_exclude_name(capsys, files):
    _one_error(capsys, ["rank", files["good.csv"], "--exclude", "SST-2,Chunkk"], "--exclude", "'Chunkk'",
               "did you mean Chunk")


@pytest.mark.parametrize("flag,value,expected", [
    ("--top", "0", "an integer >= 1"),
    ("--max-examples", "-5", "an integer >= 1"),
    ("--epochs", "0", "a number in (0, 1000]"),
    ("--seed", "x", "an integer in [0, "),
    ("--device", "gpu0", "cpu, cuda, cuda:N or mps"),
    ("--tag-column", "-1", "an integer >= 0"),
])
def test_rank_option_out_of_range(capsys, files, flag, value, expected):
    _one_error(capsys, ["rank", files["good.csv"], flag, value], flag, expected)


def test_rank_three_text_columns(capsys, files):
    _one_error(capsys, ["rank", files["good.csv"], "--text-columns", "a,b,c"], "--text-columns 'a,b,c'",
               "one column or two")


def test_rank_logme_without_models(capsys, files):
    _one_error(capsys, ["rank", files["good.csv"], "--method", "LogME"], "--method LogME", "--models")


def test_rank_missing_library(capsys, files, tmp_path):
    _one_error(capsys, ["rank", files["good.csv"], "--library", str(tmp_path / "nolib")], "--library",
               str(tmp_path / "nolib"))


def test_rank_empty_library(capsys, files):
    _one_error(capsys, ["rank", files["good.csv"], "--library", files["empty_library"]], files["empty_library"],
               "holds no embeddings")


def test_rank_taskemb_on_a_file_without_labels(capsys, files, tmp_path):
    path = tmp_path / "tokens.conll"
    path.write_text("EU\nrejects\n\nPeter\n")
    _one_error(capsys, ["rank", str(path), "--method", "TaskEmb"], str(path), "--method TaskEmb needs labels")


def test_rank_every_candidate_excluded(capsys, files):
    from tasktransfer_utils.paths import RESULTS_DIR

    study_library = str(RESULTS_DIR / "offline_study" / "embeddings")  # its 4 CR sources, without the extended ones
    _one_error(capsys, ["rank", files["good.csv"], "--candidates", "in-class", "--exclude", "SST-2,MRPC,RTE,STS-B",
                        "--no-default-library", "--library", study_library],
               "no candidate sources left", "--exclude SST-2, MRPC, RTE, STS-B")


def test_rank_logme_models_not_on_disk(capsys, files, tmp_path):
    config = tmp_path / "study.yaml"
    config.write_text("name: tiny\ntasks: [SST-2, RTE]\n")
    _one_error(capsys, ["rank", files["good.csv"], "--method", "LogME", "--models", str(config)], "--models",
               str(config), "no finished")


# --------------------------------------------------------------------------------------------- rank: the file
def test_rank_missing_file(capsys, files, tmp_path):
    _one_error(capsys, ["rank", str(tmp_path / "nope.csv"), "--library", files["empty_library"]],
               str(tmp_path / "nope.csv"), "no such file")


def test_rank_empty_file(capsys, files):
    _one_error(capsys, ["rank", files["empty.csv"], "--library", files["empty_library"]], files["empty.csv"],
               "the file is empty")


LATIN1_OFFSET = len("sentence\tlabel\nCaf".encode("latin-1"))  # where the first non-UTF-8 byte (é) is


def test_rank_file_not_utf8(capsys, files):
    _one_error(capsys, ["rank", files["latin1.tsv"], "--library", files["empty_library"]],
               f"{files['latin1.tsv']} line 2", f"byte {LATIN1_OFFSET} (0xe9)", "not valid utf-8")


def test_rank_binary_file(capsys, files):
    _one_error(capsys, ["rank", files["image.csv"], "--library", files["empty_library"]], files["image.csv"],
               "binary file")


def test_rank_conll_with_a_lone_token(capsys, files):
    _one_error(capsys, ["rank", files["lone_token.conll"], "--library", files["empty_library"]],
               f"{files['lone_token.conll']} line 3", "1 whitespace-separated columns, but line 1 has 2")


def test_rank_csv_read_as_conll(capsys, files):
    _one_error(capsys, ["rank", files["good.csv"], "--format", "conll", "--library", files["empty_library"]],
               f"{files['good.csv']} line 2", "--format csv")


def test_rank_conllu_read_as_conll(capsys, files, tmp_path):
    path = tmp_path / "ewt.conll"
    path.write_text("# sent_id = 1\n1\tHi\thi\tINTJ\tUH\t_\t0\troot\t0:root\t_\n\n")
    _one_error(capsys, ["rank", str(path), "--library", files["empty_library"]], f"{path} line 2", "CoNLL-U",
               "--format conllu")


def test_rank_csv_read_as_tsv(capsys, files):
    _one_error(capsys, ["rank", files["good.csv"], "--format", "tsv", "--library", files["empty_library"]],
               f"{files['good.csv']} line 1", "no tab but commas", "--format csv")


def test_rank_json_lines_in_a_csv_file(capsys, files):
    _one_error(capsys, ["rank", files["records.csv"], "--library", files["empty_library"]],
               f"{files['records.csv']} line 1", "JSON", "--format jsonl")


def test_rank_unknown_header_names(capsys, files):
    line = _one_error(capsys, ["rank", files["odd_header.csv"], "--library", files["empty_library"]],
                      f"{files['odd_header.csv']} line 1", "['txt', 'lbl']", "--text-columns")
    for accepted in ("sentence1", "text", "label", "score"):
        assert accepted in line


def test_rank_unknown_extension(capsys, files):
    _one_error(capsys, ["rank", files["data.xlsx"], "--library", files["empty_library"]], files["data.xlsx"],
               "--format", "csv, tsv, jsonl, conll, conllu, squad")


def test_rank_tag_column_beyond_the_file(capsys, files):
    _one_error(capsys, ["rank", files["short.conll"], "--tag-column", "5", "--library", files["empty_library"]],
               f"{files['short.conll']} line 1", "--tag-column")


# --------------------------------------------------------------------------------------------- rank: the encoder
def test_rank_encoder_path_that_does_not_exist(capsys, files, tmp_path):
    _one_error(capsys, ["rank", files["good.csv"], "--encoder", str(tmp_path / "no_encoder")],
               f"--encoder {tmp_path / 'no_encoder'}", "no such encoder folder or hub id")


def test_rank_hub_encoder_not_cached_offline(capsys, files, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _one_error(capsys, ["rank", files["good.csv"], "--encoder", "no-such-org/no-such-bert"],
               "--encoder no-such-org/no-such-bert", "no such encoder folder or hub id", "offline")


def test_rank_encoder_that_is_not_the_librarys(capsys, files, tiny_encoder_dir):
    _one_error(capsys, ["rank", files["good.csv"], "--encoder", tiny_encoder_dir],
               f"--encoder {tiny_encoder_dir}", "differs from the library's encoder")


# --------------------------------------------------------------------------------------------- finetune / baselines
def test_finetune_unknown_task(capsys, tmp_path):
    _one_error(capsys, ["finetune", "SST3", "--out", str(tmp_path / "run")], "argument task", "'SST3'",
               "did you mean", "SST-2")


def test_finetune_missing_data_dir(capsys, tmp_path):
    _one_error(capsys, ["finetune", "RTE", "--out", str(tmp_path / "run"), "--data-dir", str(tmp_path / "nope")],
               "--data-dir", str(tmp_path / "nope"))


def test_finetune_empty_data_dir(capsys, files, tmp_path):
    _one_error(capsys, ["finetune", "RTE", "--out", str(tmp_path / "run"), "--data-dir", files["empty_data"]],
               f"--data-dir {files['empty_data']}", "the folder is empty")


def test_finetune_data_dir_without_the_task(capsys, tmp_path):
    (tmp_path / "data" / "glue" / "SST-2").mkdir(parents=True)
    line = _one_error(capsys, ["finetune", "RTE", "--out", str(tmp_path / "run"), "--data-dir",
                               str(tmp_path / "data")], "Task RTE", str(tmp_path / "data" / "glue/RTE/train.tsv"),
                      "--data-dir")
    assert "--source hub" in line and "data_dir=" in line


def test_finetune_hub_only_task_from_local_files(capsys, tmp_path):
    _one_error(capsys, ["finetune", "MNLI", "--out", str(tmp_path / "run")], "task MNLI has no local data files",
               "--source hub")


def test_finetune_encoder_path_that_does_not_exist(capsys, tmp_path):
    _one_error(capsys, ["finetune", "RTE", "--out", str(tmp_path / "run"), "--encoder", str(tmp_path / "enc")],
               f"--encoder {tmp_path / 'enc'}", "no such encoder folder or hub id")


def test_finetune_init_from_missing_run(capsys, tmp_path):
    _one_error(capsys, ["finetune", "RTE", "--out", str(tmp_path / "run"), "--init-from", str(tmp_path / "src")],
               f"--init-from {tmp_path / 'src'}", "expected a run directory")


@pytest.mark.parametrize("flag,value,expected", [
    ("--lr", "5", "a number in (0, 1]"),
    ("--batch-size", "0", "an integer in [1, 65536]"),
    ("--max-eval-examples", "0", "an integer >= 1"),
    ("--regime", "HALF", "invalid choice: 'HALF'"),
    ("--checkpoint-every", "-1", "a number in [0, inf)"),
])
def test_finetune_option_out_of_range(capsys, tmp_path, flag, value, expected):
    _one_error(capsys, ["finetune", "RTE", "--out", str(tmp_path / "run"), flag, value], flag, expected)


def test_finetune_batch_larger_than_the_training_set(capsys, tmp_path):
    _one_error(capsys, ["finetune", "WNLI", "--out", str(tmp_path / "run"), "--batch-size", "5000"],
               "--batch-size 5000", "training set of WNLI", "expected at most")


def test_finetune_out_dir_that_is_not_a_run(capsys, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    _one_error(capsys, ["finetune", "WNLI", "--out", str(tmp_path / "mine"), "--epochs", "1"],
               f"--out {tmp_path / 'mine'}", "not a run directory", "refusing to delete it")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_baselines_hub_only_task_offline(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    _one_error(capsys, ["baselines", "MNLI", "--source", "hub"], "--source hub", "task MNLI",
               "cannot load nyu-mll/glue from the hub")


def test_baselines_task_without_a_hub_copy(capsys):
    _one_error(capsys, ["baselines", "CQ", "--source", "hub"], "--source hub", "task CQ has no hub copy")


def test_baselines_max_seq_length(capsys):
    _one_error(capsys, ["baselines", "RTE", "--max-seq-length", "4"], "--max-seq-length", "[8, 8192]")
    _one_error(capsys, ["baselines", "RTE", "--max-seq-length", "1024"], "--max-seq-length 1024", "512 positions")


# --------------------------------------------------------------------------------------------- study
def test_study_run_yaml_typo(capsys, configs):
    _one_error(capsys, ["study", "run", configs["typo"]], configs["typo"], "unknown field(s) ['regimez']",
               "did you mean regimes")


def test_study_status_broken_yaml(capsys, configs):
    _one_error(capsys, ["study", "status", configs["broken"]], f"{configs['broken']} line 3", "not valid YAML")


def test_study_report_missing_config(capsys, tmp_path):
    _one_error(capsys, ["study", "report", str(tmp_path / "none.yaml")], str(tmp_path / "none.yaml"),
               "does not exist")


def test_study_run_unknown_task_in_config(capsys, configs):
    _one_error(capsys, ["study", "run", configs["unknown_task"], "--dry-run"], configs["unknown_task"], "tasks",
               "'SST3'")


def test_study_run_unknown_target(capsys):
    _one_error(capsys, ["study", "run", STUDY, "--target", "Chunkk"], "--target", "'Chunkk'", "did you mean Chunk")


def test_study_run_target_not_in_the_study(capsys):
    _one_error(capsys, ["study", "run", STUDY, "--target", "CoLA", "--dry-run"], "--target CoLA",
               "not a target of study offline_study", "SST-2")


def test_study_run_only_pattern_matching_nothing(capsys):
    _one_error(capsys, ["study", "run", STUDY, "--only", "finetun__*", "--dry-run"], "--only", "'finetun__*'",
               "matches no job")


def test_study_run_workers_out_of_range(capsys):
    _one_error(capsys, ["study", "run", STUDY, "--workers", "0"], "--workers", "an integer in [1, 1024]")


@pytest.mark.parametrize("value", ["2x", "h", "0m", "5 minutes", ""])
def test_study_run_time_limit_not_a_duration(capsys, value):
    _one_error(capsys, ["study", "run", STUDY, "--time-limit", value], "--time-limit",
               "expected a duration such as 90m, 2h or 1h30m")


def test_study_run_time_limit_on_a_cluster_engine(capsys, tmp_path):
    config = tmp_path / "study.yaml"
    config.write_text("name: tiny\ntasks: {CR: [RTE, MRPC]}\nregimes: [LIMITED→LIMITED]\nseeds: [0]\n"
                      "outputs: {results_dir: r, runs_dir: runs}\n")
    _one_error(capsys, ["study", "run", str(config), "--time-limit", "2h", "--engine", "submitit-local"],
               "--time-limit works with the local engine", "timeout_min")


# --------------------------------------------------------------------------------------------- demo
def test_demo_unknown_check_task(capsys):
    _one_error(capsys, ["demo", "--check-tasks", "SST-2,Nerr"], "--check-tasks", "'Nerr'", "did you mean NER")


def test_demo_check_task_not_in_the_study(capsys):
    _one_error(capsys, ["demo", "--check-tasks", "CoLA"], "--check-tasks CoLA", "not a task of study")


def test_demo_missing_user_file(capsys, tmp_path):
    _one_error(capsys, ["demo", "--file", str(tmp_path / "mine.csv")], "--file", str(tmp_path / "mine.csv"))


def test_demo_missing_config(capsys, tmp_path):
    _one_error(capsys, ["demo", "--config", str(tmp_path / "c.yaml")], str(tmp_path / "c.yaml"), "does not exist")


# --------------------------------------------------------------------------------------------- debug, bugs
def test_debug_switch_shows_the_traceback(files, monkeypatch):
    with pytest.raises(UserInputError, match="the file is empty"):
        cli.main(["--debug", "rank", files["empty.csv"], "--library", files["empty_library"]])
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(UserInputError, match="the file is empty"):
        cli.main(["rank", files["empty.csv"], "--library", files["empty_library"]])


def test_a_bug_is_not_reported_as_bad_input(monkeypatch, files):
    import tasktransfer_utils.practitioner.commands as pr

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(pr, "run_rank", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["rank", files["good.csv"]])


# --------------------------------------------------------------------------------------------- real processes
def _run(*argv: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tasktransfer_utils.cli", *argv], capture_output=True, text=True,
                          env=dict(os.environ, HF_HUB_OFFLINE="1", **env), timeout=300, cwd=REPO)


def test_subprocess_bad_file_is_one_line_and_status_2(files):
    proc = _run("rank", files["lone_token.conll"], "--library", files["empty_library"])
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"tasktransfer rank: error: {files['lone_token.conll']} line 3")


def test_subprocess_unknown_task_and_debug_traceback(tmp_path):
    proc = _run("finetune", "MNLI", "--out", str(tmp_path / "run"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "--source hub" in proc.stderr
    debug = _run("finetune", "MNLI", "--out", str(tmp_path / "run"), TASKTRANSFER_DEBUG="1")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "UsageError" in debug.stderr


def test_a_closed_pipe_stops_quietly():
    """`tasktransfer study run CONFIG --dry-run | head -1`: the listing stops without a traceback (the paper-scale
    study lists 9,522 jobs, far more than a pipe holds, so the writer meets the closed pipe)."""
    proc = subprocess.Popen([sys.executable, "-m", "tasktransfer_utils.cli", "study", "run",
                             str(REPO / "configs" / "paper_study.yaml"), "--dry-run"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=REPO, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    first = proc.stdout.readline()
    proc.stdout.close()  # the reader goes away after one line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and first.startswith(b"finetune__")
    assert "Traceback" not in err and "BrokenPipeError" not in err


# --------------------------------------------------------------------------------------------- help is light
def test_parsing_imports_no_heavy_library():
    """Structural: building every parser and printing --help imports none of torch, transformers, datasets,
    pandas (the command's module is imported only when it runs)."""
    code = ("import sys, contextlib, io\n"
            "from tasktransfer_utils import cli\n"
            "for argv in (['--help'], ['rank', '--help'], ['finetune', '--help'], ['study', 'run', '--help'],"
            " ['demo', '--help'], ['tasks', '--help'], ['baselines', '--help']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        try:\n"
            "            cli.main(argv)\n"
            "        except SystemExit:\n"
            "            pass\n"
            "heavy = [m for m in ('torch', 'transformers', 'datasets', 'pandas', 'numpy') if m in sys.modules]\n"
            "print(json.dumps(heavy))\n").replace("import sys,", "import json, sys,")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("argv", [["rank"], ["tasks"], ["finetune"], ["baselines"], ["study"], ["study", "run"],
                                  ["study", "status"], ["study", "report"], ["demo"]])
def test_every_command_has_help(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*argv, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: tasktransfer {' '.join(argv)}" in capsys.readouterr().out


def test_the_parsers_constants_are_the_libraries():
    """cli.py restates a few constants so that parsing imports nothing heavy; they must stay the same."""
    from tasktransfer_utils.practitioner import rank
    from tasktransfer_utils.study import source_models

    assert cli.RANK_METHODS == rank.METHODS and cli.RANK_FORMATS == rank.FORMATS
    assert cli.DEFAULT_MAX_EXAMPLES == rank.DEFAULT_MAX_EXAMPLES
    assert cli.REBUILD_RTOL == source_models.REBUILD_RTOL
