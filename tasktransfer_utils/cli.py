"""The ``tasktransfer`` command line. Each subcommand is defined in the module that owns it, through an
``add_<name>_parser(subparsers)`` function that registers it and sets ``func`` (args -> exit status)."""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    from tasktransfer_utils.demo import add_demo_parser
    from tasktransfer_utils.practitioner import add_rank_parser
    from tasktransfer_utils.source_library import add_library_parser
    from tasktransfer_utils.study import add_study_parser
    from tasktransfer_utils.tasks import add_tasks_parser
    from tasktransfer_utils.training import add_baselines_parser, add_finetune_parser

    parser = argparse.ArgumentParser(
        prog="tasktransfer",
        description="Explore and predict transferability across NLP tasks (Vu et al., EMNLP 2020): "
                    "fine-tune, compute task embeddings, and choose a source task for your data.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_rank_parser(subparsers)
    add_library_parser(subparsers)
    add_tasks_parser(subparsers)
    add_study_parser(subparsers)
    add_demo_parser(subparsers)
    add_finetune_parser(subparsers)
    add_baselines_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tasktransfer`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
