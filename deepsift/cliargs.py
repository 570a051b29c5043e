"""The one command-line grammar of ``deepsift``: option types, shared options, exit codes, help.

Every command module (``deepsift/<area>/cli.py``) builds its parsers with this module, so an
option means the same thing, is checked the same way and is documented the same way in every
command. A new command (``deepsift train``, ``deepsift serve``, ``deepsift challenges ...``)
adopts it like this::

    # deepsift/train/cli.py
    from ..cliargs import (EXIT_OK, add_command, add_detector_options, detector_kwargs,
                           existing_path, positive_float, positive_int)

    def register(sub, groups):
        p = add_command(sub, "train", "train the CoDE network on D3 shards", description=__doc__)
        p.add_argument("shards", type=existing_path, nargs="+", help="D3 parquet files or folders")
        p.add_argument("--epochs", type=positive_int, default=150, help="training epochs")
        p.add_argument("--lr", type=positive_float, default=2e-3, help="peak learning rate")
        add_detector_options(p, heads=False, classifier=None)
        p.set_defaults(func=cmd_train)

    def cmd_train(args) -> int:
        from .trainer import train  # heavy imports inside the handler: `deepsift --help` stays fast
        train(args.shards, epochs=args.epochs, lr=args.lr, **detector_kwargs(args))
        return EXIT_OK

and names its module in ``COMMAND_MODULES`` of :mod:`deepsift.cli`. A command group
(``deepsift challenges submit|status|...``) takes ``grp = subgroup(sub, groups, "challenges",
"...")`` and then ``add_command(grp, "submit", ...)``.

The rules (``tests/test_cli_grammar.py`` checks them over every registered command):

* Help: every option has help text; :class:`HelpFormatter` appends the default ("(default:
  32)"). Write a default in words only when it is None and needs them ("default: stdout").
  Descriptions and help are plain text: no reStructuredText markup.
* Numbers: every numeric option takes a range-checked type from this module
  (:data:`positive_int`, :data:`probability`, :func:`float_range`, ...). A bad value is bad
  usage, reported at parse time with the option, the range and the value (exit code 2).
* Paths: an input that must exist takes :func:`existing_path`, :func:`existing_dir` or
  :func:`existing_file` (:func:`image_input` also allows URLs, globs and '-';
  :func:`path_or_hub_id` also allows hub ids). A missing one reads "PATH: no such file or
  folder", exit code 2, in every command.
* Shared options: the detector options (:func:`add_detector_options`, read back with
  :func:`detector_kwargs`), the row-output options ``--out``/``--format``
  (:func:`add_output_options`) and ``-v/--verbose``, ``-q/--quiet`` (added by :func:`add_command`
  to every command). A list is a repeatable option (``--classifier linear --classifier knn``),
  never a comma-separated value.
* Exit codes: :data:`EXIT_OK` 0 all done; :data:`EXIT_ERROR` 1 an error stopped the command (a
  :class:`~deepsift.exceptions.DeepsiftError`, one line on stderr); :data:`EXIT_USAGE` 2 bad
  usage; :data:`EXIT_PARTIAL` 3 done, but some inputs failed; :data:`EXIT_INTERRUPTED` 130
  Ctrl-C (SIGINT) and :data:`EXIT_TERMINATED` 143 SIGTERM, both after the same clean-up (an
  ``--out`` file is whole, a marked ``.partial`` file, or nothing). A handler returns EXIT_OK or
  EXIT_PARTIAL and raises DeepsiftError subclasses for everything else.
* Folders and URLs: a command that walks folders of images adds ``--follow-links``
  (:func:`add_folder_options`); a command that reads URLs fetches them under
  :func:`user_url_policy` (:func:`detector_kwargs` passes it): the user's own machine may serve
  images from localhost. The Python API and the servers keep the strict policy (public addresses).
* Imports: torch, transformers, numpy and friends only inside handlers; sub-command modules
  import from here, never from the root :mod:`deepsift.cli`.
"""
from __future__ import annotations

import argparse
import glob
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, NoReturn

from .choices import (
    BACKEND_SETTING,
    BACKENDS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_MODEL,
    HEAD_KINDS,
    OUTPUT_FORMATS,
    PRECISIONS,
    PREPROCESS_MODES,
    URL_TIMEOUT_S,
)
from .hub import looks_like_hub_id
from .exceptions import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_TERMINATED,
    EXIT_USAGE,
    UsageError,
    missing_input_message,
)

__all__ = [
    "EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_PARTIAL", "EXIT_TERMINATED", "EXIT_USAGE", "ArgumentParser",
    "HelpFormatter", "add_command", "add_detector_options", "add_folder_options", "add_group_options", "add_output_options", "add_runtime_options", "add_verbosity", "default_backend", "detector_kwargs",
    "existing_dir", "existing_file", "existing_path", "finite_float", "float_range", "fraction", "image_input",
    "int_range", "non_negative_float", "non_negative_int", "open_fraction", "path_or_hub_id", "plain", "positive_float",
    "positive_int", "probability", "probability_band", "subgroup", "user_url_policy", "verbosity", "workers_count",
    "device_list",
]  # fmt: skip


# -- parsers --------------------------------------------------------------------------------------
class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, with a usage error on one line (the command, the problem, where help is)."""

    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions as written and appends ``(default: X)`` to every option that has one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "%(default)" in text or "default:" in text or "(default" in text:
            return text
        if default is None or default is False or default is argparse.SUPPRESS or default == []:
            return text
        if isinstance(default, (list, tuple)):
            return text + " (default: " + " ".join(str(d) for d in default).replace("%", "%%") + ")"
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text + " (default: %(default)s)"
        return text


def plain(text: str | None) -> str | None:
    """A docstring made fit for ``--help``: reStructuredText roles and double backticks removed."""
    if text is None:
        return None
    text = re.sub(r":(?:func|class|meth|mod|data|attr|exc):`~?([^`]+)`", lambda m: m.group(1).split(".")[-1], text)
    return text.replace("``", "'")


# -- numbers --------------------------------------------------------------------------------------
def _bounds(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return "finite"


def int_range(lo: int | None = None, hi: int | None = None, name: str | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``[lo, hi]`` (either bound may be None)."""
    want = f"an integer {_bounds(lo, hi, False, False)}" if (lo, hi) != (None, None) else "an integer"

    def parse(text: str) -> int:
        try:
            value = int(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}")
        return value

    parse.__name__ = name or "integer"
    return parse


def float_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
                name: str | None = None) -> Callable[[str], float]:
    """An argparse type: a finite number between ``lo`` and ``hi`` (open or closed ends); NaN is refused."""
    want = f"a number {_bounds(lo, hi, lo_open, hi_open)}"

    def parse(text: str) -> float:
        try:
            value = float(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}") from None
        bad = not math.isfinite(value)
        if lo is not None:
            bad |= value <= lo if lo_open else value < lo
        if hi is not None:
            bad |= value >= hi if hi_open else value > hi
        if bad:
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}")
        return value

    parse.__name__ = name or "number"
    return parse


positive_int = int_range(1, name="positive integer")
"""An integer >= 1 (counts, sizes, batch sizes, workers)."""
non_negative_int = int_range(0, name="non-negative integer")
"""An integer >= 0 (retries, resamples, seeds, limits)."""
finite_float = float_range(name="finite number")
"""Any finite number (NaN and infinities refused)."""
positive_float = float_range(0.0, lo_open=True, name="positive number")
"""A finite number > 0 (timeouts, sizes, learning rates)."""
non_negative_float = float_range(0.0, name="non-negative number")
"""A finite number >= 0 (backoffs, margins)."""
probability = float_range(0.0, 1.0, name="probability")
"""A probability in [0, 1] (thresholds, target false-positive rates)."""
fraction = float_range(0.0, 1.0, name="fraction")
"""A fraction in [0, 1]."""
open_fraction = float_range(0.0, 1.0, lo_open=True, hi_open=True, name="fraction")
"""A fraction in (0, 1): both sides keep something (train/test shares)."""


def workers_count(text: str) -> int | str:
    """An argparse type: ``auto`` or an integer >= 1 (image decoding worker processes)."""
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be 'auto' or an integer >= 1, got {text!r}") from None


workers_count.__name__ = "'auto' or a positive integer"


def device_list(text: str) -> list[str]:
    """An argparse type: ``DEV,DEV,...`` torch devices to share the work (``cuda:0,cuda:1``; ``cpu,cpu`` to test)."""
    devices = [d.strip() for d in str(text).split(",")]
    if len(devices) < 1 or not all(re.fullmatch(r"(cpu|cuda|mps)(:\d+)?", d) for d in devices):
        raise argparse.ArgumentTypeError(f"must be devices separated by commas (e.g. cuda:0,cuda:1), got {text!r}")
    return devices


def probability_band(text: str) -> tuple[float, float]:
    """An argparse type: ``LOW,HIGH`` with 0 <= LOW < HIGH <= 1 (the "unsure" band of P(fake))."""
    try:
        low, high = (float(v) for v in str(text).split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be LOW,HIGH (e.g. 0.4,0.6), got {text!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and 0.0 <= low < high <= 1.0):
        raise argparse.ArgumentTypeError(f"must be LOW,HIGH with 0 <= LOW < HIGH <= 1, got {text!r}")
    return low, high


# -- paths ----------------------------------------------------------------------------------------
def existing_path(text: str) -> str:
    """An argparse type: a file or folder that exists."""
    if not os.path.lexists(os.path.expanduser(text)):
        raise argparse.ArgumentTypeError(missing_input_message(text))
    return text


def existing_dir(text: str) -> str:
    """An argparse type: a folder that exists."""
    path = Path(existing_path(text)).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: not a folder")
    return text


def existing_file(text: str) -> str:
    """An argparse type: a file that exists."""
    path = Path(existing_path(text)).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder, not a file")
    return text


def image_input(text: str) -> str:
    """An argparse type for image inputs: an existing file or folder, a glob, an http(s) URL or '-'."""
    if text == "-" or text.lower().startswith(("http://", "https://")) or glob.has_magic(text):
        return text
    return existing_path(text)


def path_or_hub_id(text: str) -> str:
    """An argparse type: an existing file or folder, or a hub id of the form ``owner/name``."""
    if os.path.lexists(os.path.expanduser(text)) or looks_like_hub_id(text):
        return text
    raise argparse.ArgumentTypeError(missing_input_message(text))


# -- shared options -------------------------------------------------------------------------------
def add_verbosity(parser: argparse.ArgumentParser, *, root: bool = False) -> None:
    """``-v/--verbose`` and ``-q/--quiet`` (on the root parser and, without defaults, on each command)."""
    group = parser.add_mutually_exclusive_group()
    kw: dict[str, Any] = {} if root else {"default": argparse.SUPPRESS}
    group.add_argument("-v", "--verbose", action="store_true",
                       help="say more: per-item log lines and the warnings of the libraries underneath", **kw)
    group.add_argument("-q", "--quiet", action="store_true", help="errors only: no progress bar, no summary lines",
                       **kw)


def verbosity(args: argparse.Namespace) -> int:
    """-1 quiet, 0 normal, 1 verbose."""
    return 1 if getattr(args, "verbose", False) else -1 if getattr(args, "quiet", False) else 0


def add_command(sub: argparse._SubParsersAction, name: str, help: str, *, description: str | None = None,
                epilog: str | None = None, **kwargs: Any) -> argparse.ArgumentParser:
    """Add one command: the shared help formatter, plain-text description, verbosity options."""
    parser = sub.add_parser(name, help=help, description=plain(description) or help, epilog=plain(epilog),
                            formatter_class=HelpFormatter, **kwargs)
    add_verbosity(parser)
    return parser


def subgroup(sub: argparse._SubParsersAction, groups: dict, name: str, help: str) -> argparse._SubParsersAction:
    """The sub-commands of command group ``name`` (e.g. ``data``), created once and shared by modules."""
    if name not in groups:
        parser = sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)
        groups[name] = parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND")
        parser.set_defaults(func=lambda args, _p=parser: _group_usage(_p))
    return groups[name]


def _group_usage(parser: argparse.ArgumentParser) -> int:
    import sys

    parser.print_help(sys.stderr)
    return EXIT_USAGE


def add_detector_options(parser: argparse.ArgumentParser, *, model_default: str | None = DEFAULT_MODEL,
                         heads: bool = True, classifier: str | None = "one", threshold: bool = False,
                         inputs: bool = True) -> argparse._ArgumentGroup:
    """The CoDE detector options, the same in every command that runs the detector.

    ``classifier``: ``"one"`` (one head), ``"many"`` (repeatable; default linear), or None (no
    heads involved). ``inputs`` adds ``--url-timeout`` (commands that read URLs). With
    ``model_default=None``, ``--model`` is optional and its absence means "no CoDE detector".
    """
    g = parser.add_argument_group("detector options")
    g.add_argument("--model", default=model_default, metavar="MODEL", type=path_or_hub_id,
                   help="CoDE hub id or local model folder" + ("" if model_default else
                                                               " (default: none, only --detector ones)"))
    if heads:
        g.add_argument("--heads", metavar="DIR", type=existing_dir,
                       help="classifier heads folder (default: MODEL/heads, then the deepsift cache)")
        g.add_argument("--force-heads", action="store_true",
                       help="use the heads even if they were fitted on another backbone (their verdicts may be wrong)")
    if classifier == "one":
        g.add_argument("--classifier", choices=HEAD_KINDS, default="linear", help="classifier head")
    elif classifier == "many":
        g.add_argument("--classifier", choices=HEAD_KINDS, action="append", default=None,
                       help="classifier head; repeat to compare heads (default: linear)")
    if threshold:
        g.add_argument("--threshold", type=probability, default=None,
                       help="call an image fake when its calibrated P(fake) >= this (default: 0.5)")
    g.add_argument("--precision", choices=PRECISIONS, default="fp32", help="numeric precision of the network")
    g.add_argument("--backend", choices=BACKENDS, default=None,
                   help="engine running the network: torch, onnx (ONNX Runtime, CPU, fp32), or auto: the fastest "
                        "of torch fp32, ONNX Runtime and (with --precision bf16, for heads whose bf16 labels agree "
                        "with fp32 on >= 99.5 %% of the benchmark's images) torch bf16, measured in a second or two "
                        "once per model and machine and cached in the user cache folder; -v says which and why "
                        f"(default: ${BACKEND_SETTING}, else auto)")
    g.add_argument("--preprocessing", choices=PREPROCESS_MODES, default="official",
                   help="official: centre crop 224, no resize, zero padding; resize: 248 then crop 224 (training)")
    add_runtime_options(g, batch_size=DEFAULT_BATCH_SIZE, device="auto", url_timeout=inputs)
    return g


def add_runtime_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, batch_size: int | None,
                        device: str | None = "cpu", url_timeout: bool = True) -> None:
    """``--device``, ``--batch-size``, ``--workers`` (and ``--url-timeout``): how any model runs, not what it is.

    With ``batch_size=None`` / ``device=None`` each model keeps its own default (the baselines).
    """
    parser.add_argument("--device", default=device, help="torch device of the network: auto (CUDA when present), "
                        "cpu, cuda, cuda:1, ..." + ("" if device else " (default: the model's own, cpu)"))
    parser.add_argument("--batch-size", type=positive_int, default=batch_size,
                        help="images per forward pass" + ("" if batch_size else " (default: the model's own)"))
    parser.add_argument("--workers", type=workers_count, default="auto",
                        help="image decoding worker processes; auto: one per CPU (two threads on a 1-2 CPU machine)")
    if url_timeout:
        parser.add_argument("--url-timeout", type=positive_float, default=URL_TIMEOUT_S, metavar="SECONDS",
                            help="time limit for each image URL")


def detector_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``Detector.load`` / ``load_backbone_only`` from the detector options.

    A command that reads URLs also gets :func:`user_url_policy` (the library's default is strict).
    """
    out = {k: getattr(args, k) for k in ("device", "batch_size", "precision", "preprocessing", "workers")}
    out["backend"] = getattr(args, "backend", None) or default_backend()
    if getattr(args, "devices", None):
        out["devices"] = args.devices
    if getattr(args, "force_heads", False):
        out["force_heads"] = True
    if hasattr(args, "url_timeout"):
        out["url_timeout"] = args.url_timeout
        out["url_policy"] = user_url_policy()
    return out


def default_backend() -> str:
    """The ``--backend`` a command runs when none is given: the ``DEEPSIFT_BACKEND`` setting, else auto."""
    value = os.environ.get(BACKEND_SETTING, "").strip()
    if value.lower() not in BACKENDS and value:
        raise UsageError(f"setting {BACKEND_SETTING}: must be one of {', '.join(BACKENDS)}, got {value!r}")
    return value.lower() or "auto"


def user_url_policy() -> Any:
    """The URL policy of a command a user runs on their own machine: any address, localhost and the LAN included.

    The Python API and the servers keep :data:`deepsift.urlfetch.STRICT_POLICY` (public addresses only).
    """
    from .urlfetch import USER_POLICY  # httpx: loaded by the handler, never to build the parser

    return USER_POLICY


def add_folder_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--follow-links``, for every command that walks folders of images (:func:`deepsift.sources.walk_images`)."""
    parser.add_argument("--follow-links", action="store_true",
                        help="also walk directory links that lead out of a named folder (default: not followed; "
                             "each real folder is walked once and link loops are never followed)")


def add_group_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--group`` and ``--groups``: how real images are grouped so that a split never cuts a source in two."""
    parser.add_argument("--group", choices=("folder", "camera", "image"), default="folder",
                        help="keep real images of one source on one side of a split: folder (real/<source>/...), "
                             "camera (EXIF make and model), or image (each image alone)")
    parser.add_argument("--groups", metavar="CSV", type=existing_file,
                        help="group column file: CSV with id (or path) and group columns; wins over --group for "
                             "the images it lists (default: none)")


def add_output_options(parser: argparse.ArgumentParser, *, default_format: str = "table",
                       formats: tuple[str, ...] = OUTPUT_FORMATS) -> None:
    """``--out FILE`` and ``--format``, for every command that writes result rows."""
    parser.add_argument("--out", metavar="FILE", help="write the rows to this file (default: stdout)")
    parser.add_argument("--format", choices=formats, default=default_format, help="row format")

