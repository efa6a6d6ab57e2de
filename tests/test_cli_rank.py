"""`tasktransfer rank` end to end on files from the real data bundle, offline (tiny encoder)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tasktransfer_utils import cli
from tasktransfer_utils.embeddings.store import EmbeddingLibrary

SOURCES = ("WNLI", "RTE", "SQuAD-2", "Chunk")


@pytest.fixture(scope="module")
def library_dir(tmp_path_factory, data_dir, tiny_encoder_dir):
    from tasktransfer_utils.data.loaders import load_task
    from tasktransfer_utils.embeddings.textemb import compute_textemb

    lib = EmbeddingLibrary(tmp_path_factory.mktemp("cli_library"))
    for task in SOURCES:
        lib.add([compute_textemb(load_task(task, data_dir=data_dir), encoder=tiny_encoder_dir, max_examples=24,
                                 device="cpu")])
    return lib.root


def test_help_speaks_to_a_newcomer(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["rank", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for phrase in ("which task should you fine-tune on first", ".csv / .tsv", ".conll", "SQuAD", "--library",
                   "--method", "--candidates", "examples:", "tasktransfer rank my_reviews.csv"):
        assert phrase in text, phrase


def test_no_subcommand_prints_help(capsys):
    assert cli.main([]) == 2
    assert "rank" in capsys.readouterr().out


def test_rank_a_real_file_end_to_end(library_dir, data_dir, tiny_encoder_dir, tmp_path, capsys):
    out_csv = tmp_path / "ranking.csv"
    status = cli.main(["rank", str(data_dir / "conll2003/eng.testa"), "--library", str(library_dir),
                       "--no-default-library", "--max-examples", "16", "--output", str(out_csv)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "Source tasks for conll2003-eng.testa (SL, 3250 examples)" in printed
    table = pd.read_csv(out_csv)
    assert table.columns.tolist() == ["rank", "source", "source_class", "score", "method", "transfers"]
    assert sorted(table["source"]) == sorted(SOURCES) and table["rank"].tolist() == [1, 2, 3, 4]
    assert table["score"].is_monotonic_decreasing
    # the printed order is the cosine order of the target embedding computed directly
    from tasktransfer_utils.practitioner.rank import read_target_file
    from tasktransfer_utils.embeddings.textemb import compute_textemb

    target = read_target_file(data_dir / "conll2003/eng.testa")
    t = compute_textemb(target, encoder=tiny_encoder_dir, max_examples=16, device="cpu").vector.astype(float)
    stored = {e.task: e.vector.astype(float) for e in EmbeddingLibrary(library_dir).load()}
    cos = {s: t @ v / np.linalg.norm(t) / np.linalg.norm(v) for s, v in stored.items()}
    assert table["source"].tolist() == sorted(cos, key=cos.get, reverse=True)
    lines = [ln.split() for ln in printed.splitlines()[2:-1]]
    assert printed.splitlines()[-1].startswith("4 sources ranked: 0 with measured transfers")
    assert [ln[1] for ln in lines] == table["source"].tolist()


def test_in_class_top_and_headerless_tsv(library_dir, data_dir, capsys):
    status = cli.main(["rank", str(data_dir / "glue/CoLA/dev.tsv"), "--library", str(library_dir),
                       "--no-default-library", "--no-header", "--text-columns", "3", "--label-column", "1", "--candidates", "in-class",
                       "--top", "1", "--max-examples", "16"])
    assert status == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 4 and rows[2].split()[1] in {"WNLI", "RTE"} and rows[2].split()[2] == "CR"


def test_errors_are_one_line_messages(library_dir, data_dir, tmp_path, capsys):
    assert cli.main(["rank", str(data_dir / "glue/CoLA/dev.tsv"), "--library", str(library_dir),
                     "--no-default-library"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("tasktransfer rank: error:") and "no header row" in err and "sentence1" in err
    assert cli.main(["rank", str(data_dir / "glue/RTE/dev.tsv"), "--library", str(tmp_path / "none"),
                     "--no-default-library"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "--library" in err and "Traceback" not in err


def test_console_entry_point_runs_offline():
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "tasktransfer_utils.cli", "rank", "--help"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0 and "usage: tasktransfer rank" in proc.stdout
