"""Why a submitted model's run failed: one fixed vocabulary, shown to its team as the submission's reason.

A reason is built only from a :class:`RunFailure` and numbers the platform itself knows (its limits,
the batch size it sent, the preprocessed image's size). It never carries the runtime's error text
or anything the model computed (its output's values or shape): a model that can read something it
should not (a server file, a hidden label) must have no channel to show it to its author.

Every reason starts with its kind's fixed label (``"time limit: ..."``), so :func:`failure_of` reads
the kind back from a stored reason. :data:`LIMIT_FAILURES` are the runs that used a whole limit
(the platform's time or memory) rather than failing fast.
"""
from __future__ import annotations

from enum import Enum

from ..exceptions import DeepsiftError


class RunFailure(str, Enum):
    """The kinds of a failed model run (the value is the reason's fixed leading label)."""

    INVALID_MODEL = "invalid model"
    EXTERNAL_DATA = "external data refused"
    WRONG_INPUTS = "wrong model inputs"
    CRASH = "crash"
    TIME_LIMIT = "time limit"
    MEMORY_LIMIT = "memory limit"
    WRONG_OUTPUT_SHAPE = "wrong output shape"
    WRONG_OUTPUT_TYPE = "wrong output type"
    NON_FINITE = "non-finite value"
    SPEC_TOO_LARGE = "preprocessing too large"
    SANDBOX_UNAVAILABLE = "sandbox unavailable"
    JOB_LOST = "job lost"


LIMIT_FAILURES = frozenset({RunFailure.TIME_LIMIT, RunFailure.MEMORY_LIMIT})

_TEXT = {
    RunFailure.INVALID_MODEL: "onnxruntime cannot load this file as an ONNX model",
    RunFailure.EXTERNAL_DATA: "the model refers to external tensor data files; submit one self-contained "
                              ".onnx file (save it without external data)",
    RunFailure.WRONG_INPUTS: "the model must take exactly one input (the image batch)",
    RunFailure.CRASH: "the model failed while running on a batch of {batch} images",
    RunFailure.TIME_LIMIT: "the model did not finish within {seconds:g} s",
    RunFailure.MEMORY_LIMIT: "the model ran out of memory (limit {limit_mb} MiB, of which the platform's "
                             "image batches take {buffers_mb} MiB)",
    RunFailure.WRONG_OUTPUT_SHAPE: "for a batch of {batch} images the output must have shape [{batch}], "
                                   "[{batch}, 1] or [{batch}, 2]",
    RunFailure.WRONG_OUTPUT_TYPE: "the model's output must be numbers (float or int)",
    RunFailure.NON_FINITE: "the model returned a NaN or infinite score in a batch of {batch} images",
    RunFailure.SPEC_TOO_LARGE: "a batch of one preprocessed {height}x{width} image needs {need_mb} MiB, more "
                               "than the {limit_mb} MiB allowed; use a smaller input_size",
    RunFailure.SANDBOX_UNAVAILABLE: "the sandbox could not be set up on this worker",
    RunFailure.JOB_LOST: "the job was taken over by another worker",
}


class ModelRunError(DeepsiftError):
    """A submitted model could not be run to the end; ``kind`` says why, the message is the fixed reason."""

    def __init__(self, kind: RunFailure, message: str | None = None, **numbers: int | float) -> None:
        self.kind = kind
        super().__init__(f"{kind.value}: {message if message is not None else _TEXT[kind].format(**numbers)}")


def failure_of(reason: str | None) -> RunFailure | None:
    """The kind of a stored failure reason (``None`` when it is not a model run's failure)."""
    head = (reason or "").split(":", 1)[0]
    try:
        return RunFailure(head)
    except ValueError:
        return None
