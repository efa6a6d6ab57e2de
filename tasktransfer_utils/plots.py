"""Paper-style figures (Vu et al. 2020, Figures 2-3 and the selection tables drawn as bars).

Every function takes tidy pandas tables (or a similarity matrix / embedding vectors) and returns a
``matplotlib.figure.Figure`` built without pyplot, so nothing leaks between calls and notebooks show
the returned figure once. ``save_figure`` writes it under ``figures/`` (or any folder) with a stable
name. Task classes are coloured the same way in every figure: CR blue, QA orange, SL green.

Table conventions (one row per item; extra columns are ignored):

- transfer results: ``source`` ("" / None / NaN = no-transfer baseline), ``target``, ``score``,
  optional ``regime``, ``seed``, ``source_class``, ``target_class``;
- transfer gains: ``source``, ``target``, ``rel_gain`` or ``gain`` (relative, (p_s→t − p_t) / p_t, a
  fraction; drawn in %), e.g. ``selection.evaluation.mean_transfer``; optional ``source_class``, ``target_class``;
- selection metrics: ``method`` plus one column per metric (``rho``, ``ndcg``, ``regret@1`` ...), or the
  long form of ``selection.evaluation.summarize_selection`` (``metric``, ``value``); optional grouping
  columns such as ``target_class``.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .paths import FIGURES_DIR

CLASS_ORDER = ("CR", "QA", "SL")
CLASS_COLORS = {"CR": "#1f77b4", "QA": "#ff7f0e", "SL": "#2ca02c", "?": "#7f7f7f"}
CLASS_NAMES = {"CR": "classification / regression", "QA": "question answering", "SL": "sequence labeling"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
#: ``savefig`` metadata per format that leaves out the writer's version and the date (reproducible files)
REPRODUCIBLE_METADATA = {"png": {"Software": None}, "svg": {"Creator": None, "Date": None},
                         "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
                         "ps": {"Creator": None}, "eps": {"Creator": None}}


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def save_figure(fig: Figure, name: str, out_dir: str | Path | None = None, *, dpi: int = 150,
                formats: Iterable[str] = ("png",)) -> Path:
    """Write ``fig`` to ``<out_dir>/<name>.<fmt>`` (default folder: the repository's ``figures/``).

    ``name`` is a stable file stem such as ``fig2_target_scores_LIMITED-LIMITED``; returns the path
    of the first format written. The file names neither matplotlib's version nor a date
    (``REPRODUCIBLE_METADATA``), so the same figure gives the same bytes."""
    if not _NAME_RE.match(name):
        raise ValueError(f"save_figure: name {name!r} must be a plain file stem (letters, digits, _ . -)")
    out = Path(out_dir) if out_dir is not None else FIGURES_DIR
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out / f"{name}.{fmt}"
        fig.savefig(path, dpi=dpi, bbox_inches="tight", facecolor="white",
                    metadata=REPRODUCIBLE_METADATA.get(fmt.lower()))
        paths.append(path)
    if not paths:
        raise ValueError("save_figure: formats is empty; expected e.g. ('png',)")
    return paths[0]


def figure_png(fig: Figure, *, dpi: int = 100) -> bytes:
    """``fig`` as PNG bytes, drawn as ``save_figure`` draws it (tight box, white background, no writer
    version or date), so the same figure gives the same bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white",
                metadata=REPRODUCIBLE_METADATA["png"])
    return buf.getvalue()


def register_notebook_display() -> bool:
    """In an IPython kernel, show a ``Figure`` (a cell's last expression, ``display(fig)``) as a PNG
    (:func:`figure_png`); the figures here are built without pyplot, so the inline backend never sees
    them. Returns False outside IPython. Called when this module is imported."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with the notebooks extra
        return False
    shell = get_ipython()
    if shell is None or not hasattr(shell, "display_formatter"):
        return False
    shell.display_formatter.formatters["image/png"].for_type(Figure, figure_png)
    return True


@contextmanager
def _seeded_numpy(seed: int = 0):
    """Seed numpy's global random state for the block and restore the caller's afterwards: seaborn's
    strip-plot jitter draws from it, and the same figure must give the same PNG."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _wrap(title: str, fig: Figure, fontsize: float = 10) -> str:
    """Wrap a title to the figure's width (about 0.6 em per character)."""
    import textwrap

    chars = max(30, int(fig.get_figwidth() * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.wrap(title, chars)) if len(title) > chars else title


def _require(table: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"{what}: expected a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise KeyError(f"{what}: table lacks column(s) {missing}; it has {list(table.columns)}")


def _is_baseline(source: pd.Series) -> pd.Series:
    """True where a results row is the no-transfer baseline (source empty, None or NaN)."""
    return source.isna() | source.astype(str).str.strip().isin(["", "None", "none", "-"])


def _gain_column(table: pd.DataFrame, what: str) -> str:
    """The relative-gain column of a gains table: ``rel_gain`` (``selection.evaluation.mean_transfer``)
    or ``gain``."""
    for col in ("rel_gain", "gain"):
        if isinstance(table, pd.DataFrame) and col in table.columns:
            return col
    cols = list(table.columns) if isinstance(table, pd.DataFrame) else type(table).__name__
    raise KeyError(f"{what}: table lacks column(s) ['gain'] (relative gain, also accepted as 'rel_gain'); "
                   f"it has {cols}")


def _single_regime(table: pd.DataFrame, what: str) -> None:
    if "regime" in table.columns and table["regime"].nunique() > 1:
        raise ValueError(f"{what}: the gains table mixes regimes {sorted(map(str, table['regime'].unique()))}; "
                         "select one regime first")


def class_of(names: Iterable[str], task_classes: Mapping[str, str] | None = None) -> dict[str, str]:
    """Task name -> class ("CR"/"QA"/"SL"), from ``task_classes`` when given, else the task registry
    (``data.tasks.get_task``), else "?"."""
    out = {}
    for name in names:
        cls = None
        if task_classes is not None and name in task_classes:
            cls = task_classes[name]
        else:
            try:
                from .data.tasks import get_task

                cls = get_task(name).task_class
            except Exception:
                cls = None
        cls = getattr(cls, "value", cls)
        out[name] = str(cls) if cls is not None else "?"
    return out


def _classes_from_table(table: pd.DataFrame, task_classes: Mapping[str, str] | None) -> dict[str, str]:
    known = dict(task_classes or {})
    for name_col, class_col in (("source", "source_class"), ("target", "target_class"), ("task", "task_class")):
        if name_col in table.columns and class_col in table.columns:
            for n, c in table[[name_col, class_col]].dropna().itertuples(index=False):
                known.setdefault(n, getattr(c, "value", c))
    return known


def _order_by_class(names: Iterable[str], classes: Mapping[str, str]) -> list[str]:
    rank = {c: i for i, c in enumerate(CLASS_ORDER)}
    return sorted(dict.fromkeys(names), key=lambda n: (rank.get(classes.get(n, "?"), 9), n))


def _class_legend(ax, classes_present: Iterable[str], loc="best", title="task class", **kw):
    handles = [Patch(color=CLASS_COLORS[c], label=f"{c} ({CLASS_NAMES[c]})")
               for c in CLASS_ORDER if c in set(classes_present)]
    if "?" in set(classes_present):
        handles.append(Patch(color=CLASS_COLORS["?"], label="unknown class"))
    if handles:
        ax.legend(handles=handles, loc=loc, title=title, fontsize=8, title_fontsize=8, **kw)


def _class_legend_below(fig: Figure, classes_present: Iterable[str], title: str = "task class (label colour)"):
    present = set(classes_present)
    handles = [Patch(color=CLASS_COLORS[c], label=f"{c} ({CLASS_NAMES[c]})") for c in CLASS_ORDER if c in present]
    if "?" in present:
        handles.append(Patch(color=CLASS_COLORS["?"], label="unknown class"))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), title=title, fontsize=8,
                   title_fontsize=8, frameon=False)


def _color_ticklabels(labels, classes: Mapping[str, str]) -> None:
    for lab in labels:
        lab.set_color(CLASS_COLORS.get(classes.get(lab.get_text(), "?"), "black"))


def _class_boundaries(order: list[str], classes: Mapping[str, str]) -> list[int]:
    return [i for i in range(1, len(order)) if classes.get(order[i]) != classes.get(order[i - 1])]


def _regime_label(regime) -> str:
    return str(getattr(regime, "name", regime)).replace("->", "→")


# --------------------------------------------------------------------------------------------------
# data regimes (notebook 01)
# --------------------------------------------------------------------------------------------------
def task_sizes(table: pd.DataFrame, *, limited_size: int | None = 1000,
               title: str = "Training-set size per task (log scale); LIMITED keeps 1,000 examples") -> Figure:
    """Horizontal bars of training examples per task, coloured by class, log-scale x.

    ``table``: columns ``task``, ``task_class``, ``train_examples``."""
    _require(table, ["task", "task_class", "train_examples"], "task_sizes")
    t = table.copy()
    t["task_class"] = t["task_class"].map(lambda c: getattr(c, "value", c))
    classes = dict(zip(t["task"], t["task_class"]))
    order = _order_by_class(t["task"], classes)[::-1]
    t = t.set_index("task").loc[order]
    fig = _new_figure(7.5, 0.9 + 0.32 * len(order))
    ax = fig.add_subplot()
    ax.barh(order, t["train_examples"], color=[CLASS_COLORS.get(c, "#7f7f7f") for c in t["task_class"]])
    ax.set_xscale("log")
    for i, v in enumerate(t["train_examples"]):
        ax.text(v * 1.08, i, f"{int(v):,}", va="center", fontsize=7)
    if limited_size:
        ax.axvline(limited_size, color="black", ls="--", lw=1)
        ax.text(limited_size, len(order) - 0.4, f" LIMITED = {limited_size:,}", fontsize=8, va="bottom")
    ax.set_xlim(right=t["train_examples"].max() * 4)
    ax.set_ylim(-0.6, len(order) + 0.2)
    ax.set_xlabel("training examples (sentences / questions / pairs; log scale)")
    ax.set_ylabel("task")
    _color_ticklabels(ax.get_yticklabels(), classes)
    _class_legend_below(fig, t["task_class"])
    ax.set_title(_wrap(title, fig), fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------------
# fine-tuning (notebook 02)
# --------------------------------------------------------------------------------------------------
def epoch_curves(scores: pd.DataFrame, losses: pd.DataFrame | None = None, *,
                 title: str = "Dev score per epoch and training loss: does intermediate training help?",
                 score_label: str = "dev score (task metric)") -> Figure:
    """Per-epoch dev scores (left) and training loss curves (right) of several runs.

    ``scores``: columns ``run``, ``epoch``, ``score``; ``losses`` (optional): ``run``,
    ``epoch`` (fractional), ``loss``. Runs share colours between panels."""
    _require(scores, ["run", "epoch", "score"], "epoch_curves(scores)")
    runs = list(dict.fromkeys(scores["run"]))
    if losses is not None:
        _require(losses, ["run", "epoch", "loss"], "epoch_curves(losses)")
        runs += [r for r in dict.fromkeys(losses["run"]) if r not in runs]
    palette = _cycle_colors(len(runs))
    colors = dict(zip(runs, palette))
    fig = _new_figure(11 if losses is not None else 6, 4)
    axes = fig.subplots(1, 2 if losses is not None else 1, squeeze=False)[0]
    ax = axes[0]
    markers = "osD^vP*X"
    for k, (run, g) in enumerate(scores.groupby("run", sort=False)):
        g = g.sort_values("epoch")
        # shrinking markers of different shapes keep identical points of several runs visible
        ax.plot(g["epoch"], g["score"], marker=markers[k % len(markers)], markersize=max(9 - 1.5 * k, 4),
                color=colors[run], label=str(run), alpha=0.9)
    epochs = sorted(scores["epoch"].unique())
    if len(epochs) <= 12:
        ax.set_xticks(epochs)
        if len(epochs) == 1:
            ax.set_xlim(epochs[0] - 0.5, epochs[0] + 0.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel(score_label)
    ax.set_title("dev score after each epoch", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if losses is not None:
        ax = axes[1]
        for run, g in losses.groupby("run", sort=False):
            g = g.sort_values("epoch")
            ax.plot(g["epoch"], g["loss"], color=colors[run], lw=1.2, label=str(run))
        ax.set_xlabel("epoch (fraction of training)")
        ax.set_ylabel("training loss (mean cross-entropy / MSE per batch)")
        ax.set_title("training loss", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(_wrap(title, fig, 11), fontsize=11)
    return fig


def _cycle_colors(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


# --------------------------------------------------------------------------------------------------
# transfer study (notebook 03)
# --------------------------------------------------------------------------------------------------
def transfer_gain_heatmap(gains: pd.DataFrame, *, task_classes: Mapping[str, str] | None = None,
                          annotate: bool | None = None, title: str | None = None,
                          regime: str | None = None) -> Figure:
    """Heatmap of mean relative transfer gain (%), rows = source (intermediate) task,
    columns = target task, both ordered by class. Red = transfer helps, blue = it hurts,
    grey = pair not measured (e.g. a task onto itself).

    ``gains``: columns ``source``, ``target``, ``gain`` (fraction); averaged over duplicate pairs."""
    _require(gains, ["source", "target"], "transfer_gain_heatmap")
    gcol = _gain_column(gains, "transfer_gain_heatmap")
    _single_regime(gains, "transfer_gain_heatmap")
    classes = _classes_from_table(gains, task_classes)
    classes = {**class_of(set(gains["source"]) | set(gains["target"]), classes)}
    mat = gains.groupby(["source", "target"])[gcol].mean().unstack("target") * 100.0
    rows = _order_by_class(mat.index, classes)
    cols = _order_by_class(mat.columns, classes)
    mat = mat.reindex(index=rows, columns=cols)
    values = mat.to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    vmax = float(np.nanpercentile(np.abs(finite), 98)) if finite.size else 1.0
    vmax = max(vmax, 1e-6)
    import matplotlib

    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#d9d9d9")
    fig = _new_figure(max(6.5, 2.4 + 0.55 * len(cols)), max(4.5, 1.8 + 0.45 * len(rows)))
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-vmax, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    _color_ticklabels(ax.get_xticklabels(), classes)
    _color_ticklabels(ax.get_yticklabels(), classes)
    for b in _class_boundaries(cols, classes):
        ax.axvline(b - 0.5, color="black", lw=1.2)
    for b in _class_boundaries(rows, classes):
        ax.axhline(b - 0.5, color="black", lw=1.2)
    if annotate is None:
        annotate = len(rows) * len(cols) <= 400
    if annotate:
        for i in range(len(rows)):
            for j in range(len(cols)):
                v = values[i, j]
                if np.isfinite(v):
                    ax.text(j, i, f"{v:+.0f}" if abs(v) >= 9.5 else f"{v:+.1f}", ha="center", va="center",
                            fontsize=7, color="white" if abs(v) > 0.6 * vmax else "black")
    ax.set_xlabel("target task (fine-tuned second)")
    ax.set_ylabel("source task (intermediate, fine-tuned first)")
    cbar = fig.colorbar(im, ax=ax, shrink=0.8)
    cbar.set_label("relative gain over no transfer (%)")
    if title is None:
        title = "Relative transfer gain: which sources help which targets"
        if regime is not None:
            title += f" ({_regime_label(regime)})"
    ax.set_title(_wrap(title, fig), fontsize=10)
    _class_legend_below(fig, [classes.get(n, "?") for n in rows + cols])
    return fig


def target_score_violins(results: pd.DataFrame, *, task_classes: Mapping[str, str] | None = None,
                         title: str | None = None, score_label: str = "target score (task metric, mean over seeds)",
                         regime: str | None = None, mark_best: bool = True,
                         choices: Mapping | None = None, choice_label: str = "TaskEmb's choice",
                         expected_sources: Mapping[str, int] | None = None, seed: int = 0) -> Figure:
    """Paper Figure 2: per target task, the distribution of its score after transfer from every
    source (violin + one dot per source, coloured by source class); the black bar is the score of
    the target fine-tuned directly (no transfer). One panel per ``regime`` when that column exists
    (``regime=``: only that one).

    ``mark_best``: ring the best source of each target (highest mean score). ``choices``: the source a
    selection method picks for each target, ``{target: source}`` or ``{(regime, target): source}``, marked
    with a diamond and ``choice_label`` in the legend. Dots are spread sideways by a jitter drawn from
    ``numpy.random.default_rng(seed)`` (the same figure every time).

    ``expected_sources``: ``{target: number of its sources}`` when the regime is complete. A panel where some
    target has fewer measured sources says so: its tick reads ``target (n/N)`` and the panel title counts the
    pairs measured, since the best source and a method's choice are then taken among the measured ones only.

    ``results``: tidy transfer results (baseline rows have an empty/None ``source``); scores are
    averaged over seeds per (regime, source, target) first."""
    import seaborn as sns

    _require(results, ["source", "target", "score"], "target_score_violins")
    r = results.copy()
    if "regime" not in r.columns:
        r["regime"] = ""
    r["regime"] = r["regime"].map(_regime_label)
    if regime is not None:
        r = r[r["regime"] == _regime_label(regime)]
        if r.empty:
            raise ValueError(f"target_score_violins: no rows of regime {regime!r}; the table has "
                             f"{sorted(map(str, results.get('regime', pd.Series(dtype=str)).unique()))}")
    base_mask = _is_baseline(r["source"])
    classes = _classes_from_table(r[~base_mask], task_classes)
    classes = class_of(set(r.loc[~base_mask, "source"]) | set(r["target"]), classes)
    pairs = r[~base_mask].groupby(["regime", "target", "source"], as_index=False)["score"].mean()
    pairs["source_class"] = pairs["source"].map(classes)
    base = r[base_mask].groupby(["regime", "target"])["score"].mean()
    regimes = list(dict.fromkeys(r["regime"]))
    targets = _order_by_class(r["target"], classes)
    fig = _new_figure(max(6.0, 1.0 + 0.75 * len(targets)), 1.0 + 3.4 * len(regimes))
    axes = fig.subplots(len(regimes), 1, squeeze=False)[:, 0]
    rng = np.random.default_rng(seed)
    for ax, reg in zip(axes, regimes):
        p = pairs[pairs["regime"] == reg].sort_values(["target", "source"]).reset_index(drop=True)
        present = [t for t in targets if t in set(p["target"]) or (reg, t) in base.index]
        xpos = {t: i for i, t in enumerate(present)}
        p["x"] = p["target"].map(xpos) + rng.uniform(-0.12, 0.12, size=len(p))
        if not p.empty:
            sns.violinplot(data=p, x="target", y="score", order=present, ax=ax, color="#e6e6e6",
                           inner=None, cut=0, density_norm="width", linewidth=0.8)
            for cls in CLASS_ORDER + ("?",):
                sel = p[p["source_class"] == cls]
                if len(sel):
                    ax.scatter(sel["x"], sel["score"], s=22, color=CLASS_COLORS[cls], edgecolor="white",
                               linewidth=0.4, zorder=6)
        for i, t in enumerate(present):
            if (reg, t) in base.index:
                ax.hlines(base[(reg, t)], i - 0.42, i + 0.42, color="black", lw=2.2, zorder=5)
        handles = [Line2D([], [], marker="o", ls="", color=CLASS_COLORS[c], label=f"source: {c}")
                   for c in CLASS_ORDER if c in set(p["source_class"])]
        handles.append(Line2D([], [], color="black", lw=2.2, label="no transfer (target alone)"))
        if mark_best and not p.empty:
            # p is sorted by source name, so idxmax gives a tie to the first name, as best_sources does
            best = p.loc[p.groupby("target")["score"].idxmax()]
            ax.plot(best["x"], best["score"], ls="", marker="o", ms=11, mfc="none", mec="black", mew=1.4,
                    zorder=7, label="_best")
            handles.append(Line2D([], [], ls="", marker="o", ms=9, mfc="none", mec="black", mew=1.4,
                                  label="best source"))
        if choices:
            picked = []
            for t in present:
                src = choices.get((reg, t), choices.get(t)) if isinstance(choices, Mapping) else None
                row = p[(p["target"] == t) & (p["source"] == src)]
                if len(row):
                    picked.append(row.iloc[0])
            if picked:
                picked = pd.DataFrame(picked)
                ax.plot(picked["x"], picked["score"], ls="", marker="D", ms=8, mfc="none", mec="#d62728",
                        mew=1.5, zorder=8, label="_choice")
                handles.append(Line2D([], [], ls="", marker="D", ms=7, mfc="none", mec="#d62728", mew=1.5,
                                      label=choice_label))
        ax.set_xlim(-0.6, len(present) - 0.4)
        panel = f"regime {reg}" if reg else ""
        if expected_sources:
            n = p.groupby("target")["source"].nunique()
            short = {t: (int(n.get(t, 0)), expected_sources[t]) for t in present
                     if t in expected_sources and n.get(t, 0) < expected_sources[t]}
            if short:
                ax.set_xticks(range(len(present)))
                ax.set_xticklabels([f"{t} ({short[t][0]}/{short[t][1]})" if t in short else t for t in present])
                total = sum(expected_sources[t] for t in present if t in expected_sources)
                measured = sum(min(int(n.get(t, 0)), expected_sources[t]) for t in present if t in expected_sources)
                panel = (f"{panel}: {measured} of {total} pairs measured so far".lstrip(": ")
                         + "\n(n/N: n of a target's N sources measured; best source and choice among those n)")
        ax.set_xlabel("target task")
        ax.set_ylabel(score_label)
        ax.tick_params(axis="x", rotation=45)
        for lab in ax.get_xticklabels():
            lab.set_ha("right")
        for lab, t in zip(ax.get_xticklabels(), present):  # by task: a tick may read "MRPC (2/11)"
            lab.set_color(CLASS_COLORS.get(classes.get(t, "?"), "black"))
        ax.grid(axis="y", alpha=0.3)
        ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1.0))
        if panel:
            ax.set_title(panel, fontsize=10)
    fig.suptitle(_wrap(title or "Score of each target after transfer from every source; "
                                "dots above the black bar are sources that help", fig, 11), fontsize=11)
    return fig


def regime_gains_side_by_side(gains: pd.DataFrame, regimes: tuple[str, str] = ("LIMITED→LIMITED", "FULL→LIMITED"),
                              *, task_classes: Mapping[str, str] | None = None, title: str | None = None) -> Figure:
    """Two regimes' gains per target, paired: for every target, the mean and the best relative gain (%) over
    its sources in each regime, computed only over the (source, target) pairs measured in both regimes,
    drawn as two dots (one per regime) joined by a line; left panel the mean, right panel the best.

    ``gains``: columns ``regime``, ``source``, ``target``, ``gain`` or ``rel_gain`` (fraction; e.g.
    ``selection.evaluation.mean_transfer``), averaged over duplicate rows."""
    _require(gains, ["regime", "source", "target"], "regime_gains_side_by_side")
    gcol = _gain_column(gains, "regime_gains_side_by_side")
    regimes = tuple(_regime_label(x) for x in regimes)
    if len(regimes) != 2 or regimes[0] == regimes[1]:
        raise ValueError(f"regime_gains_side_by_side: expected two different regimes, got {regimes}")
    g = gains.assign(regime=gains["regime"].map(_regime_label))
    g = g[g["regime"].isin(regimes)].groupby(["regime", "source", "target"])[gcol].mean().unstack("regime")
    missing = [x for x in regimes if x not in g.columns]
    if missing:
        raise ValueError(f"regime_gains_side_by_side: no gains of regime(s) {missing}")
    both = g.dropna(subset=list(regimes)).reset_index()
    if both.empty:
        raise ValueError(f"regime_gains_side_by_side: no (source, target) pair is measured in both {regimes}")
    classes = class_of(set(both["source"]) | set(both["target"]), _classes_from_table(gains, task_classes))
    per_target = {stat: both.groupby("target")[list(regimes)].agg(stat) * 100 for stat in ("mean", "max")}
    n_pairs = both.groupby("target").size()
    order = _order_by_class(per_target["mean"].index, classes)
    fig = _new_figure(max(8.0, 2.0 + 0.9 * len(order)), 4.6)
    axes = fig.subplots(1, 2, sharey=False)
    markers = {regimes[0]: ("o", "#4c72b0"), regimes[1]: ("s", "#dd8452")}
    x = np.arange(len(order))
    for ax, stat, label in zip(axes, ("mean", "max"), ("mean over sources", "best source")):
        tab = per_target[stat].reindex(order)
        ax.vlines(x, tab[regimes[0]], tab[regimes[1]], color="#999999", lw=1.2, zorder=2)
        for reg in regimes:
            m, c = markers[reg]
            ax.plot(x, tab[reg], ls="", marker=m, color=c, ms=7, zorder=3, label=reg)
        ax.axhline(0, color="black", lw=1, ls="--")
        ax.set_xticks(x, [f"{t} ({n_pairs[t]})" for t in order], rotation=45, ha="right")
        for lab, t in zip(ax.get_xticklabels(), order):
            lab.set_color(CLASS_COLORS.get(classes.get(t, "?"), "black"))
        ax.set_xlim(-0.6, len(order) - 0.4)
        ax.set_xlabel("target (pairs in both regimes)")
        ax.set_ylabel("relative gain over no transfer (%)")
        ax.set_title(f"{label.capitalize()} per target", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[1].legend(title="regime", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(_wrap(title or f"Does a data-rich source help more? {regimes[0]} vs {regimes[1]}, per target, "
                                 f"over the {len(both)} pairs measured in both", fig, 11), fontsize=11)
    return fig


def in_vs_out_of_class(gains: pd.DataFrame, *, task_classes: Mapping[str, str] | None = None,
                       title: str = "In-class sources help more often than out-of-class sources?",
                       seed: int = 0) -> Figure:
    """Relative gains (%) per target class, split into in-class pairs (source and target of the same
    class) and out-of-class pairs: box + dots (jitter seeded by ``seed``), with the share of positive
    gains written under each box.

    ``gains``: columns ``source``, ``target``, ``gain`` (fraction)."""
    import seaborn as sns

    _require(gains, ["source", "target"], "in_vs_out_of_class")
    gcol = _gain_column(gains, "in_vs_out_of_class")
    _single_regime(gains, "in_vs_out_of_class")
    classes = class_of(set(gains["source"]) | set(gains["target"]), _classes_from_table(gains, task_classes))
    g = gains.groupby(["source", "target"], as_index=False)[gcol].mean().rename(columns={gcol: "gain"})
    g["gain_pct"] = g["gain"] * 100.0
    g["target_class"] = g["target"].map(classes)
    g["pair"] = np.where(g["source"].map(classes) == g["target_class"], "in-class", "out-of-class")
    order = [c for c in CLASS_ORDER + ("?",) if c in set(g["target_class"])]
    hue_order = ["in-class", "out-of-class"]
    pal = {"in-class": "#4c72b0", "out-of-class": "#dd8452"}
    fig = _new_figure(2.2 + 2.0 * len(order), 4.4)
    ax = fig.add_subplot()
    sns.boxplot(data=g, x="target_class", y="gain_pct", hue="pair", order=order, hue_order=hue_order,
                palette=pal, ax=ax, showfliers=False, boxprops={"alpha": 0.45}, width=0.7)
    with _seeded_numpy(seed):
        sns.stripplot(data=g, x="target_class", y="gain_pct", hue="pair", order=order, hue_order=hue_order,
                      palette=pal, ax=ax, dodge=True, size=4, jitter=0.15, legend=False)
    ax.axhline(0, color="black", lw=1, ls="--")
    ax.set_xlabel("target task class")
    ax.set_ylabel("relative gain over no transfer (%)")
    ax.set_xticks(range(len(order)), [f"{c}\n({CLASS_NAMES.get(c, 'unknown')})" for c in order])
    ymin, ymax = ax.get_ylim()
    span = ymax - ymin
    ax.set_ylim(ymin - 0.2 * span, ymax)
    ymin = ymin - 0.19 * span
    for i, c in enumerate(order):
        for k, pair in enumerate(hue_order):
            sel = g[(g["target_class"] == c) & (g["pair"] == pair)]["gain"]
            if len(sel):
                x = i + (-0.2 if k == 0 else 0.2)
                ax.text(x, ymin, f"{(sel > 0).mean():.0%} > 0\n(n={len(sel)})", ha="center", va="bottom",
                        fontsize=7)
    ax.legend(title="source vs target", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(_wrap(title, fig), fontsize=10)
    return fig


def class_transfer_matrix(gains: pd.DataFrame, *, task_classes: Mapping[str, str] | None = None,
                          title: str = "Transfer between task classes: mean gain and how often it helps"
                          ) -> Figure:
    """3×3 grid (source class × target class): colour = mean relative gain (%), text = mean gain
    and the share of source→target pairs with a positive gain.

    ``gains``: columns ``source``, ``target``, ``gain`` (fraction)."""
    _require(gains, ["source", "target"], "class_transfer_matrix")
    gcol = _gain_column(gains, "class_transfer_matrix")
    _single_regime(gains, "class_transfer_matrix")
    classes = class_of(set(gains["source"]) | set(gains["target"]), _classes_from_table(gains, task_classes))
    g = gains.groupby(["source", "target"], as_index=False)[gcol].mean().rename(columns={gcol: "gain"})
    g["sc"] = g["source"].map(classes)
    g["tc"] = g["target"].map(classes)
    present = [c for c in CLASS_ORDER + ("?",) if c in set(g["sc"]) | set(g["tc"])]
    mean = g.groupby(["sc", "tc"])["gain"].mean().unstack().reindex(index=present, columns=present) * 100
    share = (g.assign(pos=g["gain"] > 0).groupby(["sc", "tc"])["pos"].mean().unstack()
             .reindex(index=present, columns=present))
    count = g.groupby(["sc", "tc"]).size().unstack().reindex(index=present, columns=present)
    import matplotlib

    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#d9d9d9")
    vals = mean.to_numpy(dtype=float)
    vmax = max(float(np.nanmax(np.abs(vals))) if np.isfinite(vals).any() else 1.0, 1e-6)
    fig = _new_figure(max(5.0, 1.8 + 1.5 * len(present)), max(3.8, 1.2 + 1.3 * len(present)))
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(vals), cmap=cmap, vmin=-vmax, vmax=vmax)
    for i in range(len(present)):
        for j in range(len(present)):
            if np.isfinite(vals[i, j]):
                ax.text(j, i, f"{vals[i, j]:+.1f}%\n{share.iat[i, j]:.0%} help\nn={int(count.iat[i, j])}",
                        ha="center", va="center", fontsize=8,
                        color="white" if abs(vals[i, j]) > 0.6 * vmax else "black")
    ax.set_xticks(range(len(present)), present)
    ax.set_yticks(range(len(present)), present)
    ax.set_xlabel("target class")
    ax.set_ylabel("source class")
    fig.colorbar(im, ax=ax, shrink=0.8).set_label("mean relative gain (%)")
    ax.set_title(_wrap(title, fig), fontsize=10)
    return fig


def gain_vs_source_size(gains: pd.DataFrame, source_sizes: Mapping[str, float] | pd.Series, *,
                        task_classes: Mapping[str, str] | None = None,
                        title: str | None = None) -> Figure:
    """Does more source data mean more gain? Mean relative gain (%) of each source over all its
    targets against the source's training-set size (log x), coloured by source class; the title
    carries Spearman's correlation between size and mean gain.

    ``gains``: columns ``source``, ``target``, ``gain``; ``source_sizes``: source -> training examples."""
    from scipy.stats import spearmanr

    _require(gains, ["source", "target"], "gain_vs_source_size")
    gcol = _gain_column(gains, "gain_vs_source_size")
    _single_regime(gains, "gain_vs_source_size")
    sizes = pd.Series(source_sizes, dtype=float)
    classes = class_of(set(gains["source"]), _classes_from_table(gains, task_classes))
    per_pair = gains.groupby(["source", "target"], as_index=False)[gcol].mean().rename(columns={gcol: "gain"})
    per_source = per_pair.groupby("source")["gain"].agg(["mean", "min", "max"]) * 100
    missing = sorted(set(per_source.index) - set(sizes.index))
    if missing:
        raise KeyError(f"gain_vs_source_size: source_sizes lacks {missing}")
    per_source["size"] = sizes.reindex(per_source.index)
    fig = _new_figure(6.5, 4.5)
    ax = fig.add_subplot()
    for s, row in per_source.iterrows():
        c = CLASS_COLORS.get(classes.get(s, "?"), "#7f7f7f")
        ax.vlines(row["size"], row["min"], row["max"], color=c, alpha=0.35, lw=2)
        ax.scatter(row["size"], row["mean"], color=c, s=40, zorder=3, edgecolor="white")
        ax.annotate(s, (row["size"], row["mean"]), xytext=(4, 3), textcoords="offset points", fontsize=7)
    ax.set_xscale("log")
    ax.axhline(0, color="black", lw=1, ls="--")
    ax.set_xlabel("source training examples (log scale)")
    ax.set_ylabel("relative gain over no transfer (%)\n(dot: mean over targets; bar: min–max)")
    ax.grid(alpha=0.3)
    _class_legend(ax, [classes.get(s, "?") for s in per_source.index], title="source class")
    if title is None:
        if len(per_source) >= 3 and per_source["size"].nunique() > 1 and per_source["mean"].nunique() > 1:
            rho = spearmanr(per_source["size"], per_source["mean"]).statistic
            title = f"Role of source data size: Spearman ρ(size, mean gain) = {rho:+.2f}"
        else:
            title = "Role of source data size"
    ax.set_title(_wrap(title, fig), fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------------
# task embeddings (notebooks 04, 05)
# --------------------------------------------------------------------------------------------------
def similarity_heatmap(similarity: pd.DataFrame, *, task_classes: Mapping[str, str] | None = None,
                       title: str = "Cosine similarity between task embeddings", annotate: bool | None = None,
                       value_label: str = "cosine similarity") -> Figure:
    """Square heatmap of a task × task similarity matrix, tasks ordered by class with class borders.

    ``similarity``: DataFrame indexed and columned by task name (e.g. ``cosine_similarity_matrix``)."""
    if not isinstance(similarity, pd.DataFrame):
        raise TypeError("similarity_heatmap: expected a tasks × tasks pandas DataFrame")
    if list(similarity.index) != list(similarity.columns) and set(similarity.index) != set(similarity.columns):
        raise ValueError("similarity_heatmap: index and columns must hold the same task names")
    classes = class_of(similarity.index, task_classes)
    order = _order_by_class(similarity.index, classes)
    m = similarity.reindex(index=order, columns=order).to_numpy(dtype=float)
    off = m[~np.eye(len(order), dtype=bool)]
    vmin = float(np.nanmin(off)) if off.size else 0.0
    vmax = float(np.nanmax(off)) if off.size else 1.0
    if vmax - vmin < 1e-9:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    fig = _new_figure(max(6.5, 2.4 + 0.5 * len(order)), max(4.5, 1.9 + 0.45 * len(order)))
    ax = fig.add_subplot()
    import matplotlib

    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#d9d9d9")
    shown = np.where(np.eye(len(order), dtype=bool), np.nan, m)
    im = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(order)), order, rotation=60, ha="right")
    ax.set_yticks(range(len(order)), order)
    _color_ticklabels(ax.get_xticklabels(), classes)
    _color_ticklabels(ax.get_yticklabels(), classes)
    for b in _class_boundaries(order, classes):
        ax.axvline(b - 0.5, color="white", lw=1.5)
        ax.axhline(b - 0.5, color="white", lw=1.5)
    if annotate is None:
        annotate = len(order) <= 16
    if annotate:
        for i in range(len(order)):
            for j in range(len(order)):
                if i != j and np.isfinite(m[i, j]):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6.5,
                            color="white" if m[i, j] < (vmin + vmax) / 2 else "black")
    ax.set_xlabel("task")
    ax.set_ylabel("task")
    fig.colorbar(im, ax=ax, shrink=0.8).set_label(f"{value_label}\n(diagonal = 1, shown grey)")
    ax.set_title(_wrap(title, fig), fontsize=10)
    _class_legend_below(fig, [classes[n] for n in order])
    return fig


def _as_matrix(vectors) -> tuple[list[str], np.ndarray]:
    if isinstance(vectors, pd.DataFrame):
        return [str(i) for i in vectors.index], vectors.to_numpy(dtype=np.float64)
    if isinstance(vectors, Mapping):
        names = list(vectors)
        return names, np.stack([np.asarray(vectors[n], dtype=np.float64).ravel() for n in names])
    raise TypeError("expected a DataFrame (tasks × dims) or a mapping task -> 1-D vector")


def task_space_coordinates(vectors, *, method: str = "tsne", seed: int = 0,
                           perplexity: float | None = None) -> pd.DataFrame:
    """2-D coordinates of task embeddings for a map (paper Figure 3 uses t-SNE).

    Vectors are L2-normalised first so distances follow the cosine similarity used for selection.
    ``method``: "tsne" (cosine metric; perplexity defaults to min(30, (n−1)/3) floored at 1),
    "pca", or "mds" (on 1 − cosine). Returns columns ``task``, ``x``, ``y``."""
    names, X = _as_matrix(vectors)
    n = len(names)
    if n < 2:
        raise ValueError(f"task_space_coordinates: need at least 2 tasks, got {n}")
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("task_space_coordinates: a task embedding is all zeros "
                         f"({[names[i] for i in np.where(norms[:, 0] == 0)[0]]})")
    Xn = X / norms
    if method == "pca":
        from sklearn.decomposition import PCA

        if n == 2 or Xn.shape[1] == 1:
            xy = np.zeros((n, 2))
            xy[:, 0] = (Xn - Xn.mean(0)) @ (Xn[0] - Xn[1] if n == 2 else np.ones(Xn.shape[1]))
        else:
            xy = PCA(n_components=2, random_state=seed).fit_transform(Xn)
    elif method == "mds":
        from sklearn.manifold import MDS

        D = np.clip(1.0 - Xn @ Xn.T, 0.0, None)
        np.fill_diagonal(D, 0.0)
        D = (D + D.T) / 2
        import inspect

        params = inspect.signature(MDS).parameters
        kw = {"n_components": 2, "random_state": seed, "n_init": 4}
        if "metric_mds" in params:  # scikit-learn >= 1.8: metric names the dissimilarity
            kw.update(metric="precomputed", init="random")
        else:
            kw.update(dissimilarity="precomputed")
        xy = MDS(**kw).fit_transform(D)
    elif method == "tsne":
        from sklearn.manifold import TSNE

        if perplexity is None:
            perplexity = max(1.0, min(30.0, (n - 1) / 3.0))
        if perplexity >= n:
            raise ValueError(f"task_space_coordinates: perplexity {perplexity} must be < number of tasks {n}")
        # exact gradients: a few dozen tasks make Barnes-Hut's approximation pointless and ten times slower
        xy = TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="random", random_state=seed,
                  method="exact" if n <= 200 else "barnes_hut").fit_transform(Xn)
    else:
        raise ValueError(f"task_space_coordinates: method {method!r}; expected 'tsne', 'pca' or 'mds'")
    return pd.DataFrame({"task": names, "x": xy[:, 0], "y": xy[:, 1]})


def task_space_map(vectors, *, task_classes: Mapping[str, str] | None = None, method: str = "tsne",
                   seed: int = 0, title: str | None = None, coordinates: pd.DataFrame | None = None) -> Figure:
    """Paper Figure 3: a 2-D map of the task space, one labelled dot per task, coloured by class;
    tasks of a class should cluster when the embedding captures task type.

    ``vectors``: DataFrame (tasks × dims) or mapping task -> vector; or pass precomputed
    ``coordinates`` (columns task, x, y) from ``task_space_coordinates``."""
    coords = coordinates if coordinates is not None else task_space_coordinates(vectors, method=method, seed=seed)
    _require(coords, ["task", "x", "y"], "task_space_map(coordinates)")
    classes = class_of(coords["task"], task_classes)
    fig = _new_figure(6.5, 5.2)
    ax = fig.add_subplot()
    for c in CLASS_ORDER + ("?",):
        sel = coords[coords["task"].map(classes) == c]
        if len(sel):
            ax.scatter(sel["x"], sel["y"], s=70, color=CLASS_COLORS[c], edgecolor="white", zorder=3)
    # tasks at (nearly) the same place get their labels stacked instead of printed over each other
    span = max(float(np.ptp(coords["x"])), float(np.ptp(coords["y"])), 1e-12)
    placed: list[tuple[float, float]] = []
    for t, x, y in coords[["task", "x", "y"]].itertuples(index=False):
        k = sum(1 for px, py in placed if abs(px - x) < 0.03 * span and abs(py - y) < 0.03 * span)
        placed.append((x, y))
        ax.annotate(t, (x, y), xytext=(5, 4 - 10 * k), textcoords="offset points", fontsize=8)
    xr = np.ptp(coords["x"]) or 1.0
    ax.set_xlim(coords["x"].min() - 0.1 * xr, coords["x"].max() + 0.25 * xr)
    label = {"tsne": "t-SNE", "pca": "PCA", "mds": "MDS"}.get(method, method)
    ax.set_xlabel(f"{label} dimension 1 (unitless)")
    ax.set_ylabel(f"{label} dimension 2 (unitless)")
    ax.set_xticks([])
    ax.set_yticks([])
    _class_legend(ax, coords["task"].map(classes), title="task class")
    ax.set_title(_wrap(title or f"Task space ({label} of task embeddings): do tasks of a class cluster?", fig),
                 fontsize=10)
    return fig


def similarity_agreement(sim_a: pd.DataFrame, sim_b: pd.DataFrame, *, label_a: str, label_b: str,
                         task_classes: Mapping[str, str] | None = None, title: str | None = None) -> Figure:
    """Scatter of every off-diagonal task pair's similarity under two embeddings (e.g. the paper's
    vs the empirical Fisher estimator), coloured by whether the pair is in-class; the title gives
    Spearman's rank correlation, which is what matters for ranking sources."""
    from scipy.stats import spearmanr

    tasks = [t for t in sim_a.index if t in set(sim_b.index)]
    if len(tasks) < 2:
        raise ValueError("similarity_agreement: the two matrices share fewer than 2 tasks")
    classes = class_of(tasks, task_classes)
    rows = []
    for i, s in enumerate(tasks):
        for t in tasks[i + 1:]:
            rows.append((sim_a.at[s, t], sim_b.at[s, t], classes[s] == classes[t]))
    d = pd.DataFrame(rows, columns=["a", "b", "same"])
    fig = _new_figure(5.2, 4.8)
    ax = fig.add_subplot()
    for same, color, lab in ((True, "#4c72b0", "pair of the same class"), (False, "#dd8452", "pair across classes")):
        sel = d[d["same"] == same]
        if len(sel):
            ax.scatter(sel["a"], sel["b"], s=22, color=color, alpha=0.8, label=lab)
    lo = float(min(d["a"].min(), d["b"].min()))
    hi = float(max(d["a"].max(), d["b"].max()))
    ax.plot([lo, hi], [lo, hi], color="grey", ls="--", lw=1, label="equal similarity")
    ax.set_xlabel(f"cosine similarity, {label_a}")
    ax.set_ylabel(f"cosine similarity, {label_b}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if title is None:
        rho = spearmanr(d["a"], d["b"]).statistic if len(d) >= 3 else float("nan")
        title = f"Do {label_a} and {label_b} order task pairs alike? Spearman ρ = {rho:+.2f}"
    ax.set_title(_wrap(title, fig), fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------------
# source selection (notebooks 06, 07)
# --------------------------------------------------------------------------------------------------
# Methods in the order of the paper's tables (embeddings first, then baselines); others follow.
METHOD_ORDER = ("TextEmb", "TaskEmb", "TextEmb+TaskEmb", "DataSize", "CurveGrad", "LogME", "Random")

_METRIC_LABELS = {
    "rho": "ρ: rank of the truly best source (lower is better)",
    "ndcg": "NDCG of the ranking (0–1; higher is better)",
    "spearman": "Spearman ρ, predicted vs true ranking (higher is better)",
    "kendall": "Kendall τ, predicted vs true ranking (higher is better)",
}


def _metric_label(metric: str) -> str:
    if metric in _METRIC_LABELS:
        return _METRIC_LABELS[metric]
    m = re.match(r"regret@(\d+)", metric)
    if m:
        return f"regret@{m.group(1)}: best of top-{m.group(1)} vs true best (%; lower is better)"
    return metric


def selection_metric_bars(table: pd.DataFrame, metrics: Iterable[str] = ("rho", "ndcg"), *,
                          group: str | None = "target_class", method_col: str = "method",
                          title: str = "Source selection: how well each method ranks the sources",
                          error_col_suffix: str | None = None) -> Figure:
    """One panel per metric; bars = methods, grouped along x by ``group`` (e.g. target class), one
    value per (group, method) (averaged if repeated). Exact values are printed on the bars.

    ``table``: columns ``method`` (``method_col``), ``group`` (optional) and one column per metric.
    With ``error_col_suffix`` (e.g. "_std"), columns ``<metric><suffix>`` give error bars."""
    metrics = list(metrics)
    if isinstance(table, pd.DataFrame) and {"metric", "value"} <= set(table.columns):
        keys = [method_col] + ([group] if group else [])
        _require(table, keys, "selection_metric_bars")
        absent = [m for m in metrics if m not in set(table["metric"])]
        if absent:
            raise KeyError(f"selection_metric_bars: long table has no rows with metric {absent}; "
                           f"it has {sorted(table['metric'].unique())}")
        dup = table[table["metric"].isin(metrics)].duplicated(keys + ["metric"])
        if dup.any():
            raise ValueError("selection_metric_bars: several rows per (method, group, metric); filter the summary "
                             "to one regime and candidate set first")
        table = (table[table["metric"].isin(metrics)]
                 .pivot(index=keys, columns="metric", values="value").reset_index())
    _require(table, [method_col, *metrics] + ([group] if group else []), "selection_metric_bars")
    t = table.copy()
    if group is None:
        group = "_all"
        t[group] = "all targets"
    groups = list(dict.fromkeys(t[group]))
    if set(groups) <= set(CLASS_ORDER) | {"all", "?"}:
        groups = [g for g in CLASS_ORDER + ("all", "?") if g in set(groups)]
    methods = list(dict.fromkeys(t[method_col]))
    paper_order = {m: i for i, m in enumerate(METHOD_ORDER)}
    first_seen = {m: i for i, m in enumerate(methods)}
    methods.sort(key=lambda m: (paper_order.get(str(m).split(" (")[0], len(paper_order)), first_seen[m]))
    colors = dict(zip(methods, _cycle_colors(len(methods))))
    width = 0.8 / len(methods)
    ncols = min(len(metrics), 2)
    nrows = math.ceil(len(metrics) / ncols)
    panel_w = max(3.5, 0.8 + 0.22 * len(methods) * len(groups))
    fig = _new_figure(panel_w * ncols + 1.8, 3.6 * nrows + 0.5)
    grid = fig.subplots(nrows, ncols, squeeze=False)
    axes = list(grid.ravel())
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    for ax, metric in zip(axes, metrics):
        agg = t.groupby([group, method_col], sort=False)[metric].mean()
        err = None
        if error_col_suffix and f"{metric}{error_col_suffix}" in t.columns:
            err = t.groupby([group, method_col], sort=False)[f"{metric}{error_col_suffix}"].mean()
        for k, m in enumerate(methods):
            xs, ys, es = [], [], []
            for i, gname in enumerate(groups):
                if (gname, m) in agg.index:
                    xs.append(i - 0.4 + width * (k + 0.5))
                    ys.append(agg[(gname, m)])
                    es.append(err[(gname, m)] if err is not None else 0.0)
            bars = ax.bar(xs, ys, width=width * 0.95, color=colors[m], label=str(m),
                          yerr=es if err is not None else None, capsize=2)
            if len(methods) * len(groups) <= 24:
                ax.bar_label(bars, fmt="%.2f" if max(map(abs, ys), default=0) < 10 else "%.1f",
                             fontsize=6, padding=1, rotation=90 if len(methods) > 4 else 0)
        ax.set_xticks(range(len(groups)), [str(g) for g in groups])
        ax.set_xlabel("target class" if group == "target_class" else ("" if group == "_all" else group))
        ax.set_ylabel(_metric_label(metric), fontsize=8)
        ax.set_title({"rho": "ρ", "ndcg": "NDCG"}.get(metric, metric), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.15)
        values = t[metric].to_numpy(dtype=float)
        if np.isfinite(values).any() and np.nanmin(values) >= 0:
            ax.set_ylim(bottom=0, top=max(ax.get_ylim()[1], 1e-9) if np.nanmax(values) > 0 else 1.0)
    axes[ncols - 1].legend(title="method", fontsize=7, title_fontsize=8, loc="upper left",
                           bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(_wrap(title, fig, 11), fontsize=11)
    return fig


def source_ranking(ranking: pd.DataFrame, *, target: str | None = None, top_k: int | None = 15,
                   task_classes: Mapping[str, str] | None = None, score_label: str = "ranking score",
                   truth: Mapping[str, float] | None = None, title: str | None = None) -> Figure:
    """Horizontal bars of a ranker's output for one target (best at the top), coloured by source
    class. With ``truth`` (source -> measured relative gain), a second panel shows the measured
    gain of the same sources in the same order, so a reader sees whether the top picks really help.

    ``ranking``: columns ``source``, ``score``, ``rank`` (1 = best), optional ``method``."""
    _require(ranking, ["source", "score", "rank"], "source_ranking")
    r = ranking.sort_values("rank")
    if top_k:
        r = r.head(top_k)
    classes = class_of(r["source"], task_classes)
    n = len(r)
    ncols = 2 if truth is not None else 1
    fig = _new_figure(5.5 * ncols, max(3.4, 1.9 + 0.3 * n))
    axes = fig.subplots(1, ncols, squeeze=False, sharey=True)[0]
    y = np.arange(n)[::-1]
    colors = [CLASS_COLORS.get(classes[s], "#7f7f7f") for s in r["source"]]
    ax = axes[0]
    # a dot plot on a zoomed axis: similarities often differ only in the second decimal
    scores = r["score"].to_numpy(dtype=float)
    lo, hi = float(np.min(scores)), float(np.max(scores))
    pad = 0.08 * (hi - lo) if hi > lo else 0.05 * max(abs(hi), 1e-3)
    left = lo - pad
    ax.hlines(y, left, scores, color=colors, lw=2, alpha=0.6)
    ax.scatter(scores, y, color=colors, s=60, zorder=3, edgecolor="white")
    for yi, v in zip(y, scores):
        ax.annotate(f"{v:.3f}", (v, yi), xytext=(6, 0), textcoords="offset points", va="center", fontsize=7)
    ax.set_xlim(left, hi + 2.5 * pad)
    ax.set_yticks(y, [f"{int(k)}. {s}" if float(k).is_integer() else f"{k:g}. {s}"
                      for k, s in zip(r["rank"], r["source"])])
    ax.set_xlabel(score_label + " (axis zoomed to the scores)")
    ax.set_ylabel("candidate source (rank 1 = try first)")
    ax.grid(axis="x", alpha=0.3)
    _class_legend_below(fig, [classes[s] for s in r["source"]], title="source class")
    if truth is not None:
        ax2 = axes[1]
        vals = [100.0 * truth.get(s, np.nan) for s in r["source"]]
        ax2.barh(y, vals, color=["#2ca02c" if v > 0 else "#d62728" for v in np.nan_to_num(vals)])
        ax2.axvline(0, color="black", lw=1)
        ax2.set_xlabel("measured relative gain on the target (%)")
        ax2.grid(axis="x", alpha=0.3)
        ax2.set_title("what transfer really gave", fontsize=10)
    method = f" by {ranking['method'].iloc[0]}" if "method" in ranking.columns and len(ranking) else ""
    axes[0].set_title("predicted ranking" if truth is not None else "", fontsize=10)
    fig.suptitle(_wrap(title or f"Sources ranked{method}" + (f" for target {target}" if target else "")
                       + ": try the top ones first", fig, 11), fontsize=11)
    return fig


__all__ = [
    "CLASS_COLORS", "CLASS_ORDER", "class_of", "class_transfer_matrix", "epoch_curves", "figure_png", "gain_vs_source_size",
    "in_vs_out_of_class", "regime_gains_side_by_side", "register_notebook_display", "save_figure", "selection_metric_bars", "similarity_agreement", "similarity_heatmap",
    "source_ranking", "target_score_violins", "task_sizes", "task_space_coordinates", "task_space_map",
    "transfer_gain_heatmap",
]


register_notebook_display()
