"""The names and defaults that the Python API and the command line share, in one import-light place.

Each constant is defined here once and re-exported by the module that uses it
(``deepsift.images.PREPROCESS_MODES``, ``deepsift.model.detector.PRECISIONS``, ...). This module
imports nothing heavy (no numpy, torch or httpx), so ``deepsift --help`` can offer these choices
without loading the libraries behind them.
"""
from __future__ import annotations

DEFAULT_MODEL = "aimagelab/CoDE"
"""Hub id of the published CoDE weights (MIT licence)."""

PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
"""Numeric precisions of the embedding network."""

BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx")
"""Engines that run the embedding network (auto: the fastest exact one on this machine, measured and cached)."""

BACKEND_SETTING = "DEEPSIFT_BACKEND"
"""The environment variable holding the command line's default ``--backend`` (one of :data:`BACKENDS`; unset: auto)."""

PREPROCESS_MODES: tuple[str, ...] = ("official", "resize")
"""official: centre crop 224 without resize (zero padding for short sides); resize: 248 then crop 224."""

HEAD_KINDS: tuple[str, ...] = ("linear", "knn", "svm")
"""Classifier heads on CoDE embeddings."""

TRAIN_KEEP: tuple[str, ...] = ("best", "last")
"""Which weights ``deepsift train`` writes as the model: the best epoch's (held-out head accuracy) or the last step's."""

DEFAULT_BATCH_SIZE = 32
"""Images per forward pass."""

URL_TIMEOUT_S = 20.0
"""Default total deadline for one image URL, in seconds (resolve, connect, headers and the whole body)."""

OUTPUT_FORMATS: tuple[str, ...] = ("table", "json", "jsonl", "csv")
"""Formats of per-image result rows (``detect``, ``baseline predict``)."""

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".jfif", ".pgm", ".ppm", ".avif", ".heic"}
)
"""File extensions taken for images when a folder is walked (one list for the whole package)."""

METRIC_NAMES: tuple[str, ...] = (
    "acc_real", "acc_fake", "accuracy", "balanced_accuracy", "f1",
    "ap", "auroc", "eer", "tpr@1%fpr", "tpr@5%fpr", "ece",
)  # fmt: skip
"""Metrics of the evaluation toolkit, in report order."""

CALIBRATION_METHODS: tuple[str, ...] = ("platt", "isotonic")
"""Ways to map raw scores to P(fake) on a validation set."""

DATASET_LAYOUTS: dict[str, str] = {
    "classes": "real/<source>/... and fake/<generator>/... (the layout 'heads fit' takes)",
    "folders": "real/ plus one folder per generator (e.g. real/, sd21/, dalle3/)",
    "d3-test": "{augm,no_augm}/{real,gen_0,gen_1,...}/ (the official D3 test layout)",
    "parquet": "D3 parquet shards (*.parquet); real images from a separate folder",
    "real-only": "one folder of real photos (false-positive rate only)",
}
"""Labelled dataset layouts on disk that every command reads (:mod:`deepsift.data.layout`)."""
