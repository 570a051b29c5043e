"""Standardise-then-logistic-regression on feature vectors, stored as plain arrays (no pickle).

Used by the frequency and UnivFD baselines. Fitting uses scikit-learn; scoring is numpy only,
so a reloaded probe gives bit-identical logits.
"""
from __future__ import annotations

import numpy as np

from ...exceptions import ModelError

_KEYS = ("mean", "scale", "coef", "intercept")


class LogisticProbe:
    """z-score each feature, then balanced L2 logistic regression; ``decision_function`` = logit."""

    def __init__(self, C: float = 1.0, max_iter: int = 2000) -> None:
        self.C = C
        self.max_iter = max_iter

    def fit(self, X: np.ndarray, y: np.ndarray) -> "LogisticProbe":
        """Fit on features ``X`` (N, D) and labels ``y`` (0 real, 1 fake); returns ``self``."""
        from sklearn.linear_model import LogisticRegression

        X = np.asarray(X, dtype=np.float64)
        if not np.isfinite(X).all():
            raise ModelError("features contain NaN or infinite values")
        self.mean_ = X.mean(axis=0)
        scale = X.std(axis=0)
        self.scale_ = np.where(scale > 1e-12, scale, 1.0)
        lr = LogisticRegression(C=self.C, max_iter=self.max_iter, class_weight="balanced")
        lr.fit((X - self.mean_) / self.scale_, np.asarray(y, dtype=np.int64))
        self.coef_ = lr.coef_[0].astype(np.float64)
        self.intercept_ = lr.intercept_.astype(np.float64)
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Fake logits, shape (N,)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.coef_.shape[0]:
            raise ModelError(f"expected features of shape (N, {self.coef_.shape[0]}), got {X.shape}")
        return ((X - self.mean_) / self.scale_) @ self.coef_ + self.intercept_[0]

    def state(self, prefix: str = "probe.") -> dict[str, np.ndarray]:
        """The learned arrays, keyed ``prefix + name``."""
        return {prefix + k: getattr(self, k + "_") for k in _KEYS}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], C: float = 1.0, prefix: str = "probe.") -> "LogisticProbe":
        """Rebuild a fitted probe from :meth:`state` arrays."""
        missing = [prefix + k for k in _KEYS if prefix + k not in arrays]
        if missing:
            raise ModelError(f"baseline weights lack the arrays {missing}")
        probe = cls(C=C)
        for k in _KEYS:
            setattr(probe, k + "_", np.asarray(arrays[prefix + k], dtype=np.float64))
        return probe
