"""Classifier heads on frozen CoDE embeddings: linear, 1-NN cosine and one-class SVM.

Each head follows the scikit-learn contract (``fit`` returns ``self``; learned state ends in
``_``) and gives three things per embedding: a hard label (1 = fake, 0 = real), a continuous
fake-score (higher = more fake, for AUROC/AP) and a calibrated probability of fake.
Heads are stored as ``head.json`` (kind, hyper-parameters, calibration) plus
``head.safetensors`` (arrays); nothing is ever pickled. Inference is plain numpy, so a
reloaded head gives identical decisions and scores.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np
from safetensors.numpy import load_file, save_file

from ..choices import HEAD_KINDS
from ..exceptions import DeepsiftWarning, ModelError, NotFittedError
from .platt import apply_platt, fit_platt

HEAD_FORMAT_VERSION = 1
_CALIBRATION_SAMPLES = 5000


def _as_2d(X: np.ndarray) -> np.ndarray:
    """Validate an (N, D) float array of embeddings."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (N, D), got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("embeddings contain NaN or infinite values")
    return X


def _check_labels(y: np.ndarray, n: int) -> np.ndarray:
    """Validate binary labels (0 = real, 1 = fake)."""
    y = np.asarray(y).astype(np.int64).ravel()
    if len(y) != n:
        raise ValueError(f"got {n} embeddings but {len(y)} labels")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    return y


class Head:
    """Base class: hard label, fake-score and calibrated probability from embeddings."""

    kind: ClassVar[str] = ""
    _arrays: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.calibration_: tuple[float, float] | None = None

    # -- the contract ---------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: np.ndarray) -> "Head":
        """Fit on embeddings ``X`` and labels ``y`` (0 real, 1 fake); returns ``self``."""
        X = _as_2d(X)
        y = _check_labels(y, len(X))
        self._fit(X, y)
        self.calibration_ = self._calibrate(X, y)
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Continuous fake-score: higher means more likely fake."""
        self._check_fitted()
        return self._score(_as_2d(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The head's NATIVE hard labels (1 fake, 0 real), kept for parity with scikit-learn.

        deepsift never labels with it: the :class:`~deepsift.model.detector.Detector`, eval and
        every report use :func:`deepsift.decision.decide` on :meth:`predict_proba`.
        """
        self._check_fitted()
        return self._predict(_as_2d(X))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, shape (N, 2): [P(real), P(fake)]."""
        p = self.probability(self.decision_function(X))
        return np.stack([1.0 - p, p], axis=1)

    @property
    def n_features(self) -> int:
        """Embedding width the head was fitted on."""
        self._check_fitted()
        first = np.asarray(getattr(self, self._arrays[0] + "_"))
        return int(first.shape[-1])

    def probability(self, scores: np.ndarray) -> np.ndarray:
        """Map fake-scores to calibrated P(fake)."""
        self._check_fitted()
        a, b = self.calibration_  # type: ignore[misc]
        return apply_platt(scores, a, b)

    # -- persistence ----------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``head.json`` and ``head.safetensors`` into ``folder``."""
        self._check_fitted()
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        arrays = {k: np.ascontiguousarray(getattr(self, k + "_")) for k in self._arrays}
        save_file(arrays, str(out / "head.safetensors"))
        from ..outplaces import umask_mode

        os.chmod(out / "head.safetensors", umask_mode())  # safetensors writes 0600: the user's umask instead
        meta = {"format_version": HEAD_FORMAT_VERSION, "kind": self.kind, "params": self._params(),
                "calibration": list(self.calibration_), "classes": [0, 1], "labels": ["real", "fake"]}
        (out / "head.json").write_text(json.dumps(meta, indent=2))
        return out

    @classmethod
    def _from_saved(cls, meta: dict, arrays: dict[str, np.ndarray]) -> "Head":
        head = cls(**meta.get("params", {}))
        for k in cls._arrays:
            if k not in arrays:
                raise ModelError(f"{cls.kind} head file lacks the array {k!r}")
            setattr(head, k + "_", arrays[k])
        head._post_load()
        head.calibration_ = tuple(float(v) for v in meta["calibration"])  # type: ignore[assignment]
        return head

    # -- hooks ----------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if self.calibration_ is None:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(X, y) first")

    def _params(self) -> dict:
        return {}

    def _post_load(self) -> None:
        pass

    def _calibrate(self, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        return fit_platt(self._score(X), y)

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        raise NotImplementedError

    def _score(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return (self._score(X) > 0).astype(np.int64)


class LinearHead(Head):
    """Logistic regression (C=0.316, balanced classes, max_iter 1500); score = logit."""

    kind = "linear"
    _arrays = ("coef", "intercept")

    def __init__(self, C: float = 0.316, max_iter: int = 1500, class_weight: str | None = "balanced") -> None:
        super().__init__()
        self.C, self.max_iter, self.class_weight = C, max_iter, class_weight

    def _params(self) -> dict:
        return {"C": self.C, "max_iter": self.max_iter, "class_weight": self.class_weight}

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        from sklearn.linear_model import LogisticRegression

        if len(np.unique(y)) < 2:
            raise ValueError("the linear head needs both real (0) and fake (1) embeddings")
        lr = LogisticRegression(C=self.C, max_iter=self.max_iter, class_weight=self.class_weight)
        lr.fit(X, y)
        self.coef_ = lr.coef_[0].astype(np.float64)
        self.intercept_ = lr.intercept_.astype(np.float64)

    def _calibrate(self, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        return 1.0, 0.0  # the logistic model is its own calibration

    def _score(self, X: np.ndarray) -> np.ndarray:
        return X @ self.coef_ + self.intercept_[0]


class KNNHead(Head):
    """1-nearest-neighbour on cosine similarity; score = best fake sim - best real sim."""

    kind = "knn"
    _arrays = ("references", "labels")

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        if len(np.unique(y)) < 2:
            raise ValueError("the kNN head needs both real (0) and fake (1) embeddings")
        self.references_ = X.astype(np.float32)
        self.labels_ = y.astype(np.int64)
        self._post_load()

    def _post_load(self) -> None:
        ref = np.asarray(self.references_, dtype=np.float32)
        self._unit = ref / np.maximum(np.linalg.norm(ref, axis=1, keepdims=True), 1e-12)
        self._is_fake = np.asarray(self.labels_) == 1

    def _similarities(self, X: np.ndarray) -> np.ndarray:
        q = X.astype(np.float32)
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        return q @ self._unit.T

    def _score(self, X: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
        """Best fake similarity minus best real similarity; ``exclude[i]`` masks one reference."""
        out = np.empty(len(X), dtype=np.float64)
        for i in range(0, len(X), 1024):
            sim = self._similarities(X[i : i + 1024])
            if exclude is not None:
                sim[np.arange(len(sim)), exclude[i : i + 1024]] = -np.inf
            fake = np.where(self._is_fake, sim, -np.inf).max(axis=1)
            real = np.where(~self._is_fake, sim, -np.inf).max(axis=1)
            out[i : i + 1024] = fake - real
        return out

    def _predict(self, X: np.ndarray) -> np.ndarray:
        out = np.empty(len(X), dtype=np.int64)
        for i in range(0, len(X), 1024):
            out[i : i + 1024] = self.labels_[np.argmax(self._similarities(X[i : i + 1024]), axis=1)]
        return out

    def _calibrate(self, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        # leave-one-out scores on (a sample of) the training set: a point must not match itself
        idx = np.sort(np.random.default_rng(0).permutation(len(X))[:_CALIBRATION_SAMPLES])
        return fit_platt(self._score(X[idx], exclude=idx), y[idx])


OUTLIER_WARNING_FACTOR = 2.0
"""Warn when a one-class SVM rejects more than this many times ``nu`` of its own training reals."""


def rejects_too_many(rate: float, nu: float) -> bool:
    """Whether a one-class SVM that rejects ``rate`` of its training reals as outliers is worth a warning:
    a rate above both ``OUTLIER_WARNING_FACTOR`` x nu and nu + 0.05 (nu is the share it should reject)."""
    return rate > max(OUTLIER_WARNING_FACTOR * nu, nu + 0.05)


class OCSVMHead(Head):
    """One-class SVM (poly kernel, gamma 'auto', nu 0.1) fit on REAL embeddings only.

    Inliers are real; the fake-score is the negated SVM decision function. Fake embeddings,
    when given to ``fit``, are used only to calibrate the probability.

    ``nu`` bounds the share of training reals the SVM should reject (about 10 %). With the
    published hyper-parameters (a cubic kernel without offset) embeddings centred near the origin
    can be rejected by half: ``training_outlier_rate_`` records the share, and ``fit`` warns
    (:class:`~deepsift.exceptions.DeepsiftWarning`) when it is far above ``nu``.
    """

    kind = "svm"
    _arrays = ("support_vectors", "dual_coef", "intercept")

    def __init__(self, kernel: str = "poly", nu: float = 0.1, degree: int = 3, coef0: float = 0.0,
                 gamma: float | str = "auto") -> None:
        super().__init__()
        self.kernel, self.nu, self.degree, self.coef0, self.gamma = kernel, nu, degree, coef0, gamma

    def _params(self) -> dict:
        return {"kernel": self.kernel, "nu": self.nu, "degree": self.degree, "coef0": self.coef0,
                "gamma": self.gamma}

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        from sklearn.svm import OneClassSVM

        real = X[y == 0]
        if len(real) == 0:
            raise ValueError("the one-class SVM head is fit on real (0) embeddings; none were given")
        if self.kernel != "poly":
            raise ValueError(f"only the 'poly' kernel is supported, got {self.kernel!r}")
        svm = OneClassSVM(kernel="poly", gamma=self.gamma, nu=self.nu, degree=self.degree, coef0=self.coef0)
        svm.fit(real)
        self.gamma = float(svm._gamma)
        self.support_vectors_ = svm.support_vectors_.astype(np.float64)
        self.dual_coef_ = svm.dual_coef_[0].astype(np.float64)
        self.intercept_ = np.asarray(svm.intercept_, dtype=np.float64).reshape(1)
        self.training_outlier_rate_ = float(np.mean(self.svm_decision(real) < 0))
        if rejects_too_many(self.training_outlier_rate_, self.nu):
            warnings.warn(
                f"the one-class SVM rejects {self.training_outlier_rate_:.0%} of its {len(real)} training real "
                f"images as outliers, far above nu={self.nu:g} (about {self.nu:.0%} expected): its score barely "
                f"separates real from anything else here (kernel {self.kernel}, degree {self.degree}, coef0 "
                f"{self.coef0:g}); its probabilities are calibrated, but compare it with the linear head",
                DeepsiftWarning, stacklevel=3)

    def svm_decision(self, X: np.ndarray) -> np.ndarray:
        """The raw one-class SVM decision function (positive = inlier = real)."""
        K = (float(self.gamma) * (X @ self.support_vectors_.T) + self.coef0) ** self.degree
        return K @ self.dual_coef_ + self.intercept_[0]

    def _score(self, X: np.ndarray) -> np.ndarray:
        return -self.svm_decision(X)

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return (self.svm_decision(X) < 0).astype(np.int64)

    def _calibrate(self, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        return fit_platt(self._score(X), y)  # one class only: scaled by the spread, 0 stays the boundary


HEAD_CLASSES: dict[str, type[Head]] = {"linear": LinearHead, "knn": KNNHead, "svm": OCSVMHead}


def make_head(kind: str) -> Head:
    """Create an unfitted head of ``kind`` ('linear', 'knn' or 'svm')."""
    try:
        return HEAD_CLASSES[kind]()
    except KeyError:
        raise ValueError(f"classifier must be one of {HEAD_KINDS}, got {kind!r}") from None


def load_head(folder: str | Path) -> Head:
    """Load a head saved by :meth:`Head.save` (JSON + safetensors, never pickle)."""
    folder = Path(folder)
    meta_path, arr_path = folder / "head.json", folder / "head.safetensors"
    if not meta_path.is_file() or not arr_path.is_file():
        raise ModelError(f"{folder}: not a saved head (expected head.json and head.safetensors)")
    try:
        meta = json.loads(meta_path.read_text())
        arrays = load_file(str(arr_path))
    except (json.JSONDecodeError, OSError, Exception) as exc:  # safetensors raises its own types
        raise ModelError(f"{folder}: cannot read the head ({exc})") from None
    kind = meta.get("kind")
    if kind not in HEAD_CLASSES:
        raise ModelError(f"{folder}: unknown head kind {kind!r} (known: {', '.join(HEAD_KINDS)})")
    return HEAD_CLASSES[kind]._from_saved(meta, arrays)
