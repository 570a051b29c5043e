"""The one ``deepsift`` command. Each area registers its sub-commands from its own ``cli`` module.

A command module exposes ``register(subparsers, groups)`` and builds its parsers with
:mod:`deepsift.cliargs` (the shared grammar: option types, shared options, exit codes); each
parser sets ``func`` to a handler ``(args) -> int`` (the exit code). A
:class:`~deepsift.exceptions.DeepsiftError` becomes one line on stderr and its ``exit_code``;
nothing else is caught, so bugs keep their tracebacks. Ctrl-C exits 130 and SIGTERM 143, both
after the same clean-up (an ``--out`` file is whole, kept as a marked ``.partial`` file, or absent).

Only this module and :mod:`deepsift.cliargs` are imported to build the parser; every command
module imports its heavy libraries inside its handlers, so ``deepsift --help`` starts at once.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Sequence

from . import __version__
from .cliargs import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    ArgumentParser,
    HelpFormatter,
    add_verbosity,
    subgroup,
    verbosity,
)
from .exceptions import DeepsiftError, Terminated

__all__ = ["COMMAND_MODULES", "build_parser", "main", "subgroup"]  # subgroup: kept for older command modules

COMMAND_MODULES = (
    "deepsift.model.cli",  # detect, embed, heads, weights, export
    "deepsift.data.cli",  # data ...
    "deepsift.generate.cli",  # data build
    "deepsift.evaluate.cli",  # eval ...
    "deepsift.evaluate.baselines.cli",  # baseline list, train, predict
    "deepsift.server.cli",  # serve, admin ...
    "deepsift.challenges.cli",  # challenges create, worker, login, submit, status, leaderboard, download
    "deepsift.train.cli",  # train
    "deepsift.adapt.cli",  # adapt, model info
)

THIRD_PARTY_LOGGERS = ("httpx", "httpcore", "huggingface_hub", "urllib3", "filelock", "datasets", "fsspec",
                       "diffusers", "transformers", "torch", "ray", "PIL", "matplotlib")
"""Loggers silenced to errors unless --verbose (retry chatter, HTTP request lines, load notices)."""

QUIET_ENVIRONMENT = {
    "TRANSFORMERS_VERBOSITY": "error",  # "requires torchvision", advisory notices
    "DIFFUSERS_VERBOSITY": "error",  # "install accelerate for low_cpu_mem_usage"
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # per-file download / per-tensor load bars
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_DEDUP_LOGS": "0",
}
"""Environment set (unless the user set it) before any library loads, when not --verbose."""


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every registered sub-command."""
    parser = ArgumentParser(
        prog="deepsift", formatter_class=HelpFormatter,
        description="Tell real images from AI-generated ones (CoDE detector, D3 dataset tools, evaluation).",
        epilog="Exit codes: 0 all done; 1 an error stopped the command (one line on stderr); 2 bad usage; "
               "3 done, but some inputs failed; 130 Ctrl-C; 143 SIGTERM. "
               "'deepsift COMMAND --help' describes each command.",
    )
    parser.add_argument("--version", action="version", version=f"deepsift {__version__}")
    add_verbosity(parser, root=True)
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


def configure_console(level: int) -> None:
    """Quiet by default: third-party warnings, notices and retry lines only with ``--verbose`` (level 1).

    Level -1 (``--quiet``) also turns off progress bars and summary lines. deepsift's own warnings
    (:class:`~deepsift.exceptions.DeepsiftWarning`) show at levels 0 and 1 as one line each.
    """
    from .exceptions import DeepsiftWarning
    from .output import set_console

    set_console(level)
    if level < 1:
        for key, value in QUIET_ENVIRONMENT.items():
            os.environ.setdefault(key, value)
        warnings.filterwarnings("ignore")
        for name in THIRD_PARTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    if level >= 0:
        warnings.filterwarnings("default", category=DeepsiftWarning)
    else:
        warnings.filterwarnings("ignore", category=DeepsiftWarning)
    warnings.formatwarning = _one_line_warning  # type: ignore[assignment]
    log = logging.getLogger("deepsift")
    log.setLevel(logging.INFO if level > 0 else logging.WARNING if level == 0 else logging.ERROR)
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("deepsift: %(message)s"))
        log.addHandler(handler)


class _StderrHandler(logging.Handler):
    """Log records to whatever ``sys.stderr`` is at the time (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr, flush=True)
        except Exception:  # logging must never take the command down
            self.handleError(record)


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
    """``deepsift: warning: ...`` for deepsift's warnings; the usual form (with its origin) for others."""
    from .exceptions import DeepsiftWarning

    if issubclass(category, DeepsiftWarning):
        return f"deepsift: warning: {message}\n"
    return f"{filename}:{lineno}: {category.__name__}: {message}\n"


def torch_has_cuda() -> bool | None:
    """Whether the installed torch was built with CUDA, read from its ``version.py`` without importing torch.

    None when that cannot be told (no torch, an unusual install): the full check then runs later.
    """
    import importlib.util
    import re

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.origin:
        return None
    try:
        text = (Path(spec.origin).parent / "version.py").read_text()
    except OSError:
        return None
    m = re.search(r"^cuda(?::[^=]*)?=\s*(.+)$", text, re.M)
    return None if m is None else m.group(1).strip() not in ("None", "''", '""')


def check_devices_early(args: argparse.Namespace) -> None:
    """A CUDA device asked of a torch built without CUDA is refused before torch loads (seconds saved)."""
    from .exceptions import DeviceError

    names = [getattr(args, "device", None)] + list(getattr(args, "devices", None) or [])
    wanted = [str(n) for n in names if n is not None and str(n).strip().lower().startswith("cuda")]
    if wanted and torch_has_cuda() is False:
        raise DeviceError(f"device {wanted[0]!r} is not usable here (this torch has no CUDA support); "
                          f"use the device 'cpu' or 'auto'")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``deepsift`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) and usage errors (2): argparse already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    configure_console(verbosity(args))
    from .output import sigterm_as_interrupt

    try:
        check_devices_early(args)
        with sigterm_as_interrupt():  # SIGTERM unwinds like Ctrl-C: outputs are whole, marked partial, or absent
            return int(func(args) or 0)
    except DeepsiftError as exc:
        print(f"deepsift: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # e.g. `deepsift detect DIR | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt as exc:
        if isinstance(exc, Terminated):
            print("deepsift: terminated (SIGTERM)", file=sys.stderr)
            return EXIT_TERMINATED
        print("deepsift: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
