"""All deepsift errors, under one documented tree, and the exit codes of the ``deepsift`` command.

    DeepsiftError                 base class; the CLI maps it to exit code 1
    ├── UsageError                bad arguments or options (exit code 2)
    │   └── InputNotFoundError    a named input file or folder does not exist (also a DataError)
    ├── ImageError                one input could not become an image
    │   ├── ImageDecodeError      empty, truncated, corrupt or not an image at all
    │   ├── ImageTooLargeError    more pixels (or bytes) than the documented cap
    │   └── ImageFetchError       a URL timed out, failed, or did not return an image
    │       └── URLNotAllowedError  the URL policy forbids its address (loopback, private, ...)
    ├── ModelError                a model or head could not be loaded or used
    ├── DeviceError               a device this machine lacks (--device cuda without CUDA, cuda:7 of one GPU)
    │   ├── ModelNotFoundError    hub id not reachable/cached, or directory missing
    │   └── NotFittedError        a classifier head used before ``fit``
    ├── UnsafeFileError           a pickle without explicit trust
    ├── DataError                 datasets, shards, records
    │   └── SchemaError           missing or mistyped column
    ├── GeneratorError            a generator backend failed to load or run
    ├── EvaluationError           labels/scores that cannot be evaluated
    └── ServiceError              a request the server refuses (carries its HTTP status)
        ├── InvalidInputError     malformed request or file (422)
        │   └── UnsafeArchiveError    an archive with .., absolute paths, links, too many files
        ├── AuthenticationError   no, bad, expired or revoked credentials (401)
        ├── ForbiddenError        authenticated, but not allowed (403)
        ├── NotFoundError         nothing there, or nothing this caller may see (404)
        ├── ConflictError         clashes with the current state: a taken name, a closed phase (409)
        ├── PayloadTooLargeError  an upload over its size cap (413)
        └── RateLimitedError      too many requests; ``retry_after`` seconds (429)

    DeepsiftWarning               something worth a look that does not stop the work (a UserWarning)
    Terminated                    SIGTERM turned into a KeyboardInterrupt, so clean-up runs (exit code 143)
"""
from __future__ import annotations

import os

EXIT_OK = 0
"""Exit code: everything was done."""
EXIT_ERROR = 1
"""Exit code: an error stopped the command (one line on stderr, no traceback)."""
EXIT_USAGE = 2
"""Exit code: bad usage (argparse errors, out-of-range values, a named input that does not exist)."""
EXIT_PARTIAL = 3
"""Exit code: the command finished, but some inputs failed (each is reported)."""
EXIT_INTERRUPTED = 130
"""Exit code: interrupted (Ctrl-C, SIGINT: 128 + 2)."""
EXIT_TERMINATED = 143
"""Exit code: stopped by SIGTERM (128 + 15), after the same clean-up as Ctrl-C."""


class DeepsiftError(Exception):
    """Base class of every error deepsift raises on purpose."""

    exit_code = EXIT_ERROR


class UsageError(DeepsiftError):
    """Bad arguments or options."""

    exit_code = EXIT_USAGE


class ImageError(DeepsiftError):
    """One input could not become an image."""


class ImageDecodeError(ImageError):
    """Empty, truncated, corrupt or non-image data."""


class ImageTooLargeError(ImageError):
    """The image exceeds the pixel or byte cap."""


class ImageFetchError(ImageError):
    """A URL could not be fetched as an image."""


class URLNotAllowedError(ImageFetchError):
    """The URL's host, a redirect target or a DNS answer is an address the URL policy forbids."""


class ModelError(DeepsiftError):
    """A model or classifier head could not be loaded or used."""


class DeviceError(DeepsiftError):
    """The named torch device does not exist on this machine (exit code 1)."""


class ModelNotFoundError(ModelError):
    """The model is neither a local directory nor reachable/cached on the hub."""


class NotFittedError(ModelError, AttributeError):
    """A classifier head was used before it was fitted."""


class UnsafeFileError(DeepsiftError):
    """Refused to unpickle a file without explicit trust."""


class DataError(DeepsiftError):
    """A dataset, shard or record problem."""


class SchemaError(DataError):
    """A missing or mistyped column."""


class GeneratorError(DeepsiftError):
    """A generator backend failed to load or run."""


class EvaluationError(DeepsiftError):
    """Labels or scores that cannot be evaluated."""


class InputNotFoundError(UsageError, DataError):
    """A file or folder named as an input does not exist (the same message and exit code everywhere)."""


def missing_input_message(path: str | os.PathLike) -> str:
    """The one wording of a missing input: ``'<path>: no such file or folder'``."""
    return f"{os.fspath(path)}: no such file or folder"


def input_not_found(path: str | os.PathLike) -> InputNotFoundError:
    """The error for a named input that does not exist (exit code 2)."""
    return InputNotFoundError(missing_input_message(path))


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so that outputs are cleaned up; the CLI exits 143."""


class DeepsiftWarning(UserWarning):
    """Something worth a look that does not stop the work (e.g. a head that rejects many training images)."""


class ServiceError(DeepsiftError):
    """A request the server refuses; routes turn it into ``status_code`` with the message as detail."""

    status_code = 400


class InvalidInputError(ServiceError):
    """Malformed request or uploaded file."""

    status_code = 422


class UnsafeArchiveError(InvalidInputError):
    """An archive that could write outside its folder or is too large to unpack."""


class AuthenticationError(ServiceError):
    """No, bad, expired or revoked credentials."""

    status_code = 401


class ForbiddenError(ServiceError):
    """Authenticated but not allowed."""

    status_code = 403


class NotFoundError(ServiceError):
    """Nothing there, or nothing the caller may see (the two look the same from outside)."""

    status_code = 404


class ConflictError(ServiceError):
    """Clashes with the current state (a taken name, a closed phase, a used quota)."""

    status_code = 409


class PayloadTooLargeError(ServiceError):
    """An upload over its size cap."""

    status_code = 413


class RateLimitedError(ServiceError):
    """Too many requests; try again after ``retry_after`` seconds."""

    status_code = 429

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def unknown_generator(what: str, names: "list[str] | tuple[str, ...]", known: "set[str] | list[str]") -> UsageError:
    """The one error (and exit code, 2) for generator names that the data does not have, in every command.

    ``what`` says which name in words (e.g. "leave-out generator"), never as a command-line flag."""
    return UsageError(f"{what} {', '.join(repr(n) for n in names)}: no generator of that name here (names are "
                      f"matched exactly); generators: {', '.join(sorted(known)) or 'none'}")
