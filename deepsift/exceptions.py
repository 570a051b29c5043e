"""All deepsift errors, under one documented tree.

    DeepsiftError                 base class; the CLI maps it to exit code 1
    ├── UsageError                bad arguments or options (exit code 2)
    ├── ImageError                one input could not become an image
    │   ├── ImageDecodeError      empty, truncated, corrupt or not an image at all
    │   ├── ImageTooLargeError    more pixels (or bytes) than the documented cap
    │   └── ImageFetchError       a URL timed out, failed, or did not return an image
    ├── ModelError                a model or head could not be loaded or used
    │   ├── ModelNotFoundError    hub id not reachable/cached, or directory missing
    │   └── NotFittedError        a classifier head used before ``fit``
    ├── UnsafeFileError           a pickle without explicit trust
    ├── DataError                 datasets, shards, records
    │   └── SchemaError           missing or mistyped column
    ├── GeneratorError            a generator backend failed to load or run
    └── EvaluationError           labels/scores that cannot be evaluated
"""
from __future__ import annotations


class DeepsiftError(Exception):
    """Base class of every error deepsift raises on purpose."""

    exit_code = 1


class UsageError(DeepsiftError):
    """Bad arguments or options."""

    exit_code = 2


class ImageError(DeepsiftError):
    """One input could not become an image."""


class ImageDecodeError(ImageError):
    """Empty, truncated, corrupt or non-image data."""


class ImageTooLargeError(ImageError):
    """The image exceeds the pixel or byte cap."""


class ImageFetchError(ImageError):
    """A URL could not be fetched as an image."""


class ModelError(DeepsiftError):
    """A model or classifier head could not be loaded or used."""


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
