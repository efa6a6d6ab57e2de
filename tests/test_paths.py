from pathlib import Path

import pytest

from tasktransfer_utils.paths import DATA_DIR_ENV, default_encoder, resolve_data_dir


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
