"""A study's config: the YAML file's schema, :class:`StudyConfig` (what the job graph and the job functions
read), loading it with one-line errors that name the file and the field, and saving one."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..embeddings.store import QA_LOSSES
from ..errors import MissingFileError, suggest, UserInputError
from .runner import atomic_write_text


#: default of ``report.min_spread_in_se``: targets whose sources lie closer than this many standard errors
#: are left out of the report's sensitivity table
MIN_SPREAD_IN_SE = 2.0
SETTINGS_KEYS = ("all", "CR", "QA", "SL")
LOGME_KEYS = ("max_examples", "max_tokens", "batch_size")
DEFAULT_TASKEMB_COMPONENTS = ("encoder.layer.*.multihead_output", "encoder.layer.*.layer_output", "cls_output")

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
        from ..data.tasks import get_task

        return get_task(task).task_class.value

    def encoder_path(self) -> str:
        from ..paths import default_encoder

        return str(self.encoder) if self.encoder else default_encoder()

    def encoder_name(self) -> str:
        from ..embeddings.store import encoder_id

        return encoder_id(self.encoder_path())

    def settings_overrides(self, task_class: str) -> dict:
        out = dict(self.settings.get("all", {}))
        out.update(self.settings.get(task_class, {}))
        return out

    def finetune_settings(self, task_class: str):
        """The FineTuneSettings of a class: the authors' preset with this study's overrides."""
        from ..training.settings import preset

        return preset(task_class, **self.settings_overrides(task_class))

    def transfer_regimes(self):
        from ..data.regimes import get_transfer_regime

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
    from ..data.tasks import get_task

    try:
        return get_task(str(name))
    except (KeyError, ValueError) as err:
        raise StudyConfigError(f"{where}: field '{field_name}': {err}") from None


def study_config_from_dict(raw: Mapping[str, Any], *, base_dir: str | os.PathLike = ".",
                           where: str = "<study config>") -> StudyConfig:
    """Parse and check a study config mapping (see :func:`load_study_config`)."""
    from ..data.regimes import get_transfer_regime
    from ..training.settings import FineTuneSettings, preset
    from ..data.tasks import get_suite

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
    from ..paths import REPO_ROOT

    results_dir = outputs.get("results_dir", str(REPO_ROOT / "results" / name))
    runs_dir = outputs.get("runs_dir", str(REPO_ROOT / "runs" / name))
    keep_models = outputs.get("keep_models", "sources")
    if keep_models not in ("sources", "all"):
        raise _err(where, "outputs.keep_models", "'sources' or 'all'", keep_models)
    engine = raw.get("engine") or {"kind": "local", "workers": 1}
    if not isinstance(engine, Mapping):
        raise _err(where, "engine", "a mapping (kind: local|slurm|submitit-local, ...)", engine)
    from ..data.regimes import LIMITED_SIZE

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


def save_study_config(cfg_dict: Mapping[str, Any], path: str | os.PathLike) -> Path:
    import yaml

    path = Path(path)
    atomic_write_text(path, yaml.safe_dump(dict(cfg_dict), sort_keys=False, allow_unicode=True))
    return path
