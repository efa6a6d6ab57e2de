"""A study's config: the YAML file's schema, :class:`StudyConfig` (what the job graph and the job functions
read), loading it with one-line errors that name the file and the field, and saving one."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ..embeddings.store import QA_LOSSES
from ..errors import MissingFileError, UserInputError, suggest
from .runner import atomic_write_text


#: default of ``report.min_spread_in_se``: targets whose sources lie closer than this many standard errors
#: are left out of the report's sensitivity table
MIN_SPREAD_IN_SE = 2.0
DEFAULT_TASKEMB_COMPONENTS = ("encoder.layer.*.multihead_output", "encoder.layer.*.layer_output", "cls_output")


class StudyConfigError(UserInputError, ValueError):
    """A study config field is missing or wrong; the message names the file and the field."""


# --------------------------------------------------------------------------------------------------
# What a study reads
# --------------------------------------------------------------------------------------------------


@dataclass
class StudyConfig:
    """A parsed study config. Paths are absolute (relative ones in the file are resolved against the
    config file's folder). ``settings`` maps "all"/"CR"/"QA"/"SL" to FineTuneSettings overrides laid over
    the class preset ("all" first, then the class). ``taskemb`` lists TaskEmb variants
    (estimator, labels, components, batch_size, max_examples, qa_loss); ``textemb`` is None to skip TextEmb.
    ``qa_loss`` (default "authors", the authors' computation; see :mod:`embeddings.taskemb`) reaches the params of QA
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


# --------------------------------------------------------------------------------------------------
# The config file's schema (declared once; pydantic checks it and every error becomes one line)
# --------------------------------------------------------------------------------------------------

PositiveInt = Annotated[StrictInt, Field(ge=1)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]


def _invalid(field_name: str, expected: str, got: Any) -> PydanticCustomError:
    """A failed check of one field, as the one-line message the user sees (the file name is added later)."""
    return PydanticCustomError("study_config", "{message}",
                               {"message": f"field '{field_name}': expected {expected}, got {got!r}"})


def _task_list(value: Any, field_name: str) -> list[str]:
    """A list of task names, or a mapping class -> list (flattened in class order as written)."""
    if isinstance(value, Mapping):
        names = []
        for cls, items in value.items():
            if str(cls) not in ("CR", "QA", "SL"):
                raise _invalid(f"{field_name}.{cls}", "a task class CR, QA or SL", cls)
            if not isinstance(items, (list, tuple)):
                raise _invalid(f"{field_name}.{cls}", "a list of task names", items)
            for name in items:
                spec = _get_task(name, f"{field_name}.{cls}")
                if spec.task_class.value != cls:
                    raise _invalid(f"{field_name}.{cls}", f"{cls} tasks ({name} is {spec.task_class.value})", name)
                names.append(spec.name)
        return names
    if isinstance(value, (list, tuple)):
        return [_get_task(n, field_name).name for n in value]
    raise _invalid(field_name, "a list of task names or a mapping CR/QA/SL -> list", value)


def _get_task(name: Any, field_name: str):
    from ..data.tasks import get_task

    try:
        return get_task(str(name))
    except (KeyError, ValueError) as err:
        raise PydanticCustomError("study_config", "{message}", {"message": f"field '{field_name}': {err}"}) from None


class _Section(BaseModel):
    """A mapping of the config file: only the fields declared (a typo is an error naming the close ones), and
    no conversion of values (``"10"`` is not an integer, ``true`` is not 1)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class DataSection(_Section):
    source: Literal["local", "hub"] = "local"
    data_dir: str | None = None  # relative: to the config file's folder; None: $TASKTRANSFER_DATA_DIR
    data_seed: NonNegativeInt = 0  # seed of derived validation splits


class TextEmbSection(_Section):
    batch_size: PositiveInt | None = None
    max_examples: PositiveInt | None = None


class TaskEmbVariant(_Section):
    estimator: Literal["paper", "empirical"] = "paper"
    labels: Literal["gold", "sampled"] = "gold"
    components: list[str] | None = None  # None: DEFAULT_TASKEMB_COMPONENTS
    batch_size: PositiveInt | None = None
    max_examples: PositiveInt | None = None
    num_label_samples: PositiveInt | None = None
    qa_loss: Literal[QA_LOSSES] = "authors"  # type: ignore[valid-type]
    #: scope: the variant is computed only for tasks of these data regimes / classes (None: all)
    regimes: list[Literal["FULL", "LIMITED"]] | None = None
    classes: list[Literal["CR", "QA", "SL"]] | None = None

    @field_validator("regimes", "classes")
    @classmethod
    def _distinct_scope(cls, value: list | None, info) -> list | None:
        if value is not None and (not value or len(set(value)) != len(value)):
            raise ValueError("a non-empty list of distinct values")
        return value


class EmbeddingsSection(_Section):
    textemb: TextEmbSection | None = None  # None: no TextEmb jobs
    taskemb: list[TaskEmbVariant | None] = Field(default_factory=list)  # one mapping is a list of one
    full_max_examples: PositiveInt | None = None  # None: every training row of FULL tasks

    @field_validator("taskemb", mode="before")
    @classmethod
    def _one_variant_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, Mapping) else [] if value is None else value

    @field_validator("taskemb")
    @classmethod
    def _distinct_variants(cls, variants: list) -> list:
        """Variants differ by (estimator, labels); a second variant of the same pair must be another QA loss for
        QA tasks only (``classes: [QA]``), since only QA TaskEmbs depend on the loss."""
        seen: dict[tuple, int] = {}
        for i, v in enumerate(variants):
            v = v if v is not None else TaskEmbVariant()
            key = (v.estimator, v.labels)
            if key not in seen:
                seen[key] = i
                continue
            first = variants[seen[key]] or TaskEmbVariant()
            if v.classes != ["QA"] or v.qa_loss == first.qa_loss:
                raise _invalid(f"embeddings.taskemb[{i}]", f"a variant distinct from embeddings.taskemb[{seen[key]}] "
                               f"({key[0]}, {key[1]}): another qa_loss with classes: [QA]",
                               {"estimator": v.estimator, "labels": v.labels, "qa_loss": v.qa_loss,
                                "classes": v.classes})
        return variants


class SettingsSection(_Section):
    """Overrides of the authors' per-class fine-tuning presets (:class:`training.settings.FineTuneSettings`
    fields): ``all`` first, then the class."""

    all: dict[str, Any] | None = None
    CR: dict[str, Any] | None = None
    QA: dict[str, Any] | None = None
    SL: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _valid_presets(self) -> "SettingsSection":
        from ..training.settings import FineTuneSettings, preset

        settings = {k: dict(v or {}) for k, v in self.model_dump(exclude_unset=True).items()}
        for key in settings:
            for task_class in (("CR", "QA", "SL") if key == "all" else (key,)):
                try:
                    preset(task_class, **{**settings.get("all", {}), **settings.get(task_class, {})})
                except (TypeError, ValueError) as err:
                    known = [f.name for f in dataclasses.fields(FineTuneSettings)]
                    raise PydanticCustomError("study_config", "{message}", {
                        "message": f"field 'settings.{key}': {err} (FineTuneSettings fields: {known})"}) from None
        return self


class OutputsSection(_Section):
    results_dir: str | None = None  # None: results/<name> in the repository
    runs_dir: str | None = None  # None: runs/<name> in the repository
    keep_models: Literal["sources", "all"] = "sources"


class LogMESection(_Section):
    max_examples: PositiveInt | None = None
    max_tokens: PositiveInt | None = None
    batch_size: PositiveInt | None = None


#: the options of LogME jobs (``selection.logme.encoder_features``)
LOGME_KEYS = tuple(LogMESection.model_fields)


class ReportSection(_Section):
    ks: list[PositiveInt] | None = None  # cut-offs of NDCG@k and regret@k (default 1, 3, 5)
    relevance: str | None = None  # NDCG relevance (selection.evaluation.RELEVANCE_KINDS; default minmax)
    min_spread_in_se: Annotated[float, Field(ge=0)] | None = None  # default MIN_SPREAD_IN_SE

    @field_validator("relevance")
    @classmethod
    def _known_relevance(cls, value: str | None) -> str | None:
        from ..selection.evaluation import RELEVANCE_KINDS

        if value is not None and value not in RELEVANCE_KINDS:
            raise _invalid("report.relevance", f"one of {RELEVANCE_KINDS}", value)
        return value


def _empty_if_null(value: Any) -> Any:
    return {} if value is None else value


class StudyConfigFile(_Section):
    """The schema of a study config file (YAML); :func:`study_config_from_dict` turns a checked one into a
    :class:`StudyConfig`. See ``configs/offline_study.yaml`` for every field in use."""

    name: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9._-]+$")]
    description: Any = ""
    tasks: Any = None  # names, or a mapping CR/QA/SL -> names; exactly one of tasks and suite
    suite: StrictStr | None = None  # a name from data.tasks.SUITES
    sources: Any = None  # as tasks; None: every task
    targets: Any = None  # as tasks; None: every task
    pairs: Literal["all", "in-class"] = "all"
    regimes: list[Any] = Field(default_factory=lambda: ["LIMITED→LIMITED"], min_length=1)  # one name or a list
    seeds: list[NonNegativeInt] = Field(default_factory=lambda: [0], min_length=1)  # one seed or a list
    noise_floor_seeds: list[NonNegativeInt] = Field(default_factory=list)
    limited_size: StrictInt | None = None  # None: data.regimes.LIMITED_SIZE
    encoder: StrictStr | None = None  # None: paths.default_encoder()
    data: DataSection = Field(default_factory=DataSection)
    settings: SettingsSection = Field(default_factory=lambda: SettingsSection())
    embeddings: EmbeddingsSection = Field(default_factory=lambda: EmbeddingsSection(
        textemb=TextEmbSection(), taskemb=[TaskEmbVariant()]))
    logme: LogMESection | None = None  # None: no LogME jobs; true: LogME with the defaults
    outputs: OutputsSection = Field(default_factory=OutputsSection)
    engine: dict[str, Any] | None = None  # checked by engines.make_engine; None: one local worker
    max_attempts: PositiveInt = 2
    report: ReportSection = Field(default_factory=ReportSection)

    _null_is_empty = field_validator("data", "settings", "embeddings", "outputs", "report",
                                     mode="before")(_empty_if_null)

    @field_validator("regimes", "seeds", mode="before")
    @classmethod
    def _one_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, (str, int)) and not isinstance(value, bool) else value

    @field_validator("noise_floor_seeds", mode="before")
    @classmethod
    def _no_noise_floor(cls, value: Any) -> Any:
        return [] if value is None else value

    @field_validator("logme", mode="before")
    @classmethod
    def _logme_true(cls, value: Any) -> Any:
        return {} if value is True else value

    @field_validator("tasks", "sources", "targets")
    @classmethod
    def _known_tasks(cls, value: Any, info) -> list[str] | None:
        return None if value is None else _task_list(value, info.field_name)

    @field_validator("suite")
    @classmethod
    def _known_suite(cls, value: str | None) -> str | None:
        from ..data.tasks import get_suite

        if value is not None:
            try:
                get_suite(value)
            except (KeyError, ValueError) as err:
                raise PydanticCustomError("study_config", "{message}", {"message": f"field 'suite': {err}"}) from None
        return value

    @field_validator("regimes")
    @classmethod
    def _known_regimes(cls, value: list) -> list[str]:
        from ..data.regimes import get_transfer_regime

        try:
            return [get_transfer_regime(str(r)).name for r in value]
        except ValueError as err:
            raise PydanticCustomError("study_config", "{message}", {"message": f"field 'regimes': {err}"}) from None

    @field_validator("limited_size")
    @classmethod
    def _limited_size_in_range(cls, value: int | None) -> int | None:
        from ..data.regimes import LIMITED_SIZE

        if value is not None and not 1 <= value <= LIMITED_SIZE:
            raise _invalid("limited_size", f"an integer in [1, {LIMITED_SIZE}] (training examples in the LIMITED "
                           "regime; smaller values are for quick trials)", value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "StudyConfigFile":
        if (self.tasks is None) == (self.suite is None):
            raise PydanticCustomError("study_config", "give exactly one of 'tasks' (names) or 'suite' (a name from "
                                      "data.tasks.SUITES)")
        tasks = self.task_names()
        if len(set(tasks)) != len(tasks):
            raise _invalid("tasks", "distinct task names", tasks)
        if len(set(self.noise_floor_seeds)) != len(self.noise_floor_seeds) or self.seeds[0] in self.noise_floor_seeds:
            raise _invalid("noise_floor_seeds", "a list of distinct integers >= 0, without the study's first seed "
                           f"{self.seeds[0]} (its run is already there)", self.noise_floor_seeds)
        return self

    def task_names(self) -> list[str]:
        from ..data.tasks import get_suite

        return [t.name for t in get_suite(self.suite)] if self.suite is not None else list(self.tasks)


#: what a value of these fields must be, where it says more than the type does
_EXPECTED = {
    "name": "a non-empty name of letters, digits, '-', '_', '.'",
    "seeds": "a non-empty list of integers >= 0",
    "regimes": "a transfer-regime name or a non-empty list of them",
    "noise_floor_seeds": "a list of distinct integers >= 0, without the study's first seed",
    "engine": "a mapping (kind: local|slurm|submitit-local, ...)",
    "logme": f"a mapping with fields among {LOGME_KEYS} (or true)",
    "report.min_spread_in_se": "a number >= 0 (standard errors)",
    "embeddings.full_max_examples": "an integer >= 1 or null (all rows)",
}
_EXPECTED_BY_TYPE = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer", "float_type": "a number",
    "float_parsing": "a number", "string_type": "a string", "list_type": "a list", "dict_type": "a mapping",
    "model_type": "a mapping", "model_attributes_type": "a mapping", "bool_type": "true or false",
    "too_short": "a non-empty list", "string_pattern_mismatch": "a string matching {pattern}",
}


def _field_path(loc: Sequence[Any]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _expected(error: Mapping[str, Any]) -> str:
    ctx = error.get("ctx") or {}
    kind = error["type"]
    if kind == "literal_error":
        return ctx["expected"]
    if kind == "value_error":  # a validator's ValueError says what was expected
        return str(ctx["error"])
    for bound, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if bound in ctx:
            return f"{'an integer' if isinstance(ctx[bound], int) else 'a number'} {sign} {ctx[bound]}"
    if kind in _EXPECTED_BY_TYPE:
        return _EXPECTED_BY_TYPE[kind].format(**ctx)
    return error["msg"]


def _one_line_error(err: ValidationError, where: str) -> StudyConfigError:
    """The first of pydantic's errors as one line: the file, the field path (``embeddings.taskemb[0].estimator``),
    what was expected and what was found; unknown fields with the close known ones; "(+N more)" if there are
    other errors."""
    errors = err.errors(include_url=False)
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    first = unknown[0] if unknown else errors[0]
    parent = _field_path(first["loc"][:-1])
    if first["type"] == "extra_forbidden":
        shown = [e for e in unknown if _field_path(e["loc"][:-1]) == parent]
        names = sorted((str(e["loc"][-1]) for e in shown), key=str)
        known = sorted(_known_fields(first["loc"][:-1]))
        hints = "".join(suggest(n, known) for n in names)
        message = f"{f'field {parent!r}: ' if parent else ''}unknown field(s) {names}{hints}; known: {known}"
        rest = len(errors) - len(shown)
    else:
        path = _field_path(first["loc"])
        if first["type"] == "study_config":
            message = first["msg"]
        elif first["type"] == "missing":
            message = f"field '{path}' is missing; expected {_EXPECTED.get(path, 'a value')}"
        else:
            expected = _EXPECTED.get(path) or _expected(first)
            message = f"field '{path}': expected {expected}, got {first['input']!r}"
        rest = len(errors) - 1
    return StudyConfigError(f"{where}: {message}" + (f" (+{rest} more)" if rest else ""))


def _known_fields(loc: Sequence[Any]) -> list[str]:
    """The field names of the section at ``loc`` (a path of field names and list indices)."""
    model: Any = StudyConfigFile
    for part in loc:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        model = next((a for a in _walk_annotation(annotation) if isinstance(a, type) and issubclass(a, BaseModel)),
                     None)
        if model is None:
            return []
    return list(model.model_fields)


def _walk_annotation(annotation: Any):
    yield annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        yield from _walk_annotation(arg)


def study_config_from_dict(raw: Mapping[str, Any], *, base_dir: str | os.PathLike = ".",
                           where: str = "<study config>") -> StudyConfig:
    """Check a study config mapping against :class:`StudyConfigFile` and build its :class:`StudyConfig` (see
    :func:`load_study_config`). A field that cannot be used is a :class:`StudyConfigError`: one line naming
    ``where`` (the file), the field and what was expected."""
    if not isinstance(raw, Mapping):
        raise StudyConfigError(f"{where}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        spec = StudyConfigFile.model_validate(dict(raw))
    except ValidationError as err:
        raise _one_line_error(err, where) from None
    from ..data.regimes import LIMITED_SIZE
    from ..paths import REPO_ROOT, RUNS_DIR

    base_dir = Path(base_dir)
    tasks = spec.task_names()
    data = dict(raw.get("data") or {})
    data_dir = data.get("data_dir")
    if data_dir is not None:
        data_dir = str((base_dir / data_dir).resolve()) if not os.path.isabs(data_dir) else data_dir
    emb = raw.get("embeddings", {"textemb": {}, "taskemb": [{"estimator": "paper", "labels": "gold"}]}) or {}
    taskemb = emb.get("taskemb") or []
    variants = []
    for v in [taskemb] if isinstance(taskemb, Mapping) else taskemb:
        v = dict(v or {})  # as written, then the defaults: the order of a job's params stays that of the records
        v.setdefault("estimator", "paper")
        v.setdefault("labels", "gold")
        v.setdefault("qa_loss", "authors")
        v.setdefault("components", list(DEFAULT_TASKEMB_COMPONENTS))
        variants.append(v)
    outputs = raw.get("outputs") or {}
    results_dir = outputs.get("results_dir", str(REPO_ROOT / "results" / spec.name))
    runs_dir = outputs.get("runs_dir", str(RUNS_DIR / spec.name))
    return StudyConfig(
        name=spec.name, description=str(spec.description), tasks=tasks,
        sources=spec.sources if spec.sources is not None else list(tasks),
        targets=spec.targets if spec.targets is not None else list(tasks),
        pairs=spec.pairs, regimes=spec.regimes, seeds=list(spec.seeds), encoder=spec.encoder,
        data_source=spec.data.source, data_dir=data_dir, data_seed=spec.data.data_seed,
        limited_size=LIMITED_SIZE if spec.limited_size is None else spec.limited_size,
        settings={k: dict(v or {}) for k, v in (raw.get("settings") or {}).items()},
        textemb=None if emb.get("textemb") is None else dict(emb["textemb"]), taskemb=variants,
        full_max_examples=spec.embeddings.full_max_examples, noise_floor_seeds=list(spec.noise_floor_seeds),
        logme=None if spec.logme is None else dict(raw["logme"] if isinstance(raw["logme"], Mapping) else {}),
        keep_models=spec.outputs.keep_models, engine=dict(raw.get("engine") or {"kind": "local", "workers": 1}),
        max_attempts=spec.max_attempts, report=dict(raw.get("report") or {}),
        results_dir=(base_dir / results_dir).resolve(), runs_dir=(base_dir / runs_dir).resolve(),
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
