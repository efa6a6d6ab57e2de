from pathlib import Path

import pytest

from tasktransfer_utils.paths import DATA_DIR_ENV, default_encoder, relative_paths, resolve_data_dir


def test_data_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert resolve_data_dir() == tmp_path.resolve()


def test_data_dir_argument_wins(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_DIR_ENV, "/nonexistent")
    assert resolve_data_dir(tmp_path) == tmp_path.resolve()


def test_missing_data_dir_names_what_was_tried(monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, "/nonexistent/data")
    with pytest.raises(FileNotFoundError, match="/nonexistent/data"):
        resolve_data_dir()


def test_default_encoder_is_a_bert_folder():
    path = Path(default_encoder())
    assert (path / "config.json").is_file() and (path / "vocab.txt").is_file()


def test_relative_paths_names_no_machine_folder(tmp_path):
    runs = tmp_path / "runs"
    (runs / "models" / "a").mkdir(parents=True)
    link = tmp_path / "runs-link"
    link.symlink_to(runs)
    outside = tmp_path / "elsewhere" / "model"
    record = {
        "model_dir": str(runs / "models" / "a"),
        "nested": [{"init_from": str(link / "models" / "a")}, (str(runs),)],
        "outside": str(outside),
        "sibling": str(tmp_path / "runs2" / "x"),   # shares the root's prefix, not under it
        "text": "runs/models/a", "n": 3,
    }
    got = relative_paths(record, link)   # the root as written (a link) and resolved
    assert got == {
        "model_dir": "models/a",
        "nested": [{"init_from": "models/a"}, ["."]],
        "outside": str(outside),
        "sibling": str(tmp_path / "runs2" / "x"),
        "text": "runs/models/a", "n": 3,
    }
    assert relative_paths(record, [tmp_path / "none", runs]) == got
