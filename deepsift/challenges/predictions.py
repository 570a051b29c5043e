"""Check an uploaded predictions file against a test set before anything else happens to it.

Accepted: the ELSA JSON object ``{"<id>": 0|1}``, CSV with a header ``id,score[,label]``, JSON
lists or JSONL of ``{"id": ..., "score": ...[, "label": ...]}`` (the evaluation toolkit's score
files: :mod:`deepsift.evaluate.scorefiles`, one implementation). Unknown, duplicate and missing
ids, non-numeric/NaN/infinite scores, bad labels, wrong encoding and wrong shape are each an
:class:`~deepsift.exceptions.InvalidInputError` naming the first offending rows. Untrusted bytes
meet no parser before a bounded pre-scan (NUL bytes, lines over 64 KiB, JSON deeper than 8 levels,
more bytes than a valid file for the test set needs), and reading stops at the first row past the
test set's size, so validation takes memory in proportion to the test set, not to the file. A
rejected file is never stored as a submission, never scored and never counted. A valid file is kept
with its scores aligned to the key (``aligned.npz``), so scoring never parses it again.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..exceptions import DataError, DeepsiftError, InvalidInputError
from ..evaluate.scorefiles import AlignedScores, read_aligned_scores
from .testsets import Key

SUFFIXES = (".csv", ".json", ".jsonl")
ALIGNED_FILE = "aligned.npz"


def check_suffix(filename: str) -> str:
    """The lower-case suffix of an uploaded predictions file, or InvalidInputError."""
    suffix = Path(filename or "").suffix.lower()
    if suffix not in SUFFIXES:
        raise InvalidInputError(f"{filename or 'the file'}: predictions are .csv (id,score[,label]), .json "
                                f"({{\"id\": 0|1}} or a list of rows) or .jsonl; got {suffix or 'no extension'}")
    return suffix


def validate(path: Path, key: Key, filename: str) -> AlignedScores:
    """Read ``path`` (uploaded as ``filename``) and align it to the key; InvalidInputError if anything is off."""
    check_suffix(filename)
    if path.suffix.lower() != Path(filename).suffix.lower():
        raise InvalidInputError("internal: stored file lost its extension")
    try:
        aligned = read_aligned_scores(path, key.names, ids_name="the test set")
    except DeepsiftError as exc:
        raise InvalidInputError(str(exc).replace(str(path), filename)) from None
    except (ValueError, OSError) as exc:
        raise InvalidInputError(f"{filename}: cannot read ({exc})") from None
    return aligned


def save_aligned(aligned: AlignedScores, out: Path) -> None:
    """Keep the aligned scores (and labels) as a plain numeric ``.npz`` (no pickle)."""
    arrays = {"scores": aligned.scores.astype(np.float64)}
    if aligned.labels is not None:
        arrays["labels"] = aligned.labels.astype(np.int8)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, out)


def load_aligned(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The aligned scores and optional labels saved by :func:`save_aligned`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["scores"], (z["labels"] if "labels" in z.files else None)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"the stored predictions cannot be read ({exc.__class__.__name__}); ask the host to rescore") from None
