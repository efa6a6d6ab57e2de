"""Speed of the task embeddings, as ratios measured side by side in one run.

- TextEmb of N examples (``compute_textemb`` end to end, and its core loop on collated batches) vs a bare
  no-grad forward pass of the encoder over the same batches (target <= 1.2x);
- TaskEmb, paper estimator (``fisher_from_batches``, every component) vs one forward + backward of the
  same model over the same batches (target <= 1.5x), on the first ``--taskemb-n`` examples (default 256:
  a few minutes on two CPU cores);
- TaskEmb, per-example estimator vs the paper estimator (target <= 4x).

Two methods are timed in lock-step (:class:`Lockstep`): batch by batch, alternating which goes first,
each charged the wall and CPU seconds of its own turns, so both see the same machine load (a shared
machine otherwise skews whole-pass timings by tens of percent). Each part starts with a warm-up call.
Peak memory: extra resident memory (CPU) or extra allocated memory (CUDA) above the level before the
call, each method run alone on its first few batches. The TaskEmb model is the encoder with a freshly
initialised classification head: the cost does not depend on how well the head is trained.

    nice -n 10 .venv/bin/python benchmarks/bench_embeddings.py                    # MiniLM, SST-2
    .venv/bin/python benchmarks/bench_embeddings.py --n 200 --taskemb-n 64       # quick look
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch


class PeakMemory:
    """Peak extra memory (MiB) during a block: CUDA allocations, or the process's resident set size
    sampled every 2 ms on the CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mib = 0.0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
            return self
        gc.collect()
        try:  # hand freed heap pages back to the OS so that the resident size starts from live memory
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
        self._start = self._rss()
        self._max = self._start
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self._max = max(self._max, self._rss())
                time.sleep(0.002)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_mib = (torch.cuda.max_memory_allocated() - self._start) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self._max = max(self._max, self._rss())
            self.peak_mib = (self._max - self._start) / 2**20
        return False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Lockstep:
    """Runs several consumers of the same batches in lock-step, one batch at a time, alternating who goes
    first, and charges each the wall and CPU time of its own turns. Two methods measured this way see the
    same machine load, which a busy shared machine otherwise skews by tens of percent between passes.

    Turns of a consumer: 0 = set-up until it asks for the first batch, 1..n = batch i, n+1 = finishing."""

    def __init__(self, names: list[str], n_batches: int, device: torch.device):
        self.schedule = []
        for step in range(n_batches + 2):
            order = names if step % 2 == 0 else names[::-1]
            self.schedule += [(n, step) for n in order]
        self.pos = 0
        self.cv = threading.Condition()
        self.wall = {n: 0.0 for n in names}
        self.cpu = {n: 0.0 for n in names}
        self.device = device
        self.error: BaseException | None = None

    def wait_turn(self, name: str, step: int) -> None:
        with self.cv:
            ok = self.cv.wait_for(lambda: self.error is not None or self.schedule[self.pos] == (name, step), timeout=3600)
            if self.error is not None or not ok:
                raise RuntimeError(f"lock-step benchmark aborted while {name} waited for turn {step}")
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def end_turn(self, name: str) -> None:
        _sync(self.device)
        with self.cv:
            self.wall[name] += time.perf_counter() - self._t0
            self.cpu[name] += time.process_time() - self._c0
            self.pos += 1
            self.cv.notify_all()

    def batches(self, name: str, batches: list):
        for i, b in enumerate(batches, start=1):
            self.end_turn(name)
            self.wait_turn(name, i)
            yield b
        self.end_turn(name)
        self.wait_turn(name, len(batches) + 1)

    def run(self, consumers: dict, batches: list) -> dict[str, dict]:
        """``consumers``: name -> function(iterable of batches). Returns name -> {wall_s, cpu_s}."""

        def work(name, fn):
            try:
                self.wait_turn(name, 0)
                fn(self.batches(name, batches))
                self.end_turn(name)
            except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
                with self.cv:
                    self.error = self.error or e
                    self.cv.notify_all()

        threads = [threading.Thread(target=work, args=(n, f), daemon=True) for n, f in consumers.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if self.error is not None:
            raise self.error
        return {n: {"wall_s": round(self.wall[n], 3), "cpu_s": round(self.cpu[n], 3)} for n in consumers}


def race(consumers: dict, batches: list, device: torch.device, label: str) -> dict[str, dict]:
    res = Lockstep(list(consumers), len(batches), device).run(consumers, batches)
    for name, v in res.items():
        print(f"  {label}: {name:<24s} wall {v['wall_s']:8.2f} s   cpu {v['cpu_s']:8.2f} s", flush=True)
    return res


def _timed(fn, device: torch.device) -> tuple[float, float]:
    """(wall s, CPU s) of one call."""
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return round(time.perf_counter() - t0, 3), round(time.process_time() - c0, 3)


def peak_memory(fn, device: torch.device) -> float:
    """Peak extra MiB of one call run alone."""
    with PeakMemory(device) as mem:
        fn()
    return round(mem.peak_mib, 1)


def main(argv=None) -> dict:
    import dataclasses

    from datasets import DatasetDict
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    from tasktransfer_utils.training.features import collator_for_class, model_inputs, tokenize_for_class
    from tasktransfer_utils.data.loaders import load_task
    from tasktransfer_utils.paths import default_encoder
    from tasktransfer_utils.data.regimes import Regime, apply_regime
    from tasktransfer_utils.training.settings import preset
    from tasktransfer_utils.embeddings.taskemb import fisher_from_batches
    from tasktransfer_utils.embeddings.textemb import compute_textemb, length_sorted_batches, textemb_from_batches

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="SST-2", help="a CR classification task (default SST-2)")
    p.add_argument("--encoder", default=None, help="encoder folder or hub id (default: offline MiniLM)")
    p.add_argument("--n", type=int, default=1000, help="training examples (seeded sample)")
    p.add_argument("--taskemb-n", type=int, default=256, help="examples for the TaskEmb part (first of the sample)")
    p.add_argument("--textemb-batch-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32, help="TaskEmb batch size (authors: 32)")
    p.add_argument("--device", default=None)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    encoder = args.encoder or default_encoder()
    td = load_task(args.task)
    if td.spec.is_regression or td.spec.task_class.value != "CR":
        raise SystemExit(f"--task must be a CR classification task, got {td.spec.name}")
    rows = apply_regime(td.splits["train"], Regime.LIMITED, seed=0, n=args.n)
    small = dataclasses.replace(td, splits=DatasetDict(train=rows))
    tok = AutoTokenizer.from_pretrained(encoder)
    settings = preset("CR")
    collate = collator_for_class("CR", tok)
    env = {"device": str(device), "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
           "machine": platform.machine(), "load_avg_1min": os.getloadavg()[0], "torch": torch.__version__,
           "encoder": encoder, "task": td.spec.name, "n": len(rows)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    print("environment:", json.dumps(env), flush=True)
    results: dict = {"environment": env}

    # ---------------------------------------------------------------- TextEmb
    enc = AutoModel.from_pretrained(encoder).to(device).eval()
    feats = tokenize_for_class(small, rows, tok, settings, for_training=False)
    batches = [{k: v.to(device) for k, v in b.items()} for b in
               length_sorted_batches(feats, collate, args.textemb_batch_size)]
    n_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    print(f"TextEmb: {len(rows)} examples, {len(batches)} batches of <= {args.textemb_batch_size}, "
          f"{n_tokens} real tokens", flush=True)

    @torch.no_grad()
    def bare_forward(bs):
        for b in bs:
            enc(**b)

    with torch.no_grad():  # warm-up: first calls pay for lazy initialisation
        enc(**batches[0])
    r = race({"bare forward": bare_forward, "TextEmb core": lambda bs: textemb_from_batches(enc, bs)},
             batches, device, "TextEmb")
    # end to end (tokenisation, loading, batching, forward, pooling) cannot run in lock-step: alternate
    # whole calls A B B A and keep the fastest of each
    e2e = lambda: compute_textemb(small, encoder=encoder, batch_size=args.textemb_batch_size, device=device)  # noqa: E731
    solo = {"TextEmb end to end": [], "bare forward": []}
    for name in ("TextEmb end to end", "bare forward", "bare forward", "TextEmb end to end"):
        solo[name].append(_timed(e2e if name == "TextEmb end to end" else (lambda: bare_forward(batches)), device))
    (e2e_wall, e2e_cpu), (bare_wall, bare_cpu) = (min(solo[k]) for k in ("TextEmb end to end", "bare forward"))
    print(f"  alone: TextEmb end to end       wall {e2e_wall:8.2f} s   cpu {e2e_cpu:8.2f} s   (fastest of 2)")
    print(f"  alone: bare forward             wall {bare_wall:8.2f} s   cpu {bare_cpu:8.2f} s   (fastest of 2)", flush=True)
    mem = {"bare forward": peak_memory(lambda: bare_forward(batches[:4]), device),
           "TextEmb core": peak_memory(lambda: textemb_from_batches(enc, batches[:4]), device)}
    results["textemb"] = {
        "lockstep": r, "end_to_end_alone": {"wall_s": e2e_wall, "cpu_s": e2e_cpu},
        "bare_forward_alone": {"wall_s": bare_wall, "cpu_s": bare_cpu}, "peak_mib_4_batches": mem,
        "ratio_core_wall": r["TextEmb core"]["wall_s"] / r["bare forward"]["wall_s"],
        "ratio_core_cpu": r["TextEmb core"]["cpu_s"] / r["bare forward"]["cpu_s"],
        "ratio_end_to_end_wall": e2e_wall / bare_wall, "ratio_end_to_end_cpu": e2e_cpu / bare_cpu, "target": 1.2,
    }
    del enc

    # ---------------------------------------------------------------- TaskEmb
    n_task = args.taskemb_n
    trows = rows.select(range(min(n_task, len(rows))))
    model = AutoModelForSequenceClassification.from_pretrained(encoder, num_labels=len(td.label_names)).to(device)
    model.eval()
    tfeats = model_inputs(tokenize_for_class(small, trows, tok, settings, td.label_names, for_training=True))
    order = np.random.default_rng(0).permutation(len(tfeats))  # random batches, as compute_taskemb
    tb = [{k: v.to(device) for k, v in collate([tfeats[int(i)] for i in order[s : s + args.batch_size]]).items()}
          for s in range(0, len(order), args.batch_size)]
    n_params = sum(p.numel() for p in model.parameters())
    print(f"TaskEmb: {len(trows)} examples, {len(tb)} batches of <= {args.batch_size}, model {n_params / 1e6:.1f} M "
          "parameters, every component", flush=True)

    def forward_backward(bs):
        for b in bs:
            model.zero_grad(set_to_none=True)
            model(**b).loss.backward()
        model.zero_grad(set_to_none=True)

    paper = lambda bs: fisher_from_batches(model, bs, "CR", estimator="paper")  # noqa: E731
    per_example = lambda bs: fisher_from_batches(model, bs, "CR", estimator="empirical")  # noqa: E731
    forward_backward(tb[:1])  # warm-up
    per_example(tb[:1])
    r1 = race({"forward+backward": forward_backward, "TaskEmb paper": paper}, tb, device, "TaskEmb")
    r2 = race({"TaskEmb paper": paper, "TaskEmb per-example": per_example}, tb, device, "TaskEmb")
    mem = {"forward+backward": peak_memory(lambda: forward_backward(tb[:3]), device),
           "TaskEmb paper": peak_memory(lambda: paper(tb[:3]), device),
           "TaskEmb per-example": peak_memory(lambda: per_example(tb[:3]), device)}
    results["taskemb"] = {
        "lockstep_paper_vs_fb": r1, "lockstep_per_example_vs_paper": r2, "peak_mib_3_batches": mem,
        "ratio_paper_vs_fb_wall": r1["TaskEmb paper"]["wall_s"] / r1["forward+backward"]["wall_s"],
        "ratio_paper_vs_fb_cpu": r1["TaskEmb paper"]["cpu_s"] / r1["forward+backward"]["cpu_s"],
        "target_paper": 1.5,
        "ratio_per_example_vs_paper_wall": r2["TaskEmb per-example"]["wall_s"] / r2["TaskEmb paper"]["wall_s"],
        "ratio_per_example_vs_paper_cpu": r2["TaskEmb per-example"]["cpu_s"] / r2["TaskEmb paper"]["cpu_s"],
        "target_per_example": 4.0,
    }

    t, k = results["textemb"], results["taskemb"]
    print("\nsummary: ratios of lock-step timings in this run (wall / CPU seconds)")
    print(f"  TextEmb core / bare forward          {t['ratio_core_wall']:5.2f}x / {t['ratio_core_cpu']:5.2f}x   (target <= 1.2x)")
    print(f"  TextEmb end to end / bare forward    {t['ratio_end_to_end_wall']:5.2f}x / {t['ratio_end_to_end_cpu']:5.2f}x   "
          "(whole calls alternated; includes tokenisation and model loading)")
    print(f"  TaskEmb paper / forward+backward     {k['ratio_paper_vs_fb_wall']:5.2f}x / {k['ratio_paper_vs_fb_cpu']:5.2f}x   (target <= 1.5x)")
    print(f"  TaskEmb per-example / paper          {k['ratio_per_example_vs_paper_wall']:5.2f}x / "
          f"{k['ratio_per_example_vs_paper_cpu']:5.2f}x   (target <= 4x)")
    print("peak extra memory, each run alone on its first batches (MiB):")
    for name, v in {**t["peak_mib_4_batches"], **k["peak_mib_3_batches"]}.items():
        print(f"  {name:<24s} {v:8.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
