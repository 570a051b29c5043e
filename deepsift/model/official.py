"""Convert the published scikit-learn classifiers of ``aimagelab/CoDE`` into deepsift's safe format.

The authors ship three pickled estimators in ``sklearn/``. Unpickling runs arbitrary code,
so this module does it only when the caller passes ``trust_pickles=True`` (the CLI flag
``--trust-pickles``), once, and writes JSON + safetensors heads that load without pickle.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..exceptions import ModelError, ModelNotFoundError, UnsafeFileError
from .heads import Head, KNNHead, LinearHead, OCSVMHead, fit_platt

OFFICIAL_FILES = {
    "linear": "linear_tot_classifier_epoch-32.sav",
    "knn": "knn_tot_classifier_epoch-32.sav",
    "svm": "ocsvm_kernel_poly_gamma_auto_nu_0_1_crop.joblib",
}


def locate_official_files(source: str | os.PathLike) -> dict[str, Path]:
    """Find the three published files in a folder (or its ``sklearn/``) or download them from the hub."""
    folder = Path(source).expanduser()
    if not folder.is_dir():
        from huggingface_hub import hf_hub_download

        from ..hub import hub_access

        # at once, one line, when neither cached nor reachable (not the hub client's retries)
        local_only = hub_access(str(source), marker=f"sklearn/{OFFICIAL_FILES['linear']}",
                                what="model")
        try:
            files = {k: Path(hf_hub_download(str(source), f"sklearn/{name}", local_files_only=local_only))
                     for k, name in OFFICIAL_FILES.items()}
        except Exception as exc:
            raise ModelNotFoundError(
                f"cannot fetch the published classifiers of {str(source)!r} ({type(exc).__name__}); "
                f"download the model's sklearn/ folder once and pass its directory instead"
            ) from None
        return files
    found = {}
    for kind, name in OFFICIAL_FILES.items():
        for cand in (folder / name, folder / "sklearn" / name):
            if cand.is_file():
                found[kind] = cand
                break
    if not found:
        raise ModelNotFoundError(f"{folder}: none of {', '.join(OFFICIAL_FILES.values())} found (also under sklearn/)")
    return found


def _unpickle(path: Path, trust_pickles: bool) -> object:
    """Load one pickled estimator, only with explicit trust."""
    if not trust_pickles:
        raise UnsafeFileError(
            f"{path}: is a pickle; loading it can run arbitrary code. Use the trust-pickles option "
            f"only for files from a publisher you trust"
        )
    import joblib  # ships with scikit-learn; reads both plain pickles and joblib files

    try:
        return joblib.load(path)  # trusted explicitly above
    except Exception as exc:
        raise ModelError(f"{path}: cannot unpickle ({type(exc).__name__}: {exc})") from None


def _expect(obj: object, cls_name: str, path: Path) -> None:
    if type(obj).__name__ != cls_name:
        raise ModelError(f"{path}: expected a scikit-learn {cls_name}, found {type(obj).__name__}")


def convert_estimator(kind: str, est: object, path: Path) -> Head:
    """Turn one fitted scikit-learn estimator into the equivalent deepsift head."""
    if kind == "linear":
        _expect(est, "LogisticRegression", path)
        classes = list(getattr(est, "classes_", [0, 1]))
        if len(classes) != 2:
            raise ModelError(f"{path}: expected a binary classifier, got classes {classes}")
        head = LinearHead(C=float(est.C), max_iter=int(est.max_iter), class_weight=est.class_weight)
        sign = 1.0 if int(classes[1]) == 1 else -1.0
        head.coef_ = sign * np.asarray(est.coef_[0], dtype=np.float64)
        head.intercept_ = sign * np.asarray(est.intercept_, dtype=np.float64).reshape(1)
        head.calibration_ = (1.0, 0.0)
        return head
    if kind == "knn":
        _expect(est, "KNeighborsClassifier", path)
        if est.n_neighbors != 1 or est.effective_metric_ != "cosine":
            raise ModelError(f"{path}: expected a 1-NN cosine classifier, got k={est.n_neighbors}, "
                             f"metric={est.effective_metric_!r}")
        if not set(np.asarray(est.classes_).tolist()) <= {0, 1}:
            raise ModelError(f"{path}: expected classes 0 (real) and 1 (fake), got {list(est.classes_)}")
        head = KNNHead()
        head.references_ = np.asarray(est._fit_X, dtype=np.float32)
        head.labels_ = np.asarray(est.classes_)[np.asarray(est._y)].astype(np.int64)
        head._post_load()
        idx = np.sort(np.random.default_rng(0).permutation(len(head.labels_))[:5000])
        head.calibration_ = fit_platt(head._score(head.references_[idx].astype(np.float64), exclude=idx),
                                      head.labels_[idx])
        return head
    if kind == "svm":
        _expect(est, "OneClassSVM", path)
        if est.kernel != "poly":
            raise ModelError(f"{path}: expected a poly-kernel OneClassSVM, got kernel={est.kernel!r}")
        gamma = getattr(est, "_gamma", None)  # resolved 'auto' (1 / n_features) on every sklearn we know
        if gamma is None:
            gamma = est.gamma if isinstance(est.gamma, float) else 1.0 / est.support_vectors_.shape[1]
        head = OCSVMHead(nu=float(est.nu), degree=int(est.degree), coef0=float(est.coef0), gamma=float(gamma))
        head.support_vectors_ = np.asarray(est.support_vectors_, dtype=np.float64)
        head.dual_coef_ = np.asarray(est.dual_coef_[0], dtype=np.float64)
        head.intercept_ = np.asarray(est.intercept_, dtype=np.float64).reshape(1)
        real_scores = head._score(head.support_vectors_)
        head.calibration_ = (1.0 / (float(np.std(real_scores)) or 1.0), 0.0)
        return head
    raise ValueError(f"unknown head kind {kind!r}")


def import_official(source: str | os.PathLike, *, trust_pickles: bool = False) -> dict[str, Head]:
    """Read the published pickled classifiers (with explicit trust) and return safe heads."""
    files = locate_official_files(source)
    return {kind: convert_estimator(kind, _unpickle(path, trust_pickles), path) for kind, path in files.items()}
