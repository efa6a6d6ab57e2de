"""What reproducible GPU fine-tuning costs: ``training.fine_tuning.fine_tune`` as shipped (``deterministic_cuda``:
deterministic algorithms, "math" attention) against the same runs with torch's defaults (fused attention
kernels, atomic-add reductions; ``$TASKTRANSFER_CUDA_DETERMINISTIC=0``), side by side on one GPU, arms
alternated.

Per class (CR SST-2, SL NER, QA SQuAD-1; LIMITED 1,000 training examples, 1 epoch, class presets, 200 dev
examples): training examples/second, peak GPU memory, and whether the arm's two runs with one seed gave
bit-identical loss curves and weights. Both arms run once before timing (warm-up).

    python benchmarks/bench_gpu_determinism.py                     # the offline MiniLM
    python benchmarks/bench_gpu_determinism.py --random-init DIR   # MiniLM's shape from DIR's config.json,
                                                                   # random weights (no weights file needed)
    python benchmarks/bench_gpu_determinism.py --from-json benchmarks/results/bench_gpu_determinism_h200.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

TASKS = {"CR": "SST-2", "SL": "NER", "QA": "SQuAD-1"}
ARMS = ("deterministic (shipped)", "torch defaults")


def random_encoder(config_dir: str, out: Path) -> str:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig.from_pretrained(config_dir)).save_pretrained(out)
    AutoTokenizer.from_pretrained(config_dir).save_pretrained(out)
    return str(out)


def run(task: str, arm: str, encoder: str, root: Path, tag: str) -> dict:
    import torch
    from safetensors.torch import load_file

    from tasktransfer_utils.training import fine_tuning
    from tasktransfer_utils.data.loaders import load_task
    from tasktransfer_utils.training.settings import class_name, preset

    td = load_task(task)
    cls = class_name(td.spec.task_class)
    settings = preset(cls, num_epochs=1, max_eval_examples=200)
    previous = os.environ.get(fine_tuning.CUDA_DETERMINISTIC_ENV)
    os.environ[fine_tuning.CUDA_DETERMINISTIC_ENV] = "1" if arm == ARMS[0] else "0"
    torch.cuda.reset_peak_memory_stats()
    try:
        r = fine_tuning.fine_tune(td, root / tag, encoder=encoder, regime="LIMITED", seed=0, settings=settings)
    finally:
        if previous is None:
            os.environ.pop(fine_tuning.CUDA_DETERMINISTIC_ENV)
        else:
            os.environ[fine_tuning.CUDA_DETERMINISTIC_ENV] = previous
    weights = load_file(f"{r.model_dir}/model.safetensors")
    return {"task": task, "class": cls, "arm": arm, "train_examples_per_s": r.train_examples_per_s,
            "train_time_s": r.train_time_s, "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20,
            "losses": [p["loss"] for p in r.loss_curve], "weights": weights, "score": r.score,
            "mixed_precision": r.mixed_precision}


def summary(rows: list[dict], device: str, torch_version: str, about: str) -> str:
    """The table and, per task, the throughput ratio of the arms' best runs (best of 2: the slower run of
    an arm is the one that met a one-time cost, e.g. a kernel's first load)."""
    lines = [f"{device}, torch {torch_version}, {about}",
             f"{'task':9} {'arm':24} {'train ex/s (2 runs)':>22} {'peak MiB':>9}  identical reruns"]
    for r in rows:
        ex = "/".join(f"{x:.0f}" for x in r["train_examples_per_s"])
        lines.append(f"{r['task']:9} {r['arm']:24} {ex:>22} {r['peak_gpu_mib']:9.0f}  {r['bit_identical_reruns']}")
    for task in dict.fromkeys(r["task"] for r in rows):
        d, f = (next(r for r in rows if r["task"] == task and r["arm"] == arm) for arm in ARMS)
        lines.append(f"{task}: deterministic vs torch defaults: "
                     f"{max(f['train_examples_per_s']) / max(d['train_examples_per_s']):.2f}x slower (best-of-2 "
                     f"throughput), {d['peak_gpu_mib'] / f['peak_gpu_mib']:.2f}x the peak GPU memory")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", default=None, help="encoder folder or hub id (default: the offline MiniLM)")
    p.add_argument("--random-init", default=None, metavar="DIR", help="random weights in the shape of DIR's config")
    p.add_argument("--classes", default="CR,SL,QA")
    p.add_argument("--json", default=None, help="also write the measurements here")
    p.add_argument("--from-json", default=None, metavar="FILE", help="print the summary of a stored --json run")
    args = p.parse_args(argv)
    if args.from_json:
        d = json.loads(Path(args.from_json).read_text())
        print(summary(d["rows"], d["device"], d["torch"], d.get("about", "")))
        return 0

    import torch

    if not torch.cuda.is_available():
        print("bench_gpu_determinism: no CUDA device; nothing to measure", file=sys.stderr)
        return 2
    from tasktransfer_utils.paths import default_encoder

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        encoder = random_encoder(args.random_init, root / "encoder") if args.random_init else (args.encoder or default_encoder())
        for arm in ARMS:  # CUDA context, and each arm's kernels chosen and loaded once before timing
            run(TASKS["CR"], arm, encoder, root, f"warm-up-{ARMS.index(arm)}")
        for cls in args.classes.split(","):
            task = TASKS[cls]
            runs = {arm: [] for arm in ARMS}
            for rep, order in enumerate((ARMS, ARMS[::-1])):  # alternate which arm goes first
                for arm in order:
                    runs[arm].append(run(task, arm, encoder, root, f"{task}-{ARMS.index(arm)}-{rep}"))
            for arm in ARMS:
                a, b = runs[arm]
                same = a["losses"] == b["losses"] and all(torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"])
                rows.append({"task": task, "class": cls, "arm": arm,
                             "train_examples_per_s": [x["train_examples_per_s"] for x in (a, b)],
                             "peak_gpu_mib": max(a["peak_gpu_mib"], b["peak_gpu_mib"]),
                             "bit_identical_reruns": bool(same), "scores": [a["score"], b["score"]],
                             "mixed_precision": a["mixed_precision"]})
    device, about = torch.cuda.get_device_name(), f"encoder {'random-init ' + args.random_init if args.random_init else encoder}"
    print(summary(rows, device, torch.__version__, about))
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device, "torch": torch.__version__, "about": about,
                                               "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
