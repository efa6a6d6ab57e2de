"""How long ``tasktransfer <command> --help`` takes, each in a fresh Python process, beside the time of
``python -c "import torch, transformers"`` (what every command paid before it could parse its arguments)
measured in the same run, interleaved round by round so that both see the same machine load.

    .venv/bin/python benchmarks/bench_cli_help.py
    .venv/bin/python benchmarks/bench_cli_help.py --repeats 5 --json benchmarks/results/bench_cli_help_cpu.json
    .venv/bin/python benchmarks/bench_cli_help.py --package-root OTHER_CHECKOUT   # an older version side by side

Each time is the median wall time of ``--repeats`` runs of ``python -m tasktransfer_utils.cli ... --help``
(interpreter start-up included); the ratio is the import-of-torch-and-transformers time over the command's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = (
    (),
    ("tasks",),
    ("rank",),
    ("finetune",),
    ("baselines",),
    ("study",),
    ("study", "run"),
    ("study", "status"),
    ("study", "report"),
    ("demo",),
)
IMPORT_HEAVY = ("-c", "import torch, transformers")


def _wall(argv: list[str], env: dict, cwd: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=cwd)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited with {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="runs of each command; the median is reported")
    p.add_argument("--package-root", default=str(ROOT),
                   help="the checkout whose tasktransfer_utils is timed (default: this one)")
    p.add_argument("--json", default=None, help="also write the measurements here")
    args = p.parse_args()
    root = str(Path(args.package_root).resolve())  # also the working directory: `python -m` puts it first on sys.path
    env = dict(os.environ, PYTHONPATH=root, HF_HUB_OFFLINE="1")
    runs: dict[str, list[float]] = {}
    heavy: list[float] = []
    for _ in range(args.repeats):
        heavy.append(_wall([sys.executable, *IMPORT_HEAVY], env, root))
        for cmd in COMMANDS:
            name = " ".join(("tasktransfer", *cmd, "--help"))
            runs.setdefault(name, []).append(_wall([sys.executable, "-m", "tasktransfer_utils.cli", *cmd, "--help"],
                                                   env, root))
    t_heavy = statistics.median(heavy)
    which = "this checkout" if Path(root) == ROOT else "the checkout given by --package-root"
    print(f"package: {which}; median of {args.repeats} fresh processes each")
    print(f"{'command':<38} {'wall (s)':>9} {'import torch+transformers / command':>36}")
    heavy_name = 'python -c "import torch, transformers"'
    print(f"{heavy_name:<38} {t_heavy:9.3f} {'1.00x':>36}")
    rows = {}
    for name, times in runs.items():
        t = statistics.median(times)
        rows[name] = t
        print(f"{name:<38} {t:9.3f} {t_heavy / t:35.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"package_root_is_this_checkout": Path(args.package_root).resolve() == ROOT,
                                               "repeats": args.repeats, "import_torch_transformers_s": t_heavy,
                                               "help_s": rows}, indent=1))


if __name__ == "__main__":
    main()
