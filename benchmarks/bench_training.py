"""Training throughput: dynamic padding + length grouping vs padding every batch to the class's max length
(as the authors' code did), measured side by side on the same examples, encoder and settings.

Each configuration runs ``training.fine_tuning.fine_tune`` (1 epoch, the class preset otherwise) in a fresh
subprocess, so that its peak resident memory (``resource.getrusage``, ru_maxrss) is its own. Reported:
training examples/second (optimisation only, evaluation excluded; also per process-CPU second, steadier
than wall time on a machine shared with other jobs), the dynamic/max-length ratio, and peak
memory per class (RSS on CPU; ``torch.cuda.max_memory_allocated`` as well on a GPU). Python-heap tracing
(tracemalloc) is not used: it slows the tokenisation and collation code being timed.

    python benchmarks/bench_training.py                      # MRPC (CR pair), NER (SL), SQuAD-1 (QA)
    python benchmarks/bench_training.py --cr RTE --sl Chunk --n 512 --qa-n 64 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CONFIGS = {
    # name: (group_by_length, pad_to_max_length)
    "max_length (authors)": (False, True),
    "dynamic, random order": (False, False),
    "dynamic + length grouping": (True, False),
}


class _CpuClock:
    """Process CPU seconds (user + system) spent between the start and the end of training."""

    def __new__(cls):
        import resource

        from transformers import TrainerCallback

        def cpu() -> float:
            u = resource.getrusage(resource.RUSAGE_SELF)
            return u.ru_utime + u.ru_stime

        class Clock(TrainerCallback):
            seconds = 0.0

            def on_train_begin(self, *a, **k):
                self._t = cpu()

            def on_train_end(self, *a, **k):
                self.seconds = cpu() - self._t

        return Clock()


def run_one(task: str, n: int, group: bool, pad: bool, encoder: str | None, seed: int,
            threads: int | None = None) -> dict:
    """One configuration in this process; returns its measurements."""
    import dataclasses
    import resource

    import torch
    from datasets import DatasetDict

    from tasktransfer_utils.data.loaders import load_task
    from tasktransfer_utils.training.settings import preset
    from tasktransfer_utils.training.fine_tuning import fine_tune

    if threads:
        torch.set_num_threads(threads)
    td = load_task(task)
    train = td.splits["train"].shuffle(seed=seed).select(range(min(n, len(td.splits["train"]))))
    dev = td.splits["validation"].select(range(8))
    td = dataclasses.replace(td, splits=DatasetDict(train=train, validation=dev))
    settings = preset(td.spec.task_class, num_epochs=1, group_by_length=group, eval_every_epoch=False)
    rss_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    clock = _CpuClock()
    with tempfile.TemporaryDirectory() as tmp:
        r = fine_tune(td, os.path.join(tmp, "run"), encoder=encoder, settings=settings, seed=seed,
                      pad_to_max_length=pad, callbacks=[clock])
    out = {
        "task": task,
        "task_class": r.task_class,
        "examples": r.train_examples,
        "features": r.train_features,
        "steps": r.num_train_steps,
        "train_time_s": r.train_time_s,
        "examples_per_s": r.train_examples_per_s,
        "train_cpu_s": clock.seconds,  # includes the (short) final evaluation
        "examples_per_cpu_s": r.train_examples * settings.num_epochs / max(clock.seconds, 1e-9),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_training_mib": rss_before_kb / 1024,
        "device": r.device,
        "cpu_threads": r.cpu_threads,
        "max_seq_length": settings.max_seq_length,
        "batch_size": settings.batch_size,
    }
    if torch.cuda.is_available():
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def run_in_subprocess(task, n, config, encoder, seed, threads=None) -> dict:
    group, pad = CONFIGS[config]
    cmd = [sys.executable, os.path.abspath(__file__), "--one", task, str(n), str(int(group)), str(int(pad)),
           "--seed", str(seed)]
    if threads:
        cmd += ["--threads", str(threads)]
    if encoder:
        cmd += ["--encoder", encoder]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{task} / {config} failed:\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return {"config": config, **json.loads(line[len("RESULT "):])}


def summary(rows: list[dict]) -> str:
    """The side-by-side table: examples/s per configuration, ratio and peak memory per task."""
    lines = [
        f"device: {rows[0]['device']}, CPU threads: {rows[0]['cpu_threads']}, 1 epoch per configuration, "
        "class presets (batch size / max length per class)",
        f"{'task':9s}{'class':6s}{'examples':>9s}{'max-length ex/s':>17s}{'dynamic ex/s':>14s}"
        f"{'dyn+group ex/s':>16s}{'ratio':>8s}{'CPU ratio':>10s}{'peak RSS MiB max-len/dyn+group':>33s}",
    ]
    for task in dict.fromkeys(r["task"] for r in rows):
        by = {r["config"]: r for r in rows if r["task"] == task}
        base, best = by["max_length (authors)"], by["dynamic + length grouping"]
        mid = by.get("dynamic, random order")
        ratio = best["examples_per_s"] / base["examples_per_s"]
        cpu_ratio = best["examples_per_cpu_s"] / base["examples_per_cpu_s"]
        lines.append(
            f"{task:9s}{best['task_class']:6s}{best['examples']:9d}{base['examples_per_s']:17.2f}"
            f"{(mid['examples_per_s'] if mid else float('nan')):14.2f}{best['examples_per_s']:16.2f}"
            f"{ratio:7.2f}x{cpu_ratio:9.2f}x{base['peak_rss_mib']:22.0f} / {best['peak_rss_mib']:.0f}"
        )
    lines.append("ratio = (dynamic + length grouping) / (max length) in examples per wall second; CPU ratio: "
                 "the same in examples per process-CPU second; peak RSS of each subprocess")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cr", default="MRPC", help="CR pair task (default MRPC)")
    ap.add_argument("--sl", default="NER", help="SL task (default NER)")
    ap.add_argument("--qa", default="SQuAD-1", help="QA task for the per-class row ('' to skip)")
    ap.add_argument("--n", type=int, default=1000,
                    help="training examples per CR/SL configuration (default 1000, the LIMITED regime's size: with "
                         "fewer, the first step's warm-up and Trainer's small length-grouping mega-batches dominate)")
    ap.add_argument("--qa-n", type=int, default=200, help="training questions for QA")
    ap.add_argument("--encoder", default=None, help="encoder (default: the offline MiniLM)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's, all physical cores); 1 is steadier on a busy machine")
    ap.add_argument("--json", default=None, help="also write all measurements to this file")
    ap.add_argument("--one", nargs=4, metavar=("TASK", "N", "GROUP", "PAD"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.one:
        task, n, group, pad = args.one
        res = run_one(task, int(n), bool(int(group)), bool(int(pad)), args.encoder, args.seed, args.threads)
        print("RESULT " + json.dumps(res), flush=True)
        return 0

    t0 = time.perf_counter()
    rows = []
    for task in (args.cr, args.sl):
        for config in CONFIGS:
            rows.append(run_in_subprocess(task, args.n, config, args.encoder, args.seed, args.threads))
            _save(rows, args.json)
            r = rows[-1]
            print(f"{task:8s} {config:28s} {r['examples_per_s']:8.2f} ex/s  peak RSS {r['peak_rss_mib']:7.0f} MiB",
                  flush=True)
    if args.qa:
        for config in ("max_length (authors)", "dynamic + length grouping"):
            rows.append(run_in_subprocess(args.qa, args.qa_n, config, args.encoder, args.seed, args.threads))
            _save(rows, args.json)
            r = rows[-1]
            print(f"{args.qa:8s} {config:28s} {r['examples_per_s']:8.2f} ex/s  peak RSS {r['peak_rss_mib']:7.0f} MiB",
                  flush=True)

    print()
    print(summary(rows))
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


def _save(rows: list[dict], path: str | None) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    raise SystemExit(main())
