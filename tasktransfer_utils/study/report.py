"""The study report (Vu et al. 2020, §5): source-selection evaluation of the finished targets, the
sensitivity and noise-floor tables, the claims section, the markdown summary and the figures."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..embeddings.store import LEGACY_QA_LOSS, of_taskemb_variant, taskemb_variant
from .config import MIN_SPREAD_IN_SE, StudyConfig
from .jobs import _regime_sides, study_pairs
from .plan import plan_for
from .runner import atomic_write_text, load_results, Plan
from .tables import noise_floor_runs, precision_mismatches, results_table, write_tables

logger = logging.getLogger("tasktransfer.study")


# --------------------------------------------------------------------------------------------------
# Report: source-selection evaluation (§5)
# --------------------------------------------------------------------------------------------------


def _of_variant(embs: Sequence, variant: tuple) -> list:
    """The TaskEmbs of one variant (estimator, labels, QA loss); a QA task's only with the variant's QA loss."""
    picked = of_taskemb_variant(embs, dict(zip(("estimator", "labels", "qa_loss"), variant)))
    return [e for e in picked if e.meta.get("method") == "TaskEmb"]


def _taskemb_variants(task_embs: Sequence, configured: Sequence[Mapping]) -> list[tuple[tuple, str]]:
    """The TaskEmb variants (estimator, labels, QA loss) among stored TaskEmbs, each with the suffix of its
    rankers' names: none for the paper's estimator with gold labels and the study's QA loss for it (the
    first configured variant of that estimator and labels), " (estimator, labels)" for another estimator or
    label source, and ", <loss> QA loss" added for another QA loss."""
    main_loss = {}
    for v in configured:
        main_loss.setdefault((v.get("estimator", "paper"), v.get("labels", "gold")), v.get("qa_loss", LEGACY_QA_LOSS))
    found: dict[tuple, set] = {}
    for e in task_embs:
        est, labels, qa = taskemb_variant(e)
        found.setdefault((est, labels), set()).add(qa)
    out = []
    for (est, labels), losses in sorted(found.items()):
        main = main_loss.get((est, labels), LEGACY_QA_LOSS)
        qa_losses = sorted(losses - {None}) or [main]
        for qa in sorted(qa_losses, key=lambda q: (q != main, q)):
            parts = [] if (est, labels) == ("paper", "gold") else [est, labels]
            if qa != main:
                parts.append(f"{qa} QA loss")
            out.append(((est, labels, qa), f" ({', '.join(parts)})" if parts else ""))
    return out


def variant_components(src_embs: Sequence, tgt_embs: Sequence, sources: Sequence[str], targets: Sequence[str],
                       variant: tuple) -> list[str]:
    """The TaskEmb components of ``variant`` that every source has on the source side (``src_embs``: the
    transfer regime's source regime) and every target on the target side; [] when a task lacks the variant on
    its side (a variant stored for LIMITED only, say, ranks nothing in FULL→LIMITED: the same tasks' LIMITED
    embeddings do not stand in for their FULL ones)."""
    per_side = []
    for embs, tasks in ((src_embs, sources), (tgt_embs, targets)):
        per_task: dict[str, set] = {}
        for e in _of_variant(embs, variant):
            per_task.setdefault(e.meta["task"], set()).add(e.meta["component"])
        if not set(tasks) <= set(per_task):
            return []
        per_side += [per_task[t] for t in tasks]
    return sorted(set.intersection(*per_side)) if per_side else []


def selection_rankers(plan: Plan, results) -> dict[str, dict[str, Any]]:
    """Rankers per transfer regime: TextEmb, TaskEmb per component and fused, TextEmb+TaskEmb (from the
    study's embeddings, first seed), DataSize (source-regime sizes and FULL sizes), CurveGrad (loss curves
    of the source fine-tunes, first seed), LogME (the study's ``logme`` records, first seed, when every
    evaluated pair has one) and Random (exact expectation)."""
    from ..embeddings.store import EmbeddingLibrary
    from ..selection.logme import LogMERanker
    from ..selection.rankers import CurveGradRanker, DataSizeRanker, RandomRanker, embedding_rankers

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
        task_embs = [e for e in src_embs + tgt_embs if e.meta.get("method") == "TaskEmb"]
        variants = _taskemb_variants(task_embs, cfg.get("taskemb") or [])

        def with_textemb(embs):
            return {e.meta["task"] for e in embs if e.meta.get("method") == "TextEmb"}

        if with_textemb(src_embs) >= set(sources) and with_textemb(tgt_embs) >= set(targets):  # each on its side
            r = embedding_rankers([e for e in src_embs if e.meta.get("method") == "TextEmb"],
                                  [e for e in tgt_embs if e.meta.get("method") == "TextEmb"])
            rankers.update(r)
        for variant, suffix in variants:
            comps = variant_components(src_embs, tgt_embs, sources, targets, variant)
            if not comps:
                continue
            r = embedding_rankers(
                [e for e in src_embs if e.meta.get("method") == "TextEmb"] + _of_variant(src_embs, variant),
                [e for e in tgt_embs if e.meta.get("method") == "TextEmb"] + _of_variant(tgt_embs, variant),
                components=comps)
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

    from ..selection import evaluation as sm
    from .claims import regime_findings

    plan = plan_for(cfg)
    paths = write_tables(plan)
    results = results_table(plan)
    if results.empty:
        log("no results yet")
        return paths
    mixed = precision_mismatches(results)
    if len(mixed):
        log(f"warning: {len(mixed)} transfer(s) trained in another precision than their no-transfer baseline, e.g. "
            f"{mixed['source'].iloc[0]} → {mixed['target'].iloc[0]} ({mixed['regime'].iloc[0]}): "
            f"{mixed['precision'].iloc[0]} against {mixed['baseline_precision'].iloc[0]}; their gains mix the two "
            f"(run GPU jobs with $TASKTRANSFER_MIXED_PRECISION=no where the baselines ran on a CPU)")
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
    if len(mixed):
        p = out_dir / "precision_mismatches.csv"
        atomic_write_text(p, mixed.to_csv(index=False))
        paths["precision_mismatches"] = p
        md += ["## Precision", "",
               f"{len(mixed)} transfer(s) trained in another precision than the no-transfer baseline they are "
               "measured against (`precision_mismatches.csv`): their gains mix the source's effect with that of "
               "the precision. Rerun them with `$TASKTRANSFER_MIXED_PRECISION=no` on the GPU, or on the "
               "baselines' device.", ""]
    else:
        (out_dir / "precision_mismatches.csv").unlink(missing_ok=True)  # none left after a rerun
    md += _paired_markdown(paired)
    interim_frames, interim_md = interim_selection(cfg, plan, results, complete_regimes(cfg, results), ks=ks,
                                                   relevance=relevance)
    for name in ("interim_selection", "interim_paired_comparison"):
        p = out_dir / f"{name}.csv"
        if name in interim_frames:
            atomic_write_text(p, interim_frames[name].to_csv(index=False, float_format="%.6g"))
            paths[name] = p
        else:
            p.unlink(missing_ok=True)  # the regime is evaluated in full now (or has too few whole rows)
    md += interim_md
    md += _spread_markdown(spread)
    md += _separable_markdown(summary, summary_separable, noisy, min_se)
    md += noise_md
    claims_md, transfer_summary = _claims_section(cfg, plan, eval_results, per_target, rankers, out_dir, paths,
                                                  all_results=results)
    md += claims_md
    findings = regime_findings(transfer_summary, summary, paired, targets_expected=len(cfg.targets))
    if findings:
        md += ["## Each regime in words", "",
               "All targets, all-class candidates; differences with their 95% bootstrap interval over targets "
               "(`paired_comparison.csv`; `study.claims.regime_findings`).", ""]
        md += [text + "\n" for text in findings.values()]
    p = out_dir / "selection_tables.md"
    atomic_write_text(p, "\n".join(md) + "\n")
    paths["selection_tables"] = p
    if figures:
        paths.update(_figures(cfg, eval_results, summary, out_dir))
    return paths


#: the fewest whole source rows a regime still being measured needs for :func:`interim_selection`
MIN_INTERIM_SOURCES = 4


def complete_regimes(cfg: StudyConfig, results) -> set[str]:
    """The regimes of the config whose every target has all its candidate sources measured
    (:func:`complete_targets_by_regime`). The targets completed first are not a sample of the study's (they are
    those whose sources were cheapest to train), so a regime with some targets complete is still being measured."""
    return {r for r, ts in complete_targets_by_regime(cfg, results).items() if set(cfg.targets) <= set(ts)}


def whole_source_rows(cfg: StudyConfig, results) -> dict[str, list[str]]:
    """Per regime of the config: the sources with a transfer into every target they are paired with
    (``study_pairs``), for every seed, in the config's order."""
    pairs = study_pairs(cfg)
    out = {}
    for regime in cfg.regimes:
        rows = results[(results["regime"] == regime) & results["source"].notna()]
        have = {seed: set(zip(rows.loc[rows["seed"] == seed, "source"], rows.loc[rows["seed"] == seed, "target"]))
                for seed in cfg.seeds}
        out[regime] = [s for s in cfg.sources
                       if all({(s, t) for ss, t in pairs if ss == s} <= have[seed] for seed in cfg.seeds)]
    return out


def interim_selection(cfg: StudyConfig, plan: Plan, results, evaluated: set[str], *, ks=(1, 3, 5),
                      relevance: str = "minmax") -> tuple[dict[str, Any], list[str]]:
    """Source selection in a regime still being measured, restricted to the sources whose rows are whole
    (:func:`whole_source_rows`): for every target, the methods rank those sources (all-class; the target itself
    left out) against their measured transfers. A smaller candidate pool than the study's, and not a random one
    (the rows measured first are the cheapest sources): an interim view, not the regime's result, which needs
    every source (:func:`complete_targets_by_regime`). Regimes in ``evaluated`` (those complete,
    :func:`complete_regimes`) and regimes with fewer than :data:`MIN_INTERIM_SOURCES` whole rows are skipped.
    Returns ({name: table}, markdown lines)."""
    import pandas as pd

    from ..selection import evaluation as sm

    pools = whole_source_rows(cfg, results)
    complete = complete_targets_by_regime(cfg, results)
    summaries, paireds, md = [], [], []
    for regime in cfg.regimes:
        pool = pools[regime]
        if regime in evaluated or len(pool) < MIN_INTERIM_SOURCES:
            continue
        sub = results[(results["regime"] == regime) & results["target"].isin(cfg.targets)
                      & (results["source"].isna() | results["source"].isin(pool))]
        rankers = selection_rankers(plan, sub).get(regime, {})
        if not rankers:
            continue
        per_target = sm.evaluate_rankers(sub, rankers, candidate_sets=("all-class",), ks=ks, relevance=relevance)
        components = sorted(m for m in per_target["method"].unique() if m.startswith("TaskEmb[") and m.endswith("]"))
        if components:
            per_target = pd.concat([per_target, sm.leave_one_target_out(per_target, components)[0]],
                                   ignore_index=True)
        summary = sm.summarize_selection(per_target)
        summary.insert(0, "sources", ", ".join(pool))
        paired = sm.paired_comparison(per_target)
        paired.insert(0, "sources", ", ".join(pool))
        summaries.append(summary)
        paireds.append(paired)
        n_targets = sub["target"].nunique()
        n_complete = len(complete[regime])
        md += [f"## Interim: {regime} among the {len(pool)} sources with whole rows", "",
               f"{n_complete} of the {len(cfg.targets)} targets of {regime} have all their sources so far. "
               f"Meanwhile the methods rank, for each of its "
               f"{n_targets} targets, the sources whose rows are whole — {', '.join(pool)} — the target itself "
               "left out (all-class candidates only). A smaller pool than the study's, and not a random one: the "
               "rows measured first are the cheapest sources (the smallest full training sets), which also narrows "
               "what DataSize can tell apart. Not the regime's result (`interim_selection.csv`, "
               "`interim_paired_comparison.csv`).", "",
               "| method | rho | ndcg | regret@1 | targets |", "|---|---|---|---|---|"]
        cells = summary[summary["target_class"] == sm.ALL_CLASSES].set_index(["method", "metric"])
        for method in [m for m in HEADLINE_METHODS + ("Random",) if (m, "rho") in cells.index]:
            vals = [cells.loc[(method, m), "value"] if (method, m) in cells.index else float("nan")
                    for m in ("rho", "ndcg", "regret@1")]
            md.append(f"| {method} | " + " | ".join("" if v != v else f"{v:.3g}" for v in vals)
                      + f" | {int(cells.loc[(method, 'rho'), 'n_targets'])} |")
        md.append("")
        md += _paired_markdown(paired, title=f"Interim paired comparison ({regime}, {len(pool)} sources)",
                               file="interim_paired_comparison.csv")
    if not summaries:
        return {}, []
    return ({"interim_selection": pd.concat(summaries, ignore_index=True),
             "interim_paired_comparison": pd.concat(paireds, ignore_index=True)}, md)


def _complete_targets(cfg: StudyConfig, results, regime: str | None = None) -> list[str]:
    """Targets complete in ``regime`` (None: in every regime of the study)."""
    by_regime = complete_targets_by_regime(cfg, results)
    return [t for t in cfg.targets if all(t in by_regime[r] for r in (cfg.regimes if regime is None else [regime]))]


def expected_sources(cfg: StudyConfig) -> dict[str, int]:
    """{target: how many sources transfer into it} once the study is complete (``study_pairs``); figures of a
    regime still being measured count each target's measured sources against it."""
    from collections import Counter

    return dict(Counter(target for _, target in study_pairs(cfg)))


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

    from ..data.loaders import task_size

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
                    paths: dict, all_results=None) -> tuple[list[str], Any]:
    """Claims (a)–(e) of the paper per regime (:mod:`claims`): writes claims.csv and transfer_summary.csv,
    returns the markdown section and the transfer summary."""
    from .claims import claims_markdown, evaluate_claims

    claims, summary = evaluate_claims(eval_results, per_target, regimes=cfg.regimes, targets_expected=len(cfg.targets),
                                      **claim_inputs(cfg, rankers, eval_results))
    frames = [("claims", claims), ("transfer_summary", summary)]
    md = claims_markdown(claims, summary)
    measured, measured_md = measured_so_far(cfg, eval_results, eval_results if all_results is None else all_results)
    if measured is not None:
        frames.append(("transfer_summary_measured", measured))
        md += measured_md
    else:
        (out_dir / "transfer_summary_measured.csv").unlink(missing_ok=True)  # every regime complete now
    for name, frame in frames:
        p = out_dir / f"{name}.csv"
        atomic_write_text(p, frame.to_csv(index=False, float_format="%.6g"))
        paths[name] = p
    return md, summary


def measured_so_far(cfg: StudyConfig, eval_results, all_results):
    """Regimes of the study with measured transfers that are still being measured (not every target has all its
    sources, :func:`complete_regimes`): all their pairs so far, summarised as :func:`claims.transfer_summary`
    does (not evidence for a claim yet). Returns (table or None, markdown lines)."""
    from .claims import transfer_pairs, transfer_summary

    complete = complete_regimes(cfg, all_results)
    partial = [r for r in cfg.regimes if r not in complete
               and (all_results["regime"].eq(r) & all_results["source"].notna()).any()]
    if not partial:
        return None, []
    sub = all_results[all_results["regime"].isin(partial)]
    measured = transfer_summary(transfer_pairs(sub, per_example_targets=_per_example_targets(cfg.targets)))
    md = ["### Measured so far in regimes still being measured", "",
          "Not evidence for or against a claim yet (not every target has all its sources): the pairs measured so far, "
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
    from ..training.metrics import score_is_per_example_mean
    from ..data.tasks import get_task

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
    from ..selection.evaluation import CANDIDATE_SETS_REPORT_ORDER

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


def _paired_markdown(paired, title: str = "Paired comparison with Random and DataSize",
                     file: str = "paired_comparison.csv") -> list[str]:
    """Headline methods against Random and DataSize over all evaluated targets: mean difference, its
    bootstrap interval and wins / ties / losses, per regime and candidate set."""
    sub = paired[(paired["target_class"] == "all") & paired["method"].isin(HEADLINE_METHODS)]
    if sub.empty:
        return []
    metrics = list(dict.fromkeys(sub["metric"]))
    md = [f"## {title}", "",
          "Over the evaluated targets: mean of (method − baseline), 95% percentile-bootstrap interval over "
          "targets, and wins/ties/losses (a win: the method is better on that target; lower is better for rho "
          "and regret). An interval that contains 0 means these targets do not separate the two methods. "
          f"All rows, per class too, with Wilcoxon signed-rank p-values: `{file}`.", ""]
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
    from .. import plots
    from ..selection import evaluation as sm

    paths = {}
    fig_dir = out_dir / "figures"
    expected = expected_sources(cfg)
    try:
        gains = sm.mean_transfer(results)
        for regime in sorted(gains["regime"].unique()):
            slug = regime.replace("→", "_to_")
            fig = plots.transfer_gain_heatmap(gains[gains["regime"] == regime])
            paths[f"gains_{slug}"] = plots.save_figure(fig, f"{cfg.name}_transfer_gains_{slug}", fig_dir)
            fig = plots.target_score_violins(results, regime=regime, expected_sources=expected)
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
