"""Transfer studies (Vu et al. 2020, §2-§5): a config file -> a job graph -> records -> one results table.

A study names tasks (or a suite), transfer regimes, seeds, the encoder, per-class fine-tuning settings
and the task embeddings to compute (YAML; see ``configs/offline_study.yaml``). Its job graph:

- ``finetune``  one per (task, regime side, seed): the task fine-tuned from the pretrained encoder. It is
  both the *source* model reused by every target and the target's *no-transfer baseline*; in
  LIMITED→LIMITED the source's LIMITED fine-tune with seed s IS that task's baseline with seed s.
- ``textemb``   one per fine-tune's (task, regime, seed): TextEmb from the pretrained encoder over the
  same training rows.
- ``taskemb``   one per fine-tune and TaskEmb variant (estimator, labels): the Fisher embedding from
  the fine-tuned model (depends on the fine-tune).
- ``transfer``  one per (source, target, regime, seed), source ≠ target: the target fine-tuned from the
  source's fine-tuned encoder (depends on the source fine-tune).
- ``restart``   (only with ``noise_floor_seeds``) one per LIMITED target and training seed: the target's
  no-transfer fine-tune again on the same 1,000 examples (the sample of the study's first seed) with another
  training seed, for the report's training-noise floor; last in the order.
- ``logme``     (only with a ``logme:`` section) one per transfer pair: LogME (You et al. 2021) of the source's
  fine-tuned encoder's features on the target's training rows, a source-selection baseline that needs no
  target training (depends on the source fine-tune).

Order (the runner takes the first ready job): every fine-tune (cheapest class first: CR, SL, QA), then
the embeddings, then per target (class by class, cheapest first; in config order within a class) its
LogME scores and its transfers, so partial results give complete targets (``study run --target T`` runs
just what target T needs, e.g. to finish a cheap target first). Records (committed) go to ``<results_dir>/records``, embeddings to
``<results_dir>/embeddings``; model weights and scratch state to ``<runs_dir>`` (not committed).
Paths in records are relative to ``runs_dir``; the encoder is named by its id.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .embedding_store import LEGACY_QA_LOSS, QA_LOSSES
from .errors import MissingFileError, UserInputError, suggest
from .runner import (Job, Plan, PlanRef, atomic_write_text, canonical_json, load_results, progress,
                     quiet_library_output, select_jobs, with_dependencies)

logger = logging.getLogger("tasktransfer.study")

CLASS_ORDER = ("CR", "SL", "QA")  # cheapest first on a CPU
#: default of ``report.min_spread_in_se``: targets whose sources lie closer than this many standard errors
#: are left out of the report's sensitivity table
MIN_SPREAD_IN_SE = 2.0
#: Relative cost of a LIMITED fine-tune per class (used for the ETA until times are measured).
CLASS_COST = {"CR": 1.0, "SL": 2.0, "QA": 4.0}
FULL_COST_FACTOR = 10.0
SETTINGS_KEYS = ("all", "CR", "QA", "SL")
LOGME_KEYS = ("max_examples", "max_tokens", "batch_size")
DEFAULT_TASKEMB_COMPONENTS = ("encoder.layer.*.multihead_output", "encoder.layer.*.layer_output", "cls_output")
PLAN_FACTORY = "tasktransfer_utils.study:study_plan"

_TOP_KEYS = {"name", "description", "tasks", "suite", "sources", "targets", "pairs", "regimes", "seeds",
             "noise_floor_seeds",
             "limited_size", "encoder", "data", "settings", "embeddings", "logme", "outputs", "engine", "max_attempts", "report"}


class StudyConfigError(UserInputError, ValueError):
    """A study config field is missing or wrong; the message names the file and the field."""


# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------


@dataclass
class StudyConfig:
    """A parsed study config. Paths are absolute (relative ones in the file are resolved against the
    config file's folder). ``settings`` maps "all"/"CR"/"QA"/"SL" to FineTuneSettings overrides laid over
    the class preset ("all" first, then the class). ``taskemb`` lists TaskEmb variants
    (estimator, labels, components, batch_size, max_examples, qa_loss); ``textemb`` is None to skip TextEmb.
    ``qa_loss`` (default "authors", the authors' computation; see :mod:`taskemb`) reaches the params of QA
    TaskEmb jobs only when it is "authors": a QA job without it uses the masked loss, as the records made
    before the option existed did, so their params stay valid."""

    name: str
    tasks: list[str]
    sources: list[str]
    targets: list[str]
    regimes: list[str]  # transfer-regime names, e.g. "LIMITED→LIMITED"
    seeds: list[int]
    results_dir: Path
    runs_dir: Path
    description: str = ""
    pairs: str = "all"  # "all" (in and across classes) | "in-class"
    encoder: str | None = None  # None: paths.default_encoder()
    data_source: str = "local"
    data_dir: str | None = None  # None: $TASKTRANSFER_DATA_DIR / ../shared/data
    data_seed: int = 0
    limited_size: int = 1000  # training examples in the LIMITED regime (the paper's 1,000)
    settings: dict[str, dict] = field(default_factory=dict)
    textemb: dict | None = field(default_factory=dict)
    taskemb: list[dict] = field(default_factory=lambda: [{"estimator": "paper", "labels": "gold"}])
    logme: dict | None = None  # None: no LogME jobs; else encoder_features options (max_examples, ...)
    #: at most this many training rows (seeded sample) in the embedding passes of FULL-regime tasks; None: all
    full_max_examples: int | None = None
    #: training seeds of extra no-transfer fine-tunes of every LIMITED target (same examples as seeds[0])
    noise_floor_seeds: list[int] = field(default_factory=list)
    keep_models: str = "sources"  # "sources": delete transfer-run weights once recorded | "all"
    engine: dict = field(default_factory=lambda: {"kind": "local", "workers": 1})
    max_attempts: int = 2
    report: dict = field(default_factory=dict)
    config_path: Path | None = None

    # derived -------------------------------------------------------------------------------------
    def task_class(self, task: str) -> str:
        from .tasks import get_task

        return get_task(task).task_class.value

    def encoder_path(self) -> str:
        from .paths import default_encoder

        return str(self.encoder) if self.encoder else default_encoder()

    def encoder_name(self) -> str:
        from .embedding_store import encoder_id

        return encoder_id(self.encoder_path())

    def settings_overrides(self, task_class: str) -> dict:
        out = dict(self.settings.get("all", {}))
        out.update(self.settings.get(task_class, {}))
        return out

    def finetune_settings(self, task_class: str):
        """The FineTuneSettings of a class: the authors' preset with this study's overrides."""
        from .settings import preset

        return preset(task_class, **self.settings_overrides(task_class))

    def transfer_regimes(self):
        from .regimes import get_transfer_regime

        return [get_transfer_regime(r) for r in self.regimes]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("results_dir", "runs_dir", "config_path"):
            d[k] = None if d[k] is None else str(d[k])
        return d


def _err(where: str, field_name: str, expected: str, got: Any) -> StudyConfigError:
    return StudyConfigError(f"{where}: field '{field_name}': expected {expected}, got {got!r}")


def _task_list(value: Any, where: str, field_name: str) -> list[str]:
    """A list of task names, or a mapping class -> list (flattened in class order as written)."""
    if isinstance(value, Mapping):
        names = []
        for cls, items in value.items():
            if str(cls) not in ("CR", "QA", "SL"):
                raise _err(where, f"{field_name}.{cls}", "a task class CR, QA or SL", cls)
            if not isinstance(items, (list, tuple)):
                raise _err(where, f"{field_name}.{cls}", "a list of task names", items)
            for name in items:
                spec = _get_task(name, where, f"{field_name}.{cls}")
                if spec.task_class.value != cls:
                    raise _err(where, f"{field_name}.{cls}", f"{cls} tasks ({name} is {spec.task_class.value})", name)
                names.append(spec.name)
        return names
    if isinstance(value, (list, tuple)):
        return [_get_task(n, where, field_name).name for n in value]
    raise _err(where, field_name, "a list of task names or a mapping CR/QA/SL -> list", value)


def _get_task(name: Any, where: str, field_name: str):
    from .tasks import get_task

    try:
        return get_task(str(name))
    except (KeyError, ValueError) as err:
        raise StudyConfigError(f"{where}: field '{field_name}': {err}") from None


def study_config_from_dict(raw: Mapping[str, Any], *, base_dir: str | os.PathLike = ".",
                           where: str = "<study config>") -> StudyConfig:
    """Parse and check a study config mapping (see :func:`load_study_config`)."""
    from .regimes import get_transfer_regime
    from .settings import FineTuneSettings, preset
    from .tasks import get_suite

    if not isinstance(raw, Mapping):
        raise StudyConfigError(f"{where}: expected a mapping at the top level, got {type(raw).__name__}")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        hints = "".join(suggest(str(k), _TOP_KEYS) for k in sorted(unknown, key=str))
        raise StudyConfigError(f"{where}: unknown field(s) {sorted(unknown, key=str)}{hints}; known: {sorted(_TOP_KEYS)}")
    base_dir = Path(base_dir)
    name = raw.get("name")
    if not isinstance(name, str) or not name or set(name) - set(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."):
        raise _err(where, "name", "a non-empty name of letters, digits, '-', '_', '.'", name)

    if ("tasks" in raw) == ("suite" in raw):
        raise StudyConfigError(f"{where}: give exactly one of 'tasks' (names) or 'suite' (a name from tasks.SUITES)")
    if "suite" in raw:
        try:
            tasks = [t.name for t in get_suite(str(raw["suite"]))]
        except (KeyError, ValueError) as err:
            raise StudyConfigError(f"{where}: field 'suite': {err}") from None
    else:
        tasks = _task_list(raw["tasks"], where, "tasks")
    if len(set(tasks)) != len(tasks):
        raise _err(where, "tasks", "distinct task names", tasks)
    sources = _task_list(raw["sources"], where, "sources") if raw.get("sources") is not None else list(tasks)
    targets = _task_list(raw["targets"], where, "targets") if raw.get("targets") is not None else list(tasks)

    pairs = raw.get("pairs", "all")
    if pairs not in ("all", "in-class"):
        raise _err(where, "pairs", "'all' or 'in-class'", pairs)
    regimes_raw = raw.get("regimes", ["LIMITED→LIMITED"])
    if isinstance(regimes_raw, str):
        regimes_raw = [regimes_raw]
    regimes = []
    for r in regimes_raw:
        try:
            regimes.append(get_transfer_regime(str(r)).name)
        except ValueError as err:
            raise StudyConfigError(f"{where}: field 'regimes': {err}") from None
    seeds = raw.get("seeds", [0])
    if isinstance(seeds, int):
        seeds = [seeds]
    if not isinstance(seeds, (list, tuple)) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise _err(where, "seeds", "a non-empty list of integers >= 0", seeds)

    data = raw.get("data") or {}
    if not isinstance(data, Mapping) or set(data) - {"source", "data_dir", "data_seed"}:
        raise _err(where, "data", "a mapping with source, data_dir, data_seed", data)
    data_source = data.get("source", "local")
    if data_source not in ("local", "hub"):
        raise _err(where, "data.source", "'local' or 'hub'", data_source)
    data_dir = data.get("data_dir")
    if data_dir is not None:
        data_dir = str((base_dir / str(data_dir)).resolve()) if not os.path.isabs(str(data_dir)) else str(data_dir)

    settings = raw.get("settings") or {}
    if not isinstance(settings, Mapping) or set(settings) - set(SETTINGS_KEYS):
        raise _err(where, "settings", f"a mapping with keys among {SETTINGS_KEYS}", settings)
    settings = {k: dict(v or {}) for k, v in settings.items()}
    for key, overrides in settings.items():
        for cls in (("CR", "QA", "SL") if key == "all" else (key,)):
            try:
                preset(cls, **{**settings.get("all", {}), **settings.get(cls, {})})
            except (TypeError, ValueError) as err:
                known = [f.name for f in dataclasses.fields(FineTuneSettings)]
                raise StudyConfigError(f"{where}: field 'settings.{key}': {err} (FineTuneSettings fields: "
                                       f"{known})") from None

    emb = raw.get("embeddings", {"textemb": {}, "taskemb": [{"estimator": "paper", "labels": "gold"}]})
    emb = emb or {}
    if not isinstance(emb, Mapping) or set(emb) - {"textemb", "taskemb", "full_max_examples"}:
        raise _err(where, "embeddings", "a mapping with 'textemb', 'taskemb' and/or 'full_max_examples'", emb)
    full_max_examples = emb.get("full_max_examples")
    if full_max_examples is not None and (not isinstance(full_max_examples, int) or isinstance(full_max_examples, bool)
                                          or full_max_examples < 1):
        raise _err(where, "embeddings.full_max_examples", "an integer >= 1 or null (all rows)", full_max_examples)
    textemb = emb.get("textemb")
    if textemb is not None:
        textemb = dict(textemb)
        bad = set(textemb) - {"batch_size", "max_examples"}
        if bad:
            raise _err(where, "embeddings.textemb", "fields among batch_size, max_examples", sorted(bad))
    taskemb = emb.get("taskemb") or []
    if isinstance(taskemb, Mapping):
        taskemb = [taskemb]
    variants = []
    for i, v in enumerate(taskemb):
        v = dict(v or {})
        bad = set(v) - {"estimator", "labels", "components", "batch_size", "max_examples", "num_label_samples",
                        "qa_loss"}
        if bad:
            raise _err(where, f"embeddings.taskemb[{i}]", "fields among estimator, labels, components, "
                       "batch_size, max_examples, num_label_samples, qa_loss", sorted(bad))
        v.setdefault("estimator", "paper")
        v.setdefault("labels", "gold")
        v.setdefault("qa_loss", "authors")
        if v["qa_loss"] not in QA_LOSSES:
            raise _err(where, f"embeddings.taskemb[{i}].qa_loss", f"one of {QA_LOSSES}", v["qa_loss"])
        if v["estimator"] not in ("paper", "empirical"):
            raise _err(where, f"embeddings.taskemb[{i}].estimator", "'paper' or 'empirical'", v["estimator"])
        if v["labels"] not in ("gold", "sampled"):
            raise _err(where, f"embeddings.taskemb[{i}].labels", "'gold' or 'sampled'", v["labels"])
        v.setdefault("components", list(DEFAULT_TASKEMB_COMPONENTS))
        variants.append(v)
    keys = [(v["estimator"], v["labels"]) for v in variants]
    if len(set(keys)) != len(keys):
        raise _err(where, "embeddings.taskemb", "distinct (estimator, labels) variants", keys)

    logme = raw.get("logme")
    if logme is not None:
        if logme is True:
            logme = {}
        if not isinstance(logme, Mapping) or set(logme) - set(LOGME_KEYS):
            raise _err(where, "logme", f"a mapping with fields among {LOGME_KEYS} (or true)", logme)
        logme = dict(logme)
        for k, v in logme.items():
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise _err(where, f"logme.{k}", "an integer >= 1", v)

    outputs = raw.get("outputs") or {}
    if not isinstance(outputs, Mapping) or set(outputs) - {"results_dir", "runs_dir", "keep_models"}:
        raise _err(where, "outputs", "a mapping with results_dir, runs_dir, keep_models", outputs)
    from .paths import REPO_ROOT

    results_dir = outputs.get("results_dir", str(REPO_ROOT / "results" / name))
    runs_dir = outputs.get("runs_dir", str(REPO_ROOT / "runs" / name))
    keep_models = outputs.get("keep_models", "sources")
    if keep_models not in ("sources", "all"):
        raise _err(where, "outputs.keep_models", "'sources' or 'all'", keep_models)
    engine = raw.get("engine") or {"kind": "local", "workers": 1}
    if not isinstance(engine, Mapping):
        raise _err(where, "engine", "a mapping (kind: local|slurm|submitit-local, ...)", engine)
    from .regimes import LIMITED_SIZE

    limited_size = raw.get("limited_size", LIMITED_SIZE)
    if not isinstance(limited_size, int) or not 1 <= limited_size <= LIMITED_SIZE:
        raise _err(where, "limited_size", f"an integer in [1, {LIMITED_SIZE}] (training examples in the LIMITED "
                   "regime; smaller values are for quick trials)", limited_size)
    max_attempts = raw.get("max_attempts", 2)
    if not isinstance(max_attempts, int) or max_attempts < 1:
        raise _err(where, "max_attempts", "an integer >= 1", max_attempts)
    report = dict(raw.get("report") or {})
    min_se = report.get("min_spread_in_se", MIN_SPREAD_IN_SE)
    if isinstance(min_se, bool) or not isinstance(min_se, (int, float)) or not min_se >= 0:
        raise _err(where, "report.min_spread_in_se", "a number >= 0 (standard errors)", min_se)

    noise_seeds = raw.get("noise_floor_seeds") or []
    if (not isinstance(noise_seeds, list) or any(not isinstance(x, int) or isinstance(x, bool) or x < 0
                                                  for x in noise_seeds)
            or len(set(noise_seeds)) != len(noise_seeds) or (seeds and seeds[0] in noise_seeds)):
        raise _err(where, "noise_floor_seeds", "a list of distinct integers >= 0, without the study's first seed "
                   f"{seeds[0] if seeds else ''} (its run is already there)", noise_seeds)

    return StudyConfig(
        name=name, description=str(raw.get("description", "")), tasks=tasks, sources=sources, targets=targets,
        pairs=pairs, regimes=regimes, seeds=list(seeds), encoder=raw.get("encoder"), data_source=data_source,
        data_dir=data_dir, data_seed=int(data.get("data_seed", 0)), limited_size=limited_size, settings=settings, textemb=textemb,
        taskemb=variants, full_max_examples=full_max_examples, noise_floor_seeds=list(noise_seeds), logme=logme, keep_models=keep_models, engine=dict(engine), max_attempts=max_attempts,
        report=report, results_dir=(base_dir / results_dir).resolve(), runs_dir=(base_dir / runs_dir).resolve(),
    )


def load_study_config(path: str | os.PathLike) -> StudyConfig:
    """Read a YAML study config. Relative paths in it resolve against the file's folder."""
    import yaml

    path = Path(path).resolve()
    if not path.is_file():
        raise MissingFileError(f"study config {path} does not exist; expected a YAML file such as "
                               "configs/offline_study.yaml")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(err, "problem", None) or str(err)
        raise StudyConfigError(f"{path}{where}: not valid YAML ({what})") from None
    cfg = study_config_from_dict(raw, base_dir=path.parent, where=str(path))
    cfg.config_path = path
    return cfg


# --------------------------------------------------------------------------------------------------
# Job graph
# --------------------------------------------------------------------------------------------------


def finetune_id(task: str, regime: str, seed: int) -> str:
    return f"finetune__{task}__{regime}__s{seed}"


def textemb_id(task: str, regime: str, seed: int) -> str:
    return f"textemb__{task}__{regime}__s{seed}"


def taskemb_id(task: str, regime: str, seed: int, estimator: str, labels: str) -> str:
    return f"taskemb__{task}__{regime}__s{seed}__{estimator}-{labels}"


def transfer_id(source: str, target: str, regime_name: str, seed: int) -> str:
    src, tgt = _regime_sides(regime_name)
    return f"transfer__{src}-{tgt}__{source}__{target}__s{seed}"


def restart_id(task: str, seed: int, train_seed: int) -> str:
    """A LIMITED no-transfer restart: the sample of ``seed``, trained with ``train_seed``."""
    return f"restart__{task}__LIMITED__s{seed}__train{train_seed}"


def logme_id(source: str, target: str, regime_name: str, seed: int) -> str:
    src, tgt = _regime_sides(regime_name)
    return f"logme__{src}-{tgt}__{source}__{target}__s{seed}"


def _regime_sides(regime_name: str) -> tuple[str, str]:
    """("LIMITED", "LIMITED") for any spelling of a transfer regime ``regimes.get_transfer_regime`` accepts."""
    from .regimes import get_transfer_regime

    tr = get_transfer_regime(regime_name)
    return tr.source.value, tr.target.value


def _cost(task_class: str, regime: str) -> float:
    return CLASS_COST[task_class] * (FULL_COST_FACTOR if regime == "FULL" else 1.0)


def study_pairs(cfg: StudyConfig) -> list[tuple[str, str]]:
    """(source, target) pairs of the study: every source ≠ target (same class only with pairs: in-class)."""
    out = []
    for t in cfg.targets:
        for s in cfg.sources:
            if s == t:
                continue
            if cfg.pairs == "in-class" and cfg.task_class(s) != cfg.task_class(t):
                continue
            out.append((s, t))
    return out


def build_jobs(cfg: StudyConfig) -> list[Job]:
    """The study's job graph in execution order (module docstring)."""
    from .regimes import LIMITED_SIZE

    enc = cfg.encoder_name()
    data = {"data_source": cfg.data_source, "data_seed": cfg.data_seed}
    if cfg.limited_size != LIMITED_SIZE:
        data["limited_size"] = cfg.limited_size
    cls_rank = {c: i for i, c in enumerate(CLASS_ORDER)}
    regimes = cfg.transfer_regimes()

    # fine-tunes: (task, side regime, seed) needed as a source or as a target baseline
    needed: dict[tuple[str, str, int], None] = {}
    pairs = study_pairs(cfg)
    for seed in cfg.seeds:
        for tr in regimes:
            for s, t in pairs:
                needed[(s, tr.source.value, seed)] = None
                needed[(t, tr.target.value, seed)] = None
    task_order = {t: i for i, t in enumerate(cfg.tasks + [x for x in cfg.sources + cfg.targets if x not in cfg.tasks])}

    def ft_key(k):
        task, regime, seed = k
        return (seed, regime != "LIMITED", cls_rank[cfg.task_class(task)], task_order[task])

    finetunes, textembs, taskembs, transfers = [], [], [], []
    for task, regime, seed in sorted(needed, key=ft_key):
        cls = cfg.task_class(task)
        common = {"task": task, "task_class": cls, "regime": regime, "seed": seed, "encoder": enc, **data}
        fid = finetune_id(task, regime, seed)
        finetunes.append(Job(fid, "finetune", {**common, "settings": cfg.settings_overrides(cls)},
                             group=cls, cost=_cost(cls, regime)))
        # FULL embedding passes may be capped (a seeded sample of the training rows); LIMITED ones never are
        cap = ({"max_examples": cfg.full_max_examples}
               if regime == "FULL" and cfg.full_max_examples is not None else {})
        if cfg.textemb is not None:
            textembs.append(Job(textemb_id(task, regime, seed), "textemb",
                                {**common, "settings": cfg.settings_overrides(cls), **cap, **cfg.textemb},
                                group=cls, cost=0.1 * _cost(cls, regime)))
        for v in cfg.taskemb:
            v = _taskemb_job_fields(v, cls)
            taskembs.append(Job(taskemb_id(task, regime, seed, v["estimator"], v["labels"]), "taskemb",
                                {**common, **cap, **v}, deps=(fid,), group=cls,
                                cost=(0.5 if v["estimator"] == "paper" else 3.0) * _cost(cls, regime)))
    for seed in cfg.seeds:
        for tr in sorted(regimes, key=lambda r: (r.target.value != "LIMITED", r.source.value != "LIMITED")):
            by_target = sorted(cfg.targets, key=lambda t: (cls_rank[cfg.task_class(t)], task_order[t]))
            for t in by_target:
                tcls = cfg.task_class(t)
                for s, tt in pairs:
                    if tt != t:
                        continue
                    params = {"source": s, "target": t, "source_class": cfg.task_class(s), "target_class": tcls,
                              "regime": tr.name, "source_regime": tr.source.value,
                              "target_regime": tr.target.value, "seed": seed, "encoder": enc, **data,
                              "settings": cfg.settings_overrides(tcls)}
                    if cfg.logme is not None:
                        transfers.append(Job(logme_id(s, t, tr.name, seed), "logme", {**params, **cfg.logme},
                                             deps=(finetune_id(s, tr.source.value, seed),), group=tcls,
                                             cost=0.1 * _cost(tcls, tr.target.value)))
                    transfers.append(Job(transfer_id(s, t, tr.name, seed), "transfer", params,
                                         deps=(finetune_id(s, tr.source.value, seed),), group=tcls,
                                         cost=_cost(tcls, tr.target.value)))
    restarts = []
    if cfg.noise_floor_seeds and any(tr.target.value == "LIMITED" for tr in regimes):
        by_target = sorted(cfg.targets, key=lambda t: (cls_rank[cfg.task_class(t)], task_order[t]))
        for train_seed in cfg.noise_floor_seeds:
            for t in by_target:
                cls = cfg.task_class(t)
                restarts.append(Job(restart_id(t, cfg.seeds[0], train_seed), "restart",
                                    {"task": t, "task_class": cls, "regime": "LIMITED", "seed": cfg.seeds[0],
                                     "train_seed": train_seed, "encoder": enc, **data,
                                     "settings": cfg.settings_overrides(cls)},
                                    group=cls, cost=_cost(cls, "LIMITED")))
    return finetunes + textembs + taskembs + transfers + restarts


def _taskemb_job_fields(variant: Mapping, task_class: str) -> dict:
    """A TaskEmb variant's fields as one task's job params: ``qa_loss`` only on QA jobs, and there only when
    it is not the masked loss, which a missing field means (records made before the option existed)."""
    v = dict(variant)
    qa_loss = v.pop("qa_loss", LEGACY_QA_LOSS)
    if task_class == "QA" and qa_loss != LEGACY_QA_LOSS:
        v["qa_loss"] = qa_loss
    return v


def plan_for(cfg: StudyConfig) -> Plan:
    """The runner plan of a study (records under results_dir, state under runs_dir)."""
    return Plan(jobs=build_jobs(cfg), functions=JOB_FUNCTIONS, records_dir=cfg.results_dir / "records",
                state_dir=cfg.runs_dir / "state", artifacts_dir=cfg.results_dir, name=cfg.name,
                max_attempts=cfg.max_attempts, settings={"config": cfg.to_dict()},
                after_job=lambda plan, job: write_tables(plan), outcome=job_outcome)


def job_outcome(job: Job, result: Mapping) -> str:
    """A finished study job's outcome for its log line: the task score (fine-tune, transfer), the LogME
    score, or what an embedding job stored."""
    if job.kind in ("finetune", "transfer"):
        metrics = result.get("final_metrics") or {}
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, (int, float)))
        return f"score {result['score']:.4f}" + (f" ({shown})" if shown else "")
    if job.kind == "logme":
        return f"LogME {result['score']:.4f} over {result['num_rows']} rows"
    if job.kind == "textemb":
        return f"TextEmb of {result.get('num_examples')} examples, dim {result.get('dim')}"
    if job.kind == "taskemb":
        return f"TaskEmb of {result.get('num_examples')} examples, {len(result.get('components') or [])} components"
    return "recorded"


def study_plan(config_path: str) -> Plan:
    """PlanRef factory: the plan of the study config at ``config_path`` (worker processes call this)."""
    plan = plan_for(load_study_config(config_path))
    return plan


def plan_ref(cfg_or_path: StudyConfig | str | os.PathLike) -> PlanRef:
    path = cfg_or_path.config_path if isinstance(cfg_or_path, StudyConfig) else Path(cfg_or_path).resolve()
    if path is None:
        raise ValueError("a StudyConfig built from a dict has no file; save it (save_study_config) to run workers")
    return PlanRef(PLAN_FACTORY, (str(path),))


def select_study_jobs(cfg: StudyConfig, plan: Plan, only: Sequence[str] = (),
                      targets: Sequence[str] = ()) -> list[str] | None:
    """The job ids a ``study run --only/--target`` restricts to (None: the whole plan), dependencies
    included. ``only``: shell-style patterns on job ids; ``targets``: the transfers and LogME jobs into
    these targets and the targets' own fine-tunes (their no-transfer baselines), i.e. what the report
    needs to evaluate source selection for them."""
    if not only and not targets:
        return None
    unknown = [t for t in targets if t not in cfg.targets]
    if unknown:
        raise StudyConfigError(f"{cfg.config_path}: --target {', '.join(unknown)}: not a target of study "
                               f"{cfg.name} (targets: {', '.join(cfg.targets)})")
    ids = set(select_jobs(plan, only)) if only else set()
    wanted = set(targets)
    for j in plan.jobs:
        if j.kind in ("transfer", "logme") and j.params["target"] in wanted:
            ids.add(j.id)
            ids.add(finetune_id(j.params["target"], j.params["target_regime"], j.params["seed"]))
    return with_dependencies(plan, ids)


def save_study_config(cfg_dict: Mapping[str, Any], path: str | os.PathLike) -> Path:
    import yaml

    path = Path(path)
    atomic_write_text(path, yaml.safe_dump(dict(cfg_dict), sort_keys=False, allow_unicode=True))
    return path


# --------------------------------------------------------------------------------------------------
# Job functions
# --------------------------------------------------------------------------------------------------


def _cfg(ctx) -> StudyConfig:
    d = dict(ctx.settings["config"])
    for k in ("results_dir", "runs_dir", "config_path"):
        if d.get(k) is not None:
            d[k] = Path(d[k])
    return StudyConfig(**d)


def _load(params: Mapping, cfg: StudyConfig, task_key: str = "task", regime_key: str = "regime"):
    """The task's data; with a ``limited_size`` other than 1,000 the train split of a LIMITED job is first cut to
    the seeded ``limited_size`` sample (``regimes.apply_regime(..., n=limited_size)``), which the LIMITED
    sampling inside fine_tune / TextEmb / TaskEmb then keeps whole and in order."""
    import copy

    from datasets import DatasetDict

    from .loaders import load_task
    from .regimes import apply_regime

    data = load_task(params[task_key], data_dir=cfg.data_dir, source=params["data_source"], seed=params["data_seed"])
    n = params.get("limited_size")
    if n is None or params[regime_key] != "LIMITED":
        return data
    splits = dict(data.splits)
    splits["train"] = apply_regime(splits["train"], "LIMITED", params["seed"], n=n)
    prov = copy.deepcopy(data.provenance)
    prov["limited_size"] = n
    return dataclasses.replace(data, splits=DatasetDict(splits), provenance=prov)


def _check_encoder(params: Mapping, cfg: StudyConfig) -> str:
    path = cfg.encoder_path()
    from .embedding_store import encoder_id

    if encoder_id(path) != params["encoder"]:
        raise RuntimeError(f"job encoder {params['encoder']!r} but this machine resolves the study encoder to "
                           f"{path!r}; set 'encoder' in the study config (or $TASKTRANSFER_ENCODER)")
    return path


def model_run_dir(cfg: StudyConfig, job_id: str) -> Path:
    """Run directory (fine_tune output_dir) of a finetune/transfer job: ``<runs_dir>/models/<job id>``."""
    return cfg.runs_dir / "models" / job_id


def source_model_dirs(cfg: StudyConfig, regime: str | None = None, seed: int | None = None) -> dict[str, Path]:
    """{task: fine-tuned model folder} of the study's finished fine-tunes (``runs_dir``; the weights are not
    committed with the records). ``regime``: "FULL" or "LIMITED" (a transfer regime stands for its source
    side); None takes a task's FULL fine-tune where there is a record of one, else its LIMITED one. ``seed``:
    default the config's first. A recorded fine-tune whose weights are not on disk (a fresh clone) is an
    error naming the ``tasktransfer study rebuild-models`` command that rebuilds them."""
    from .regimes import data_regime
    from .training import MODEL_SUBDIR

    seed = cfg.seeds[0] if seed is None else seed
    regime = data_regime(regime).value if regime else None
    records = load_results(plan_for(cfg))
    out, missing = {}, []
    for task in dict.fromkeys(cfg.sources + cfg.targets):
        recorded = [r for r in ((regime,) if regime else ("FULL", "LIMITED")) if finetune_id(task, r, seed) in records]
        if not recorded:
            continue
        model = model_run_dir(cfg, finetune_id(task, recorded[0], seed)) / MODEL_SUBDIR
        if model.is_dir():
            out[task] = model
        else:
            missing.append((task, recorded[0]))
    if missing:
        regimes = sorted({r for _, r in missing})
        tasks = [t for t, _ in missing]
        raise FileNotFoundError(
            f"{_shown(cfg.config_path)}: the weights of {len(missing)} recorded {'/'.join(regimes)} fine-tune(s) "
            f"({', '.join(tasks)}) are not on disk under {_shown(cfg.runs_dir / 'models')} (they are not committed "
            f"with the records); rebuild them from the records (same seeds and settings; models on disk are only "
            f"checked) with `{rebuild_command(cfg, (), regimes, seed)}`")
    if not out:
        raise FileNotFoundError(f"{_shown(cfg.config_path)}: no finished {regime or 'FULL or LIMITED'} fine-tune "
                                f"(seed {seed}) in {_shown(cfg.results_dir / 'records')}; run "
                                f"`tasktransfer study run {_shown(cfg.config_path)}` first")
    return out


def _shown(path: Path | str | None) -> str:
    """``path`` relative to the working directory when it lies below it (as a user would type it)."""
    if path is None:
        return "CONFIG"
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def rebuild_command(cfg: StudyConfig, tasks: Sequence[str] = (), regimes: Sequence[str] = (),
                    seed: int | None = None) -> str:
    """The ``tasktransfer study rebuild-models`` invocation that rebuilds these tasks' fine-tunes (all
    tasks when they are all of the study's, every regime unless there is one)."""
    words = ["tasktransfer", "study", "rebuild-models", _shown(cfg.config_path)]
    all_tasks = list(dict.fromkeys(cfg.sources + cfg.targets))
    if tasks and set(tasks) != set(all_tasks):
        for t in tasks:
            words += ["--task", t]
    if len(set(regimes)) == 1:
        words += ["--regime", next(iter(regimes))]
    if seed is not None and len(cfg.seeds) > 1:
        words += ["--seed", str(seed)]
    return " ".join(shlex.quote(w) for w in words)


class RebuildMismatchError(UserInputError):
    """A rebuilt fine-tune does not reproduce its record (the message names the first differing field)."""


#: default relative tolerance of ``rebuild-models``' check. A CPU fine-tune rerun in another process
#: reproduces its dev metrics but its logged losses only to float32 rounding: the offline study's LIMITED
#: fine-tunes rebuilt from their records, SST-2: 21 of 96 losses bit-identical, the largest relative
#: difference 2.7e-6; FAQ-TR: 17 of 111, 2.2e-5 (scattered, not growing with the steps); every dev metric
#: identical. Anything that changes the training (data, seed, settings) moves the losses by far more and a
#: metric by at least one example (>= 1e-3 of an evaluation of at most 1,000 examples).
REBUILD_RTOL = 1e-4
#: result fields of a fine-tune that describe the machine or the clock, not what was computed
REBUILD_IGNORED_FIELDS = frozenset({"wall_time_s", "train_time_s", "eval_time_s", "train_examples_per_s",
                                    "device", "mixed_precision", "cpu_threads", "versions"})


def _first_difference(recorded: Any, rebuilt: Any, where: str, rtol: float) -> str | None:
    """Where two JSON values first differ (None: equal). Numbers: exactly equal with ``rtol`` 0, else
    |a - b| <= rtol * max(|a|, |b|); NaN equals NaN. Dict keys in :data:`REBUILD_IGNORED_FIELDS` are skipped."""
    import math

    if isinstance(recorded, dict) and isinstance(rebuilt, dict):
        for k in sorted(set(recorded) | set(rebuilt)):
            if k in REBUILD_IGNORED_FIELDS:
                continue
            if k not in recorded or k not in rebuilt:
                return f"{where}.{k} is {'absent' if k not in rebuilt else repr(rebuilt[k])}, recorded " \
                       f"{'absent' if k not in recorded else repr(recorded[k])}"
            diff = _first_difference(recorded[k], rebuilt[k], f"{where}.{k}", rtol)
            if diff:
                return diff
        return None
    if isinstance(recorded, list) and isinstance(rebuilt, list):
        if len(recorded) != len(rebuilt):
            return f"{where} has {len(rebuilt)} entries, recorded {len(recorded)}"
        for i, (a, b) in enumerate(zip(recorded, rebuilt)):
            diff = _first_difference(a, b, f"{where}[{i}]", rtol)
            if diff:
                return diff
        return None
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (recorded, rebuilt))
    if numbers:
        a, b = float(recorded), float(rebuilt)
        same = (math.isnan(a) and math.isnan(b)) or a == b or abs(a - b) <= rtol * max(abs(a), abs(b))
    else:
        same = recorded == rebuilt
    return None if same else f"{where} is {rebuilt!r}, recorded {recorded!r}"


def rebuild_models(cfg: StudyConfig, tasks: Sequence[str] = (), regime: str | None = None,
                   seeds: Sequence[int] = (), rtol: float = REBUILD_RTOL,
                   log: Any = None) -> dict[str, str]:
    """Rebuild the fine-tuned models of a study's fine-tune records (their weights live under ``runs_dir``,
    which is not committed): every recorded fine-tune job (of ``tasks``, data ``regime`` and ``seeds`` when
    given) whose model folder is missing is run again with its recorded params (same data, seed and settings)
    into its run folder; the records are never written. Each rebuilt run, and each run already on disk, is
    then checked against its record: every result field but timings and the machine description (device,
    threads, library versions) must be equal, numbers within a relative ``rtol`` (default
    :data:`REBUILD_RTOL`: float32 rounding of the logged losses, which a CPU rerun on another machine or in
    another process does not reproduce bit for bit; ``rtol`` 0 asks for exact equality, which a rerun in the
    same environment gives). A mismatch raises :class:`RebuildMismatchError` (one line) and renames the
    rebuilt run folder to ``<folder>.mismatch`` so that nothing uses it. Returns {job id: "present" |
    "rebuilt"}."""
    from .regimes import data_regime
    from .runner import JobContext
    from .training import MODEL_SUBDIR, RESULT_FILE, RunResult

    log = log or (lambda msg: None)
    regime = data_regime(regime).value if regime else None
    known = set(dict.fromkeys(cfg.sources + cfg.targets))
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise StudyConfigError(f"{_shown(cfg.config_path)}: --task {', '.join(unknown)}: not a task of study "
                               f"{cfg.name} (tasks: {', '.join(sorted(known))})")
    if rtol < 0 or rtol != rtol:
        raise StudyConfigError(f"rtol must be a number >= 0, got {rtol}")
    plan = plan_for(cfg)
    records = load_results(plan)
    jobs = [j for j in plan.jobs if j.kind == "finetune" and (not tasks or j.params["task"] in tasks)
            and (regime is None or j.params["regime"] == regime) and (not seeds or j.params["seed"] in seeds)]
    recorded = [j for j in jobs if j.id in records]
    if not recorded:
        raise StudyConfigError(f"{_shown(cfg.config_path)}: no fine-tune record to rebuild "
                               f"({len(jobs)} fine-tune job(s) selected, none recorded in "
                               f"{_shown(plan.records_dir)}); run `tasktransfer study run "
                               f"{_shown(cfg.config_path)}` first")
    status: dict[str, str] = {}
    for n, job in enumerate(recorded, 1):
        record = records[job.id]
        run_dir = model_run_dir(cfg, job.id)
        if (run_dir / MODEL_SUBDIR).is_dir() and (run_dir / RESULT_FILE).is_file():
            result = _portable_run(RunResult.from_json(run_dir / RESULT_FILE), cfg)
            status[job.id] = "present"
        else:
            claim = plan.store.try_claim(job.id)
            if claim is None:
                raise RebuildMismatchError(f"{job.id}: another process holds its lock "
                                           f"({plan.store.lock_path(job.id)}); try again when it has finished")
            try:
                if run_dir.exists():
                    shutil.rmtree(run_dir)  # an incomplete run folder (no weights): scratch, not a record
                log(f"[{n}/{len(recorded)}] {job.id}: fine-tuning again from its record")
                work_dir = plan.store.work_root / job.id
                work_dir.mkdir(parents=True, exist_ok=True)
                ctx = JobContext(job=job, work_dir=work_dir, artifacts_dir=Path(plan.artifacts_dir),
                                 dep_results={}, settings=dict(plan.settings))
                result = run_finetune(dict(job.params), ctx)
            finally:
                claim.release()
            status[job.id] = "rebuilt"
        result = json.loads(canonical_json(result))  # as the runner stores it
        diff = _first_difference(record["result"], result, "result", rtol)
        if diff:
            if status[job.id] == "rebuilt":
                aside = run_dir.with_name(run_dir.name + ".mismatch")
                shutil.rmtree(aside, ignore_errors=True)
                run_dir.rename(aside)
                kept = f"the rebuilt run is kept in {_shown(aside)} and not used"
            else:
                kept = f"the run on disk in {_shown(run_dir)} is not the recorded one"
            env = lambda r: (f"{r.get('device')}, {r.get('cpu_threads')} thread(s), "  # noqa: E731
                             + ", ".join(f"{k} {v}" for k, v in sorted((r.get("versions") or {}).items())))
            where = (f"recorded on {env(record['result'])}, now on {env(result)}"
                     if env(record["result"]) != env(result) else "same device, threads and library versions")
            raise RebuildMismatchError(
                f"{job.id}: {diff} ({_shown(plan.store.record_path(job.id))}; {where}); {kept}"
                + f"; --rtol sets the relative difference accepted (now {rtol:g})")
        log(f"[{n}/{len(recorded)}] {job.id}: {status[job.id]}, equal to its record"
            + (f" (relative tolerance {rtol:g})" if rtol else " (exactly)"))
    return status


def _portable_run(result, cfg: StudyConfig) -> dict:
    """RunResult as a dict with machine-independent paths: every path under runs_dir made relative to
    it (model_dir, init_from, transfer_report.source, ...), the encoder named by its id."""
    from .embedding_store import encoder_id

    d = _relative_paths(dataclasses.asdict(result), str(cfg.runs_dir.resolve()))
    d["encoder"] = encoder_id(d["encoder"])
    return d


def _relative_paths(obj: Any, root: str) -> Any:
    if isinstance(obj, dict):
        return {k: _relative_paths(v, root) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_relative_paths(v, root) for v in obj]
    if isinstance(obj, str) and os.path.isabs(obj):
        resolved = str(Path(obj).resolve())
        if resolved == root or resolved.startswith(root + os.sep):
            return os.path.relpath(resolved, root)
    return obj


def _settings_for(params: Mapping):
    from .settings import preset

    return preset(params["task_class"] if "task_class" in params else params["target_class"], **params["settings"])


def run_finetune(params: dict, ctx) -> dict:
    """Fine-tune a task from the pretrained encoder (a source model and its no-transfer baseline). A ``restart``
    job's params add ``train_seed``: the same LIMITED examples (sample of ``seed``), another training seed."""
    from .training import fine_tune

    cfg = _cfg(ctx)
    encoder = _check_encoder(params, cfg)
    task_data = _load(params, cfg)
    restart = "train_seed" in params
    result = fine_tune(task_data, model_run_dir(cfg, ctx.job.id), encoder=encoder, regime=params["regime"],
                       seed=params["train_seed"] if restart else params["seed"],
                       sample_seed=params["seed"] if restart else None, settings=_settings_for(params))
    return _portable_run(result, cfg)


def _without_weights(out: dict, cfg: StudyConfig, ctx) -> dict:
    """Delete a run's model weights once recorded (``outputs.keep_models: sources``, the default)."""
    from .training import MODEL_SUBDIR

    if cfg.keep_models != "all":
        shutil.rmtree(model_run_dir(cfg, ctx.job.id) / MODEL_SUBDIR, ignore_errors=True)
        out["model_dir"] = None  # weights not kept
    return out


def run_restart(params: dict, ctx) -> dict:
    """A target's no-transfer fine-tune again on the same LIMITED examples (sample of ``seed``) with another
    training seed (``train_seed``): one point of the training-noise floor. Its weights are not kept."""
    return _without_weights(run_finetune(params, ctx), _cfg(ctx), ctx)


def _source_run_dir(cfg: StudyConfig, ctx) -> Path:
    """The run directory of the job's source fine-tune (its first dependency), whose model must be on disk."""
    from .training import MODEL_SUBDIR

    source_job = ctx.job.deps[0]
    source_dir = model_run_dir(cfg, source_job)
    if not (source_dir / MODEL_SUBDIR).is_dir():
        p = ctx.job.params
        raise FileNotFoundError(
            f"source model {source_dir / MODEL_SUBDIR} is missing although {source_job} has a record "
            f"({ctx.job.id} needs it); rebuild it from its record with "
            f"`{rebuild_command(cfg, [p['source']], [p['source_regime']], p['seed'])}`")
    return source_dir


def run_transfer(params: dict, ctx) -> dict:
    """Intermediate-task transfer: fine-tune the target starting from the source's fine-tuned encoder."""
    from .training import fine_tune

    cfg = _cfg(ctx)
    encoder = _check_encoder(params, cfg)
    source_dir = _source_run_dir(cfg, ctx)
    task_data = _load(params, cfg, "target", "target_regime")
    run_dir = model_run_dir(cfg, ctx.job.id)
    result = fine_tune(task_data, run_dir, encoder=encoder, init_from=source_dir, regime=params["target_regime"],
                       seed=params["seed"], settings=_settings_for(params))
    return _without_weights(_portable_run(result, cfg), cfg, ctx)


def _library(cfg: StudyConfig):
    from .embedding_store import EmbeddingLibrary

    return EmbeddingLibrary(cfg.results_dir / "embeddings")


def textemb_for_job(params: Mapping, cfg: StudyConfig):
    """The TextEmb a ``textemb`` job with these params computes: the task's training rows (same regime/seed
    rows as its fine-tune) through the study's pretrained encoder."""
    from .textemb import compute_textemb

    encoder = _check_encoder(params, cfg)
    return compute_textemb(_load(params, cfg), encoder, split="train", regime=params["regime"], seed=params["seed"],
                           batch_size=params.get("batch_size", 64), max_examples=params.get("max_examples"),
                           settings=_settings_for(params))


def run_textemb(params: dict, ctx) -> dict:
    """TextEmb of a task's training rows (same regime/seed rows as its fine-tune) from the pretrained encoder."""
    cfg = _cfg(ctx)
    emb = textemb_for_job(params, cfg)
    lib = _library(cfg)
    path = lib.add([emb])
    return {"file": str(path.relative_to(cfg.results_dir)), "dim": int(emb.vector.shape[0]),
            "num_examples": emb.meta.get("num_examples"), "components": [emb.meta.get("component")]}


def run_taskemb(params: dict, ctx) -> dict:
    """TaskEmb (diagonal Fisher) of a task from the model fine-tuned on it (the ``finetune`` dependency)."""
    from .taskemb import compute_taskemb

    cfg = _cfg(ctx)
    encoder = _check_encoder(params, cfg)
    task_data = _load(params, cfg)
    comps = list(params.get("components") or DEFAULT_TASKEMB_COMPONENTS)
    if params["task_class"] == "SL":  # SL models have no [CLS] component (taskemb module docstring)
        comps = [c for c in comps if c != "cls_output"]
    model_dir = model_run_dir(cfg, ctx.job.deps[0])
    qa_loss = params.get("qa_loss", LEGACY_QA_LOSS) if params["task_class"] == "QA" else "authors"
    embs = compute_taskemb(task_data, model_dir, estimator=params["estimator"], labels=params["labels"], qa_loss=qa_loss,
                           seed=params["seed"], batch_size=params.get("batch_size", 32),
                           max_examples=params.get("max_examples"),
                           num_label_samples=params.get("num_label_samples", 100), components=comps,
                           encoder=encoder)
    for e in embs.values():  # portable paths (relative to runs_dir)
        e.meta.update(_relative_paths(dict(e.meta), str(cfg.runs_dir.resolve())))
    lib = _library(cfg)
    path = lib.add(list(embs.values()))
    first = next(iter(embs.values()))
    return {"file": str(path.relative_to(cfg.results_dir)), "components": sorted(embs),
            "num_examples": first.meta.get("num_examples"), "wall_time_s": first.meta.get("wall_time_s")}


def run_logme(params: dict, ctx) -> dict:
    """LogME of the source's fine-tuned encoder (the ``finetune`` dependency; its head is ignored) on the
    target's training rows in the target regime (the rows its fine-tune uses), as :mod:`logme` defines it."""
    from .logme import encoder_features, logme_score
    from .training import MODEL_SUBDIR

    cfg = _cfg(ctx)
    _check_encoder(params, cfg)
    model_dir = _source_run_dir(cfg, ctx) / MODEL_SUBDIR
    task_data = _load(params, cfg, "target", "target_regime")
    start = time.perf_counter()
    x, y, regression = encoder_features(model_dir, task_data, regime=params["target_regime"], seed=params["seed"],
                                        settings=_settings_for(params),
                                        **{k: params[k] for k in LOGME_KEYS if k in params})
    t_features = time.perf_counter() - start
    score = logme_score(x, y, regression=regression)
    return {"score": float(score), "num_rows": int(x.shape[0]), "dim": int(x.shape[1]),
            "is_regression": bool(regression), "feature_time_s": t_features,
            "fit_time_s": time.perf_counter() - start - t_features}


JOB_FUNCTIONS = {"finetune": run_finetune, "transfer": run_transfer, "restart": run_restart, "textemb": run_textemb,
                 "taskemb": run_taskemb, "logme": run_logme}


# --------------------------------------------------------------------------------------------------
# Results tables
# --------------------------------------------------------------------------------------------------


def results_table(plan: Plan):
    """The tidy transfer-results table (selection_metrics' contract): one row per run, baselines with
    an empty ``source``. Columns: source, target, regime, seed, score, source_class, target_class,
    job_id, train_examples, eval_examples, wall_time_s, metric_<name> per final metric."""
    import pandas as pd

    cfg_dict = plan.settings["config"]
    regimes = cfg_dict["regimes"]
    records = load_results(plan)
    rows = []
    for jid, rec in records.items():
        p, r = rec["params"], rec["result"]
        if rec["kind"] == "transfer":
            rows.append(_row(p["source"], p["target"], p["regime"], p["seed"], p["source_class"], p["target_class"],
                             jid, r, rec))
    targets_seen = set()
    for regime in regimes:
        tgt_side = _regime_sides(regime)[1]
        for jid, rec in records.items():
            p = rec["params"]
            if rec["kind"] != "finetune" or p["regime"] != tgt_side or p["task"] not in cfg_dict["targets"]:
                continue
            rows.append(_row(None, p["task"], regime, p["seed"], None, p["task_class"], jid, rec["result"], rec))
            targets_seen.add(p["task"])
    cols = ["source", "target", "regime", "seed", "score", "source_class", "target_class", "job_id",
            "train_examples", "eval_examples", "wall_time_s"]
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=cols)
    metric_cols = sorted(c for c in table.columns if c.startswith("metric_"))
    table = table[cols + metric_cols]
    table["_base"] = table["source"].isna()
    table = table.sort_values(["regime", "target_class", "target", "_base", "source", "seed"],
                              key=lambda s: s.map({"CR": 0, "SL": 1, "QA": 2}) if s.name == "target_class" else s,
                              ascending=[True, True, True, False, True, True]).drop(columns="_base")
    return table.reset_index(drop=True)


def _row(source, target, regime, seed, source_class, target_class, jid, result, rec) -> dict:
    row = {"source": source, "target": target, "regime": regime, "seed": seed, "score": result["score"],
           "source_class": source_class, "target_class": target_class, "job_id": jid,
           "train_examples": result.get("train_examples"), "eval_examples": result.get("eval_examples"),
           "wall_time_s": rec.get("wall_time_s")}
    for k, v in (result.get("final_metrics") or {}).items():
        if isinstance(v, (int, float)):
            row[f"metric_{k}"] = v
    return row


def noise_floor_runs(plan: Plan):
    """The runs behind the training-noise floor: per LIMITED target, its no-transfer fine-tune with the study's
    first seed and every ``restart`` record (same examples, other training seeds). Columns: target,
    target_class, sample_seed, train_seed, score, job_id; sorted by class, target, training seed."""
    import pandas as pd

    cfg_dict = plan.settings["config"]
    cols = ["target", "target_class", "sample_seed", "train_seed", "score", "job_id"]
    seeds = cfg_dict["seeds"]
    if not cfg_dict.get("noise_floor_seeds") or not seeds:
        return pd.DataFrame(columns=cols)
    rows = []
    for jid, rec in load_results(plan).items():
        p = rec["params"]
        if p.get("task") not in cfg_dict["targets"] or p.get("regime") != "LIMITED":
            continue
        if rec["kind"] == "finetune" and p["seed"] == seeds[0]:
            train_seed = p["seed"]
        elif rec["kind"] == "restart":
            train_seed = p["train_seed"]
        else:
            continue
        rows.append({"target": p["task"], "target_class": p["task_class"], "sample_seed": p["seed"],
                     "train_seed": train_seed, "score": rec["result"]["score"], "job_id": jid})
    table = pd.DataFrame(rows, columns=cols)
    order = {t: i for i, t in enumerate(cfg_dict["targets"])}
    table = table.sort_values(["target_class", "target", "train_seed"],
                              key=lambda c: (c.map({"CR": 0, "SL": 1, "QA": 2}) if c.name == "target_class"
                                             else c.map(order) if c.name == "target" else c))
    return table.reset_index(drop=True)


def finetune_table(plan: Plan):
    """One row per single-task fine-tune: task, task_class, regime, seed, score, train_examples,
    train_examples_per_s, wall_time_s (job), num_train_steps, job_id."""
    import pandas as pd

    rows = []
    for jid, rec in load_results(plan).items():
        if rec["kind"] != "finetune":
            continue
        p, r = rec["params"], rec["result"]
        rows.append({"task": p["task"], "task_class": p["task_class"], "regime": p["regime"], "seed": p["seed"],
                     "score": r["score"], "train_examples": r.get("train_examples"),
                     "train_examples_per_s": r.get("train_examples_per_s"), "num_train_steps": r.get("num_train_steps"),
                     "wall_time_s": rec.get("wall_time_s"), "job_id": jid})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    order = {c: i for i, c in enumerate(CLASS_ORDER)}
    table["_c"] = table["task_class"].map(order)
    return table.sort_values(["regime", "seed", "_c", "task"]).drop(columns="_c").reset_index(drop=True)


def job_times(plan: Plan):
    """Wall time per finished job, summarised per (kind, class): n, mean, min, max seconds."""
    import pandas as pd

    rows = [{"kind": rec["kind"], "class": rec.get("group"), "wall_time_s": rec.get("wall_time_s")}
            for rec in load_results(plan).values()]
    if not rows:
        return pd.DataFrame(columns=["kind", "class", "n", "mean_s", "min_s", "max_s"])
    df = pd.DataFrame(rows)
    out = df.groupby(["kind", "class"])["wall_time_s"].agg(["count", "mean", "min", "max"]).reset_index()
    return out.rename(columns={"count": "n", "mean": "mean_s", "min": "min_s", "max": "max_s"})


def study_description(cfg: StudyConfig) -> dict:
    """What produced a study's results, without machine paths: tasks by class, regimes, seeds, encoder id,
    LIMITED size, the fine-tuning settings of each class (preset + overrides), embeddings, job counts."""
    from collections import Counter

    jobs = build_jobs(cfg)
    return {
        "name": cfg.name, "description": cfg.description,
        "tasks": {c: [t for t in cfg.tasks if cfg.task_class(t) == c] for c in CLASS_ORDER},
        "sources": cfg.sources, "targets": cfg.targets, "pairs": cfg.pairs, "regimes": cfg.regimes,
        "seeds": cfg.seeds, "encoder": cfg.encoder_name(), "limited_size": cfg.limited_size,
        "data_source": cfg.data_source, "data_seed": cfg.data_seed,
        "settings": {c: cfg.finetune_settings(c).to_dict() for c in CLASS_ORDER},
        "settings_overrides": cfg.settings, "textemb": cfg.textemb, "taskemb": cfg.taskemb,
        **({"full_max_examples": cfg.full_max_examples} if cfg.full_max_examples is not None else {}),
        **({"noise_floor_seeds": cfg.noise_floor_seeds} if cfg.noise_floor_seeds else {}),
        "keep_models": cfg.keep_models, "jobs": dict(Counter(j.kind for j in jobs)),
    }


def write_tables(plan: Plan) -> dict[str, Path]:
    """Write the results tables next to the records: transfer_results.csv, finetune_results.csv,
    job_times.csv and study.json (:func:`study_description`), atomically. Returns name -> path."""
    cfg_dict = plan.settings["config"]
    out_dir = Path(cfg_dict["results_dir"])
    paths = {}
    cfg = StudyConfig(**{**cfg_dict, **{k: Path(cfg_dict[k]) for k in ("results_dir", "runs_dir")},
                         "config_path": None})
    paths["study"] = out_dir / "study.json"
    atomic_write_text(paths["study"], json.dumps(study_description(cfg), indent=1, ensure_ascii=False) + "\n")
    tables = [("transfer_results", results_table(plan)), ("finetune_results", finetune_table(plan)),
              ("job_times", job_times(plan))]
    if cfg.noise_floor_seeds:
        tables.append(("noise_floor_runs", noise_floor_runs(plan)))
    for name, frame in tables:
        path = out_dir / f"{name}.csv"
        atomic_write_text(path, frame.to_csv(index=False, float_format="%.6g"))
        paths[name] = path
    return paths


# --------------------------------------------------------------------------------------------------
# Report: source-selection evaluation (§5)
# --------------------------------------------------------------------------------------------------


def selection_rankers(plan: Plan, results) -> dict[str, dict[str, Any]]:
    """Rankers per transfer regime: TextEmb, TaskEmb per component and fused, TextEmb+TaskEmb (from the
    study's embeddings, first seed), DataSize (source-regime sizes and FULL sizes), CurveGrad (loss curves
    of the source fine-tunes, first seed), LogME (the study's ``logme`` records, first seed, when every
    evaluated pair has one) and Random (exact expectation)."""
    from .embedding_store import EmbeddingLibrary
    from .logme import LogMERanker
    from .selection import CurveGradRanker, DataSizeRanker, RandomRanker, embedding_rankers

    cfg = plan.settings["config"]
    seed = cfg["seeds"][0]
    lib = EmbeddingLibrary(Path(cfg["results_dir"]) / "embeddings")
    all_embs = lib.load(seed=seed)
    records = load_results(plan)
    out: dict[str, dict[str, Any]] = {}
    for regime in sorted(results["regime"].unique()):
        src_side, tgt_side = _regime_sides(regime)
        rankers: dict[str, Any] = {}
        sources = sorted(set(results.loc[(results["regime"] == regime) & results["source"].notna(), "source"]))
        targets = sorted(set(results.loc[results["regime"] == regime, "target"]))
        src_embs = [e for e in all_embs if e.meta.get("regime") == src_side and e.meta.get("task") in sources]
        tgt_embs = [e for e in all_embs if e.meta.get("regime") == tgt_side and e.meta.get("task") in targets]
        variants = sorted({(e.meta.get("estimator"), e.meta.get("label_source")) for e in src_embs
                           if e.meta.get("method") == "TaskEmb"})
        covered = set(sources) | set(targets)

        def shared_components(estimator, labels):
            per_task: dict[str, set] = {}
            for e in src_embs + tgt_embs:
                if e.meta.get("method") == "TaskEmb" and (e.meta.get("estimator"), e.meta.get("label_source")) == (
                        estimator, labels):
                    per_task.setdefault(e.meta["task"], set()).add(e.meta["component"])
            if set(per_task) != covered:
                return []
            return sorted(set.intersection(*per_task.values()))

        text_tasks = {e.meta["task"] for e in src_embs + tgt_embs if e.meta.get("method") == "TextEmb"}
        if text_tasks >= covered:
            r = embedding_rankers([e for e in src_embs if e.meta.get("method") == "TextEmb"],
                                  [e for e in tgt_embs if e.meta.get("method") == "TextEmb"])
            rankers.update(r)
        for estimator, labels in variants:
            comps = shared_components(estimator, labels)
            if not comps:
                continue
            suffix = "" if (estimator, labels) == ("paper", "gold") else f" ({estimator}, {labels})"
            r = embedding_rankers(
                [e for e in src_embs if e.meta.get("method") in ("TaskEmb", "TextEmb")],
                [e for e in tgt_embs if e.meta.get("method") in ("TaskEmb", "TextEmb")],
                components=comps, estimator=[estimator, None], label_source=[labels, None])
            for name, ranker in r.items():
                if name == "TextEmb":
                    continue
                ranker.method = name + suffix
                rankers[name + suffix] = ranker
        rankers["DataSize"] = DataSizeRanker.from_tasks(sources, data_dir=cfg["data_dir"], regime=regime)
        if src_side == "LIMITED":
            full = DataSizeRanker.from_tasks(sources, data_dir=cfg["data_dir"], regime="FULL")
            full.method = "DataSize (full-set sizes)"
            rankers[full.method] = full
        curves = {}
        for rec in records.values():
            p = rec["params"]
            if rec["kind"] == "finetune" and p["regime"] == src_side and p["seed"] == seed and p["task"] in sources:
                curves[p["task"]] = rec["result"]["loss_curve"]
        if set(curves) >= set(sources):
            rankers["CurveGrad"] = CurveGradRanker(curves)
        logme_scores = {(rec["params"]["source"], rec["params"]["target"]): rec["result"]["score"]
                        for rec in records.values() if rec["kind"] == "logme" and rec["params"]["regime"] == regime
                        and rec["params"]["seed"] == seed}
        pairs = results.loc[(results["regime"] == regime) & results["source"].notna(), ["source", "target"]]
        if logme_scores and set(map(tuple, pairs.to_numpy())) <= set(logme_scores):
            rankers["LogME"] = LogMERanker.from_scores(logme_scores)
        rankers["Random"] = RandomRanker(expected=True)
        out[regime] = rankers
    return out


def report(cfg: StudyConfig, *, figures: bool = True, log=print) -> dict[str, Path]:
    """Aggregate the records into tables and evaluate source selection on the finished targets.

    Writes under ``<results_dir>``: transfer_results.csv, finetune_results.csv, job_times.csv and, in
    ``evaluation/``: per_target.csv (every method × regime × candidate set × target), summary.csv
    (means per target class and "all"), paired_comparison.csv (each method against Random and DataSize over
    the same targets, with bootstrap intervals), target_spread.csv (per target and candidate set: how far
    apart its sources' scores are, against one evaluation's standard error), summary_separable.csv
    (summary.csv without, per candidate set, the targets whose spread is below ``report.min_spread_in_se``
    standard errors, default 2), one wide table per metric (``table_<metric>.csv`` and a markdown
    ``selection_tables.md``), and figures (transfer gains, selection metrics). Only targets whose every
    candidate source has a result are evaluated."""
    import pandas as pd

    from . import selection_metrics as sm

    plan = plan_for(cfg)
    paths = write_tables(plan)
    results = results_table(plan)
    if results.empty:
        log("no results yet")
        return paths
    by_regime = complete_targets_by_regime(cfg, results)
    complete = [t for t in cfg.targets if any(t in ts for ts in by_regime.values())]
    keep = [t in by_regime.get(r, ()) for r, t in zip(results["regime"], results["target"])]
    eval_results = results[keep]
    out_dir = cfg.results_dir / "evaluation"
    out_dir.mkdir(parents=True, exist_ok=True)
    for regime, targets in by_regime.items():
        log(f"{regime}: {len(targets)} complete target(s) of {len(cfg.targets)}: {', '.join(targets) or '-'}")
    if not complete:
        return paths
    rankers = selection_rankers(plan, eval_results)
    if cfg.logme is not None:
        for regime, regime_rankers in rankers.items():
            if "LogME" not in regime_rankers:
                n_pairs = int(((eval_results["regime"] == regime) & eval_results["source"].notna()).sum())
                log(f"{regime}: LogME left out of the evaluation until every evaluated pair has its score "
                    f"({n_pairs} pairs; `tasktransfer study run` computes the missing ones)")
    rep = cfg.report
    ks = tuple(rep.get("ks", (1, 3, 5)))
    relevance = rep.get("relevance", "minmax")
    per_target = pd.concat([sm.evaluate_rankers(eval_results[eval_results["regime"] == regime], regime_rankers,
                                                ks=ks, relevance=relevance)
                            for regime, regime_rankers in rankers.items()], ignore_index=True)
    # one TaskEmb component, chosen without looking at the target it is scored on (no post-hoc pick)
    component_methods = sorted(m for m in per_target["method"].unique()
                               if m.startswith("TaskEmb[") and m.endswith("]"))
    loto, loto_choices = sm.leave_one_target_out(per_target, component_methods)
    per_target = pd.concat([per_target, loto], ignore_index=True)
    summary = sm.summarize_selection(per_target)
    paired = sm.paired_comparison(per_target)
    spread = sm.target_spread(eval_results, per_example_targets=_per_example_targets(complete),
                              candidate_sets=sm.CANDIDATE_SETS_REPORT_ORDER)
    spread = spread.sort_values("target", key=lambda col: col.map(complete.index), kind="stable")
    # sensitivity: the same evaluation without the targets whose candidate sources (all-class and in-class
    # judged apart) one evaluation cannot separate
    min_se = min_spread_in_se(cfg)
    separable, noisy = sm.drop_inseparable(per_target, spread, min_se)
    summary_separable = sm.summarize_selection(separable)
    frames = [("per_target", per_target), ("summary", summary), ("paired_comparison", paired),
              ("target_spread", spread), ("summary_separable", summary_separable), ("loto_choices", loto_choices)]
    # training-noise floor: restarts of each LIMITED target's no-transfer fine-tune with other training seeds
    noise_md = []
    if cfg.noise_floor_seeds:
        floor = sm.training_noise_floor(noise_floor_runs(plan))
        measured = floor[floor["n_runs"] > 1]
        if measured.empty:
            noise_md = ["## Training-noise floor", "",
                        f"Not measured yet: `tasktransfer study run CONFIG --only 'restart__*'` fine-tunes each "
                        f"LIMITED target again with training seeds {cfg.noise_floor_seeds}.", ""]
        else:
            noise_sep = sm.noise_separation(eval_results, measured, candidate_sets=sm.CANDIDATE_SETS_REPORT_ORDER)
            noise_sep = noise_sep.sort_values("target", key=lambda col: col.map(complete.index), kind="stable")
            kept, noise_noisy = sm.drop_inseparable(per_target, noise_sep, min_se, column="spread_in_noise")
            frames += [("noise_floor", floor), ("target_noise", noise_sep),
                       ("summary_noise_separable", sm.summarize_selection(kept))]
            noise_md = _noise_markdown(floor, noise_sep, sm.NOISE_Z)
            noise_md += _separable_markdown(summary, sm.summarize_selection(kept), noise_noisy, min_se,
                                            column="spread_in_noise", unit="sd·√2", title="the training noise",
                                            file="summary_noise_separable.csv",
                                            scale="standard deviations of a difference of two runs",
                                            kept="measured noise floor")
    for name, frame in frames:
        p = out_dir / f"{name}.csv"
        atomic_write_text(p, frame.to_csv(index=False, float_format="%.6g"))
        paths[name] = p
    evaluated = "; ".join(f"{r}: {len(ts)} of {len(cfg.targets)}" + (f" ({', '.join(ts)})" if ts else "")
                          for r, ts in by_regime.items())
    md = [f"# Source selection on study `{cfg.name}`",
          "",
          f"Targets evaluated (those whose every candidate source is measured), per regime — {evaluated}. "
          "Ground truth: measured transfer scores "
          f"(mean over seeds {cfg.seeds}); relevance for NDCG: `{relevance}`. Candidates: in-class = sources of "
          "the target's class, all-class = every other task. Cells are means over targets; rho: rank of the "
          "truly best source (lower is better); ndcg: higher is better; regret@k: % below the best source "
          "(lower is better).", "",
          f"`TaskEmb[<component>]` rows are single components, each scored on every target: picking the best "
          f"of them by these tables is a choice made on the targets it is scored on. `{sm.LOTO_COMPONENT_METHOD}` "
          "is the honest version: for each target the component with the best mean metric over the OTHER "
          "targets (same regime, candidate set; each metric chooses for itself), scored on the held-out "
          "target (`loto_choices.csv`). TaskEmb components that hold only rounding noise (zero in exact "
          "arithmetic, flagged in the embeddings' metadata) are left out of every TaskEmb ranking and fusion.",
          ""]
    metrics = [m for m in sm.METRICS_ORDER if m in set(summary["metric"])]
    for metric in metrics:
        table = sm.selection_table(summary, metric)
        p = out_dir / f"table_{metric.replace('@', '_at_')}.csv"
        atomic_write_text(p, table.to_csv(float_format="%.4g"))
        paths[f"table_{metric}"] = p
        md += [f"## {metric}", "", _markdown(table), ""]
    md += _paired_markdown(paired)
    md += _spread_markdown(spread)
    md += _separable_markdown(summary, summary_separable, noisy, min_se)
    md += noise_md
    md += _claims_section(cfg, plan, eval_results, per_target, rankers, out_dir, paths, all_results=results)
    p = out_dir / "selection_tables.md"
    atomic_write_text(p, "\n".join(md) + "\n")
    paths["selection_tables"] = p
    if figures:
        paths.update(_figures(cfg, eval_results, summary, out_dir))
    return paths


def _complete_targets(cfg: StudyConfig, results, regime: str | None = None) -> list[str]:
    """Targets complete in ``regime`` (None: in every regime of the study)."""
    by_regime = complete_targets_by_regime(cfg, results)
    return [t for t in cfg.targets if all(t in by_regime[r] for r in (cfg.regimes if regime is None else [regime]))]


def complete_targets_by_regime(cfg: StudyConfig, results) -> dict[str, list[str]]:
    """Per regime of the config: the targets with a baseline and a transfer from every candidate source
    for every seed (a regime still being computed has fewer)."""
    pairs = study_pairs(cfg)
    out = {}
    for regime in cfg.regimes:
        out[regime] = []
        for t in cfg.targets:
            sub = results[(results["target"] == t) & (results["regime"] == regime)]
            want = {s for s, tt in pairs if tt == t}
            if all(want <= set(sub.loc[sub["seed"] == seed, "source"].dropna())
                   and sub.loc[sub["seed"] == seed, "source"].isna().any() for seed in cfg.seeds):
                out[regime].append(t)
    return out


def claim_inputs(cfg: StudyConfig, rankers: Mapping[str, Mapping[str, Any]], results) -> dict[str, Any]:
    """What :func:`claims.evaluate_claims` needs beyond the tables, from the study: the targets with a noise
    bound, the sources' trained sizes (their whole training set, capped at the study's LIMITED size on a
    LIMITED source side) and whole training-set sizes, the source–target
    TextEmb cosine similarities (the TextEmb rankers) and the DataSize ranker each regime compares with."""
    import pandas as pd

    from .loaders import task_size

    sims, datasize = [], {}
    sources = sorted(set(results["source"].dropna()))
    task_sizes = {s: float(task_size(s, data_dir=cfg.data_dir, source=cfg.data_source, seed=cfg.data_seed))
                  for s in sources}
    sizes = {regime: {s: (min(n, cfg.limited_size) if regime.split("→")[0] == "LIMITED" else n)
                      for s, n in task_sizes.items()} for regime in rankers}
    for regime, by_method in rankers.items():
        datasize[regime] = "DataSize (full-set sizes)" if "DataSize (full-set sizes)" in by_method else "DataSize"
        text = by_method.get("TextEmb")
        rows = results[(results["regime"] == regime) & results["source"].notna()]
        if text is not None:
            for target, grp in rows.groupby("target"):
                for source, sim in text.scores(target, sorted(set(grp["source"]))).items():
                    sims.append({"regime": regime, "source": source, "target": target, "similarity": sim})
    return {"per_example_targets": _per_example_targets(sorted(set(results["target"]))), "source_sizes": sizes,
            "source_task_sizes": task_sizes, "datasize_method": datasize,
            "similarity": pd.DataFrame(sims, columns=["regime", "source", "target", "similarity"])}


def _claims_section(cfg: StudyConfig, plan: Plan, eval_results, per_target, rankers, out_dir: Path,
                    paths: dict, all_results=None) -> list[str]:
    """Claims (a)–(e) of the paper per regime (:mod:`claims`): writes claims.csv and transfer_summary.csv,
    returns the markdown section."""
    from .claims import claims_markdown, evaluate_claims

    claims, summary = evaluate_claims(eval_results, per_target, regimes=cfg.regimes, targets_expected=len(cfg.targets),
                                      **claim_inputs(cfg, rankers, eval_results))
    frames = [("claims", claims), ("transfer_summary", summary)]
    md = claims_markdown(claims, summary)
    measured, measured_md = measured_so_far(cfg, eval_results, eval_results if all_results is None else all_results)
    if measured is not None:
        frames.append(("transfer_summary_measured", measured))
        md += measured_md
    for name, frame in frames:
        p = out_dir / f"{name}.csv"
        atomic_write_text(p, frame.to_csv(index=False, float_format="%.6g"))
        paths[name] = p
    return md


def measured_so_far(cfg: StudyConfig, eval_results, all_results):
    """Regimes of the study with measured transfers but no complete target yet: their pairs so far, summarised as
    :func:`claims.transfer_summary` does (not evidence for a claim: no target has all its sources). Returns
    (table or None, markdown lines)."""
    from .claims import transfer_pairs, transfer_summary

    partial = [r for r in cfg.regimes if r not in set(eval_results["regime"])
               and (all_results["regime"].eq(r) & all_results["source"].notna()).any()]
    if not partial:
        return None, []
    sub = all_results[all_results["regime"].isin(partial)]
    measured = transfer_summary(transfer_pairs(sub, per_example_targets=_per_example_targets(cfg.targets)))
    md = ["### Measured so far in regimes without a complete target", "",
          "Not evidence for or against a claim yet (no target has all its sources): the pairs measured so far, "
          f"of {len(study_pairs(cfg))} per regime (`transfer_summary_measured.csv`).", "",
          "| regime | pairs | n | targets | mean rel. gain | positive gain | beyond noise (bounded pairs) |",
          "|---|---|---|---|---|---|---|"]
    for r in measured.itertuples():
        noise = f"{r.n_beyond_noise}/{r.n_bounded}" if r.n_bounded else "—"
        md.append(f"| {r.regime} | {r.pairs} | {r.n_pairs} | {r.n_targets} | {r.mean_rel_gain:+.2%} | "
                  f"{r.n_positive}/{r.n_pairs} | {noise} |")
    md.append("")
    return measured, md


def min_spread_in_se(cfg: StudyConfig) -> float:
    """The study's ``report.min_spread_in_se`` (default :data:`MIN_SPREAD_IN_SE`)."""
    return float(cfg.report.get("min_spread_in_se", MIN_SPREAD_IN_SE))


def _per_example_targets(targets) -> list[str]:
    """Targets whose score is a mean of per-example values in [0, 1] (metrics.score_is_per_example_mean)."""
    from .metrics import score_is_per_example_mean
    from .tasks import get_task

    out = []
    for t in targets:
        spec = get_task(t)
        if score_is_per_example_mean(spec.metrics, spec.task_class):
            out.append(t)
    return out


def _spread_markdown(spread) -> list[str]:
    """Per target: how far apart its sources' transfer scores are, in units of one evaluation's noise."""
    if spread.empty:
        return []
    md = ["## How far apart are the sources? (per target)", "",
          "Best and worst transfer score among a target's sources, their spread, the best source's gain over "
          "no transfer, and for targets whose score is a mean of per-example values in [0, 1] (accuracy, "
          "SQuAD EM/F1) an upper bound on one evaluation's standard error, sqrt(p(1−p)/n) over its n "
          "evaluation examples, and how many other sources score within one such standard error of the best. "
          "Where the spread is a few standard errors or less, which source is best is partly chance, and so is "
          "every selection metric on that target; where many sources sit within one standard error of the best, "
          "the rank of the best (rho, regret@1) is chance even if one poor source widens the spread. "
          "`target_spread.csv`.", "",
          "| regime | target | candidates | n eval | baseline | best source | best | worst | spread | best gain "
          "| SE bound | spread / SE | within 1 SE of best |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(v, fmt):
        return "" if v != v else format(v, fmt)

    for r in spread.itertuples():
        md.append(f"| {r.regime} | {r.target} | {r.candidate_set} ({r.n_sources}) | {f(r.eval_examples, '.0f')} | {f(r.baseline_score, '.3f')} | "
                  f"{r.best_source} | {f(r.best_score, '.3f')} | {f(r.worst_score, '.3f')} | {f(r.spread, '.3f')} | "
                  f"{f(r.best_gain, '+.3f')} | {f(r.se_bound, '.3f')} | {f(r.spread_in_se, '.1f')} | "
                  f"{f(r.near_best, '.0f')} |")
    md.append("")
    return md


def _separable_markdown(summary, separable, noisy, min_se: float, *, column: str = "spread_in_se",
                        unit: str = "SE", title: str = "one evaluation", file: str = "summary_separable.csv",
                        scale: str = "standard errors", kept: str = "standard-error bound") -> list[str]:
    """Headline methods over all targets next to the same means without the targets in ``noisy``."""
    from .selection_metrics import CANDIDATE_SETS_REPORT_ORDER

    if noisy.empty:
        return []
    metrics = [m for m in ("rho", "ndcg", "regret@1") if m in set(summary["metric"])]
    methods = [m for m in HEADLINE_METHODS + ("Random",) if m in set(summary["method"])]
    csets = CANDIDATE_SETS_REPORT_ORDER
    left_out = "; ".join(f"{c}: " + (", ".join(f"{r.target} ({getattr(r, column):.2f} {unit})"
                                              for r in noisy[noisy["candidate_set"] == c].itertuples()) or "none")
                         for c in csets)
    md = [f"## Without the targets whose sources {title} cannot separate", "",
          f"Left out: targets whose candidate sources' spread is below {min_se:g} {scale} "
          f"(`report.min_spread_in_se`), judged for each candidate set apart — {left_out}. Each cell: the mean "
          f"over every evaluated target → the mean over the rest (`{file}`); targets without a "
          f"{kept} are kept.", "",
          "| method | regime | " + " | ".join(f"{m} {c}" for c in csets for m in metrics) + " |",
          "|---|---|" + "---|" * (len(csets) * len(metrics))]
    key = ["method", "regime", "candidate_set", "metric"]
    full = summary[summary["target_class"] == "all"].set_index(key)["value"]
    rest = separable[separable["target_class"] == "all"].set_index(key)["value"]
    for regime in sorted(set(summary["regime"])):
        for method in methods:
            cells = []
            for c in csets:
                for m in metrics:
                    a = full.get((method, regime, c, m), float("nan"))
                    b = rest.get((method, regime, c, m), float("nan"))
                    cells.append("" if a != a else f"{a:.3g} → {b:.3g}")
            md.append(f"| {method} | {regime} | " + " | ".join(cells) + " |")
    md.append("")
    return md


def _noise_markdown(floor, noise_sep, z: float) -> list[str]:
    """Per target: its no-transfer score over training seeds and the sources within its training noise."""
    md = ["## Training-noise floor", "",
          "Each LIMITED target's no-transfer fine-tune was repeated on the same 1,000 examples with other training "
          "seeds (head initialisation, batch order, dropout; `noise_floor_runs.csv`, `noise_floor.csv`). sd: their "
          "sample standard deviation. The difference of two single runs has sd·√2; a source whose transfer score "
          f"lies less than {z:g}·sd·√2 below the best source's is within the training noise: another seed could "
          "have made it the best (`target_noise.csv`; the target's no-transfer sd stands in for every run on it).",
          "", "| target | runs | scores by training seed | sd |", "|---|---|---|---|"]
    for r in floor.itertuples():
        md.append(f"| {r.target} | {r.n_runs} | {r.scores.replace(';', ', ')} | "
                  + ("" if r.sd != r.sd else f"{r.sd:.4f}") + " |")
    if not noise_sep.empty:
        md += ["", "| regime | target | candidates | best source | spread / (sd·√2) | sources within the noise |",
               "|---|---|---|---|---|---|"]
        for r in noise_sep.itertuples():
            names = r.within_noise_sources.replace(";", ", ") if r.within_noise else "none"
            md.append(f"| {r.regime} | {r.target} | {r.candidate_set} | {r.best_source} | "
                      f"{r.spread_in_noise:.2f} | {r.within_noise} of {r.n_sources - 1}: {names} |")
    md.append("")
    return md


HEADLINE_METHODS = ("TextEmb", "TaskEmb", "TaskEmb (one component, chosen leave-one-target-out)", "TextEmb+TaskEmb",
                    "LogME", "CurveGrad", "DataSize")


def _paired_markdown(paired) -> list[str]:
    """Headline methods against Random and DataSize over all evaluated targets: mean difference, its
    bootstrap interval and wins / ties / losses, per regime and candidate set."""
    sub = paired[(paired["target_class"] == "all") & paired["method"].isin(HEADLINE_METHODS)]
    if sub.empty:
        return []
    metrics = list(dict.fromkeys(sub["metric"]))
    md = ["## Paired comparison with Random and DataSize", "",
          "Over the evaluated targets: mean of (method − baseline), 95% percentile-bootstrap interval over "
          "targets, and wins/ties/losses (a win: the method is better on that target; lower is better for rho "
          "and regret). An interval that contains 0 means these targets do not separate the two methods. "
          "All rows, per class too, with Wilcoxon signed-rank p-values: `paired_comparison.csv`.", ""]
    cells = sub.set_index(["baseline", "method", "regime", "candidate_set", "metric"])
    for base in dict.fromkeys(sub["baseline"]):
        md += [f"### against {base}", "", "| method | regime | candidates | " + " | ".join(metrics) + " |",
               "|---|---|---|" + "---|" * len(metrics)]
        rows = sorted({(r.method, r.regime, r.candidate_set) for r in sub[sub["baseline"] == base].itertuples()},
                      key=lambda k: (HEADLINE_METHODS.index(k[0]), k[1], k[2]))
        for method, regime, cset in rows:
            text = []
            for metric in metrics:
                key = (base, method, regime, cset, metric)
                r = cells.loc[key] if key in cells.index else None
                text.append("" if r is None or r.n_targets == 0 else
                            f"{r.mean_diff:+.3g} [{r.ci_low:+.3g}, {r.ci_high:+.3g}] {r.wins}/{r.ties}/{r.losses}")
            md.append(f"| {method} | {regime} | {cset} | " + " | ".join(text) + " |")
        md.append("")
    return md


def _markdown(table) -> str:
    cols = [" / ".join(str(x) for x in c) if isinstance(c, tuple) else str(c) for c in table.columns]
    lines = ["| method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for idx, row in table.iterrows():
        cells = ["" if v != v else f"{v:.3g}" for v in row.tolist()]
        lines.append(f"| {idx} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _figures(cfg: StudyConfig, results, summary, out_dir: Path) -> dict[str, Path]:
    from . import plots
    from . import selection_metrics as sm

    paths = {}
    fig_dir = out_dir / "figures"
    try:
        gains = sm.mean_transfer(results)
        for regime in sorted(gains["regime"].unique()):
            slug = regime.replace("→", "_to_")
            fig = plots.transfer_gain_heatmap(gains[gains["regime"] == regime])
            paths[f"gains_{slug}"] = plots.save_figure(fig, f"{cfg.name}_transfer_gains_{slug}", fig_dir)
            fig = plots.target_score_violins(results, regime=regime)
            paths[f"fig2_{slug}"] = plots.save_figure(fig, f"{cfg.name}_target_scores_{slug}", fig_dir)
        pair = ("LIMITED→LIMITED", "FULL→LIMITED")
        if set(pair) <= set(gains["regime"]):
            fig = plots.regime_gains_side_by_side(gains, pair)
            paths["regime_gains"] = plots.save_figure(fig, f"{cfg.name}_regime_gains_LIMITED_vs_FULL_sources", fig_dir)
        headline = ["TextEmb", "TaskEmb", "TextEmb+TaskEmb", "DataSize", "CurveGrad", "Random"]
        for (regime, cset), sub in summary[summary["method"].isin(headline)].groupby(["regime", "candidate_set"]):
            slug = f"{regime.replace('→', '_to_')}_{cset}"
            fig = plots.selection_metric_bars(sub, metrics=("rho", "ndcg", "regret@1"),
                                              title=f"Source selection, {regime}, {cset} candidates")
            paths[f"selection_{slug}"] = plots.save_figure(fig, f"{cfg.name}_selection_{slug}", fig_dir)
    except Exception as err:  # figures must not lose the tables
        logger.warning("figures failed: %s", err)
    return paths


# --------------------------------------------------------------------------------------------------
# Command line: tasktransfer study run|status|report|rebuild-models CONFIG (the parsers are in cli.py)
# --------------------------------------------------------------------------------------------------


def _stamp(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}", flush=True)


def _cmd_run(args) -> int:
    """``tasktransfer study run`` (the parser is in ``cli``; its errors are reported there)."""
    from .engines import make_engine

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    quiet_library_output()  # one log line per job start and finish, no per-batch bars or loading reports
    cfg = load_study_config(args.config)
    plan = plan_ref(cfg).load()
    try:
        selected = select_study_jobs(cfg, plan, only=args.only, targets=args.target)
    except UserInputError:
        raise
    except ValueError as err:  # a --only pattern that matches no job (runner.select_jobs)
        raise StudyConfigError(f"--only: {err}") from None
    jobs = plan.jobs if selected is None else [plan.by_id[i] for i in selected]
    if args.dry_run:
        done = plan.store.done_ids()
        for j in jobs:
            print(f"{j.id}  deps={','.join(j.deps) or '-'}" + ("  [done]" if j.id in done else ""))
        print(f"{len(jobs)} jobs" + ("" if selected is None else f" selected of {len(plan.jobs)}"))
        from .study_cost import estimate_study_cost, format_study_cost

        print(format_study_cost(estimate_study_cost(cfg, jobs)))
        return 0
    engine = make_engine(cfg.engine, default_folder=cfg.runs_dir / "submitit", workers=args.workers,
                         kind=args.engine)
    what = f"{len(plan.jobs)} jobs" if selected is None else f"{len(selected)} of {len(plan.jobs)} jobs selected"
    _stamp(f"study {cfg.name}: {what}; records in {plan.records_dir}; engine {type(engine).__name__}")
    summary = engine.run(plan, retry_failed=args.retry_failed, max_jobs=args.max_jobs, job_ids=selected,
                         log=_stamp)
    write_tables(plan)
    p = progress(plan)
    _stamp(f"ran {len(summary.ran)} job(s), {len(summary.failed)} failed attempt(s); {p.line()}")
    return 0 if p.failed == 0 else 1


def _cmd_status(args) -> int:
    cfg = load_study_config(args.config)
    plan = plan_for(cfg)
    print(f"study {cfg.name} ({cfg.config_path})")
    workers = args.workers or max(1, progress(plan).running)
    print(progress(plan, workers=workers).table())
    if args.workers is None:
        print(f"(ETA assumes {workers} worker(s), as many as jobs running now)")
    return 0


def _cmd_rebuild_models(args) -> int:
    logging.basicConfig(level=logging.WARNING)
    cfg = load_study_config(args.config)
    quiet_library_output()  # one line per model, no per-batch bars or loading reports
    try:
        status = rebuild_models(cfg, tasks=args.task, regime=args.regime, seeds=args.seed, rtol=args.rtol,
                                log=_stamp)
    except FileNotFoundError as e:  # nothing recorded to rebuild, a data file missing: one line (cli.main)
        if isinstance(e, UserInputError):
            raise
        raise MissingFileError(str(e)) from None
    n = sum(v == "rebuilt" for v in status.values())
    _stamp(f"{n} model(s) rebuilt, {len(status) - n} already on disk; all {len(status)} equal to their records")
    return 0


def _cmd_report(args) -> int:
    logging.basicConfig(level=logging.WARNING)
    cfg = load_study_config(args.config)
    paths = report(cfg, figures=not args.no_figures)
    for name, path in paths.items():
        print(f"{name}: {path}")
    summary = paths.get("selection_tables")
    if summary:
        print(Path(summary).read_text())
    return 0


__all__ = ["StudyConfig", "StudyConfigError", "load_study_config", "study_config_from_dict", "build_jobs",
           "plan_for", "study_plan", "plan_ref", "select_study_jobs", "min_spread_in_se", "complete_targets_by_regime",
           "claim_inputs", "measured_so_far", "noise_floor_runs", "results_table", "finetune_table", "write_tables",
           "report", "JOB_FUNCTIONS", "finetune_id", "transfer_id", "textemb_id", "taskemb_id", "restart_id",
           "source_model_dirs", "rebuild_models", "rebuild_command", "RebuildMismatchError"]
