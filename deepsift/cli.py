"""The one ``deepsift`` command. Each area registers its sub-commands from its own ``cli`` module.

A command module exposes ``register(subparsers)``; each parser it adds sets ``func`` to a
handler ``(args) -> int`` (the exit code). :class:`DeepsiftError` becomes a one-line message
on stderr and its ``exit_code``; nothing else is caught, so bugs keep their tracebacks.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from . import __version__
from .exceptions import DeepsiftError

COMMAND_MODULES = (
    "deepsift.model.cli",  # detect, embed, heads, weights, export
    "deepsift.data.cli",  # data ...
    "deepsift.generate.cli",  # data build
    "deepsift.evaluate.cli",  # eval, baseline ...
    "deepsift.evaluate.baselines.cli",  # baseline list, train, predict
)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="deepsift", description="Tell real images from AI-generated ones (CoDE, D3, evaluation)."
    )
    parser.add_argument("--version", action="version", version=f"deepsift {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # an optional area that is not installed
            if exc.name != name:
                raise
            continue
        module.register(sub, groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``deepsift`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args) or 0)
    except DeepsiftError as exc:
        print(f"deepsift: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # e.g. `deepsift detect DIR | head`: stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("deepsift: interrupted", file=sys.stderr)
        return 130


def subgroup(sub: argparse._SubParsersAction, groups: dict, name: str, help: str) -> argparse._SubParsersAction:
    """Return the sub-parsers of command group ``name`` (e.g. ``data``), creating it once."""
    if name not in groups:
        p = sub.add_parser(name, help=help)
        groups[name] = p.add_subparsers(dest=f"{name}_command", metavar="COMMAND")
        p.set_defaults(func=lambda args, _p=p: (_p.print_help(sys.stderr), 2)[1])
    return groups[name]


if __name__ == "__main__":
    sys.exit(main())
