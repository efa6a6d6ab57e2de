"""A study's results tables, written next to its records after every job: transfer_results.csv (the tidy
table :mod:`tasktransfer_utils.selection.evaluation` reads), finetune_results.csv, job_times.csv,
noise_floor_runs.csv and study.json (what produced the results)."""

from __future__ import annotations

import json
from pathlib import Path

from .config import StudyConfig
from .jobs import _regime_sides, build_jobs, CLASS_ORDER
from .runner import atomic_write_text, job_wall_time_s, load_results, Plan


# --------------------------------------------------------------------------------------------------
# Results tables
# --------------------------------------------------------------------------------------------------


def results_table(plan: Plan):
    """The tidy transfer-results table (selection.evaluation's contract): one row per run, baselines with
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
            "train_examples", "eval_examples", "wall_time_s", "precision"]
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
           "wall_time_s": job_wall_time_s(rec), "precision": run_precision(result)}
    for k, v in (result.get("final_metrics") or {}).items():
        if isinstance(v, (int, float)):
            row[f"metric_{k}"] = v
    return row


def run_precision(result: dict) -> str:
    """How a fine-tune computed, from its result: the device kind and the training precision, e.g. "cpu fp32",
    "cuda bf16", "cuda fp32" (a GPU run with ``$TASKTRANSFER_MIXED_PRECISION=no``)."""
    device = str(result.get("device") or "cpu").split(":")[0]
    return f"{device} {result.get('mixed_precision') or 'fp32'}"


def precision_mismatches(results):
    """The transfer rows of a results table whose number format (the second word of :func:`run_precision`)
    differs from that of the no-transfer baseline they are measured against (same regime, target and seed):
    their gain mixes the effect of the source with that of bf16/fp16 against float32 training. A float32 run on
    a GPU against a CPU baseline is the same computation up to rounding and is not flagged. Columns: regime,
    target, seed, source, precision, baseline_precision."""
    import pandas as pd

    cols = ["regime", "target", "seed", "source", "precision", "baseline_precision"]
    if results.empty or "precision" not in results.columns:
        return pd.DataFrame(columns=cols)
    base = results[results["source"].isna()].set_index(["regime", "target", "seed"])["precision"]
    pairs = results[results["source"].notna()].copy()
    keys = list(zip(pairs["regime"], pairs["target"], pairs["seed"]))
    pairs["baseline_precision"] = [base.get(k) for k in keys]
    fmt = lambda col: col.astype(str).str.split().str[-1]  # noqa: E731 - "cuda bf16" -> "bf16"
    bad = pairs[pairs["baseline_precision"].notna() & (fmt(pairs["precision"]) != fmt(pairs["baseline_precision"]))]
    return bad[cols].reset_index(drop=True)


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
    train_examples_per_s, wall_time_s (the job's, every attempt: :func:`runner.job_wall_time_s`), num_train_steps,
    job_id."""
    import pandas as pd

    rows = []
    for jid, rec in load_results(plan).items():
        if rec["kind"] != "finetune":
            continue
        p, r = rec["params"], rec["result"]
        rows.append({"task": p["task"], "task_class": p["task_class"], "regime": p["regime"], "seed": p["seed"],
                     "score": r["score"], "train_examples": r.get("train_examples"),
                     "train_examples_per_s": r.get("train_examples_per_s"), "num_train_steps": r.get("num_train_steps"),
                     "wall_time_s": job_wall_time_s(rec), "job_id": jid})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    order = {c: i for i, c in enumerate(CLASS_ORDER)}
    table["_c"] = table["task_class"].map(order)
    return table.sort_values(["regime", "seed", "_c", "task"]).drop(columns="_c").reset_index(drop=True)


def job_times(plan: Plan):
    """Wall time per finished job, summarised per (kind, class, regime, device): n, mean, min, max seconds and
    jobs per hour (3600 / mean); a fine-tune resumed from a checkpoint counts every attempt
    (:func:`runner.job_wall_time_s`). ``device`` is what the job's result records ("cpu", "cuda"); records made
    before embedding and LogME jobs recorded it say "not recorded"."""
    import pandas as pd

    keys = ["kind", "class", "regime", "device"]
    rows = [{"kind": rec["kind"], "class": rec.get("group"), "regime": (rec.get("params") or {}).get("regime"),
             "device": (rec.get("result") or {}).get("device") or "not recorded",
             "wall_time_s": job_wall_time_s(rec)}
            for rec in load_results(plan).values()]
    if not rows:
        return pd.DataFrame(columns=[*keys, "n", "mean_s", "min_s", "max_s", "jobs_per_hour"])
    df = pd.DataFrame(rows)
    out = df.groupby(keys)["wall_time_s"].agg(["count", "mean", "min", "max"]).reset_index()
    out = out.rename(columns={"count": "n", "mean": "mean_s", "min": "min_s", "max": "max_s"})
    out["jobs_per_hour"] = 3600.0 / out["mean_s"]
    return out


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
