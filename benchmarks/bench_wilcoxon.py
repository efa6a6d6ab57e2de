"""Speed of the paired comparison's Wilcoxon p-values: ``selection.evaluation.wilcoxon_p`` (the exact
permutation null enumerated as one matrix product) vs ``scipy.stats.wilcoxon(d, zero_method="zsplit")``
(the same exact test, the statistic evaluated once per sign pattern), side by side in one run.

The inputs are the paired differences a study report actually tests: every (method, baseline, candidate
set, target class, metric) of the committed offline study's ``per_target.csv`` (or ``--per-target FILE``),
from ``selection.evaluation.paired_differences`` as ``paired_comparison`` uses them. The two are timed in
lock-step, call by call, alternating which goes first; every p-value is checked equal.

    .venv/bin/python benchmarks/bench_wilcoxon.py
    .venv/bin/python benchmarks/bench_wilcoxon.py --max-cases 40     # quick look
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from tasktransfer_utils.selection import evaluation as sm

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "results" / "offline_study" / "evaluation" / "per_target.csv"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-target", default=str(DEFAULT))
    p.add_argument("--max-cases", type=int, default=0, help="time only the first N difference vectors (0: all)")
    p.add_argument("--json", default=None, help="also write the measurements here")
    args = p.parse_args()
    cases = [d for *_, d in sm.paired_differences(pd.read_csv(args.per_target)) if np.any(d != 0)]
    if args.max_cases:
        cases = cases[: args.max_cases]
    t = {"scipy.stats.wilcoxon": 0.0, "wilcoxon_p": 0.0}
    worst = 0.0
    for i, d in enumerate(cases):
        order = [("scipy.stats.wilcoxon", lambda: stats.wilcoxon(d, zero_method="zsplit").pvalue),
                 ("wilcoxon_p", lambda: sm.wilcoxon_p(d))]
        if i % 2:
            order.reverse()
        got = {}
        for name, fn in order:
            start = time.perf_counter()
            got[name] = float(fn())
            t[name] += time.perf_counter() - start
        a, b = got["scipy.stats.wilcoxon"], got["wilcoxon_p"]
        worst = max(worst, abs(a - b) / max(abs(a), 1e-300))
        if not np.isclose(a, b, rtol=1e-12, atol=0):
            raise SystemExit(f"p-values differ on {d}: scipy {a}, wilcoxon_p {b}")
    sizes = sorted({len(d) for d in cases})
    source = Path(args.per_target).resolve()
    shown = source.relative_to(ROOT) if source.is_relative_to(ROOT) else source
    print(f"{len(cases)} paired-difference vectors from {shown} (sizes {sizes}); "
          f"largest relative p-value difference {worst:.2g}")
    for name, sec in t.items():
        print(f"  {name:22s} {sec:8.2f} s  ({1e3 * sec / len(cases):7.2f} ms a test)")
    ratio = t["scipy.stats.wilcoxon"] / t["wilcoxon_p"]
    print(f"wilcoxon_p is {ratio:.0f}x faster than scipy.stats.wilcoxon on these inputs")
    if args.json:
        Path(args.json).write_text(json.dumps({"cases": len(cases), "sizes": sizes, "seconds": t, "speedup": ratio,
                                               "max_rel_diff": worst}, indent=1) + "\n")


if __name__ == "__main__":
    main()
