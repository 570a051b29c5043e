"""Heads: what `scripts/mutation.sh heads` found the other head tests let through (benchmarks/README.md)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from deepsift.model.heads import HEAD_KINDS, load_head, make_head


def _data(shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.r_[rng.normal(1.0, 0.5, (60, 8)), rng.normal(1.0 - shift, 0.5, (60, 8))]
    return X, np.r_[np.zeros(60, int), np.ones(60, int)]


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_saving_a_refitted_head_into_its_folder_replaces_the_old_one(kind, tmp_path):
    old = make_head(kind).fit(*_data(1.5, 0))
    new = make_head(kind).fit(*_data(-1.5, 1))  # fakes on the other side: the opposite scores
    old.save(tmp_path / "head")
    new.save(tmp_path / "head")  # the folder exists now: re-fitting heads into a model folder is the usual case
    X, _ = _data(1.5, 2)
    back = load_head(tmp_path / "head")
    np.testing.assert_array_equal(back.predict_proba(X), new.predict_proba(X))
    assert not np.allclose(back.predict_proba(X), old.predict_proba(X))


def _knn_brute(refs: np.ndarray, labels: np.ndarray, X: np.ndarray, exclude: np.ndarray | None = None):
    """Cosine 1-NN written out: (best fake similarity - best real similarity, label of the nearest reference)."""
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    sim = unit(X) @ unit(refs).T
    if exclude is not None:
        sim[np.arange(len(X)), exclude] = -np.inf
    score = np.where(labels == 1, sim, -np.inf).max(1) - np.where(labels == 0, sim, -np.inf).max(1)
    return score, labels[np.argmax(sim, axis=1)]


def test_knn_scores_every_image_of_a_large_set_like_one_by_one():
    rng = np.random.default_rng(3)
    refs, labels = rng.normal(size=(200, 8)), np.r_[np.zeros(100, int), np.ones(100, int)]
    X = rng.normal(size=(2600, 8))  # more than one block of 1024 queries, the last one partial
    head = make_head("knn").fit(refs, labels)
    score, label = _knn_brute(refs, labels, X)
    np.testing.assert_allclose(head.decision_function(X), score, atol=1e-5)
    np.testing.assert_array_equal(head.predict(X), label)


def test_knn_calibration_uses_leave_one_out_scores_on_a_large_training_set():
    from deepsift.model.platt import fit_platt

    rng = np.random.default_rng(4)
    X = np.r_[rng.normal(0, 1, (700, 8)), rng.normal(0.4, 1, (700, 8))]  # 1400 > one block of 1024
    y = np.r_[np.zeros(700, int), np.ones(700, int)]
    head = make_head("knn").fit(X, y)
    loo, _ = _knn_brute(X, y, X, exclude=np.arange(len(X)))  # a point never matches itself
    a, b = fit_platt(loo, y)
    assert head.calibration_ == pytest.approx((a, b), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_a_head_knows_the_embedding_width_it_was_fitted_on_also_after_reloading(kind, tmp_path):
    head = make_head(kind).fit(*_data(1.5, 0))  # 8 features
    assert head.n_features == 8
    head.save(tmp_path / kind)
    assert load_head(tmp_path / kind).n_features == 8  # what the detector checks against the backbone's width


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_the_saved_head_file_says_which_class_is_fake(kind, tmp_path):
    make_head(kind).fit(*_data(1.5, 0)).save(tmp_path)
    meta = json.loads((tmp_path / "head.json").read_text())  # read by people and other tools, not only load_head
    assert meta["kind"] == kind and meta["classes"] == [0, 1] and meta["labels"] == ["real", "fake"]


def test_the_one_class_svm_warning_points_at_the_line_that_fitted_the_head():
    from deepsift.exceptions import DeepsiftWarning

    centred = np.random.default_rng(0).normal(size=(200, 16))  # rejected by about half: the head warns
    with pytest.warns(DeepsiftWarning, match="rejects") as seen:
        make_head("svm").fit(centred, np.zeros(200))
    assert [w.filename for w in seen] == [__file__]  # the user's call, not a line inside deepsift


@pytest.mark.parametrize("rate, nu, warns", [
    (0.20, 0.10, False), (0.21, 0.10, True),  # the default nu: twice nu is the limit, and reaching it is not above it
    (0.06, 0.01, False), (0.07, 0.01, True),  # a small nu: nu + 5 points is the limit, not twice nu (0.02)
    (0.04, 0.01, False), (0.90, 0.50, False), (1.00, 0.50, False),
])
def test_the_one_class_svm_warns_only_above_twice_nu_and_nu_plus_five_points(rate, nu, warns):
    """Whether `heads fit` prints the one-class SVM's warning: the rule's limit and its edge, for the default
    and a small nu (a fit can't be steered to an outlier rate on the edge, so the rule is checked directly)."""
    from deepsift.model.heads import rejects_too_many

    assert rejects_too_many(rate, nu) is warns
