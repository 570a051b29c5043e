"""Classifier heads: learn, agree with scikit-learn, reload to identical decisions and scores."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import OneClassSVM

from deepsift.exceptions import ModelError, NotFittedError
from deepsift.model.headset import load_headset, save_headset
from deepsift.model.heads import HEAD_KINDS, KNNHead, LinearHead, OCSVMHead, load_head, make_head


def blobs(n=150, d=24, shift=0.9, seed=0):
    rng = np.random.default_rng(seed)
    X = np.r_[rng.normal(0, 1, (n, d)), rng.normal(shift, 1, (n, d))]
    return X, np.r_[np.zeros(n, int), np.ones(n, int)]


def svm_blobs(n=150, d=24, seed=0):
    rng = np.random.default_rng(seed)
    X = np.r_[rng.normal(1.0, 0.5, (n, d)), rng.normal(-0.5, 0.5, (n, d))]
    return X, np.r_[np.zeros(n, int), np.ones(n, int)]


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_heads_learn_and_reload_identically(kind, tmp_path):
    # the cubic one-class SVM (coef0 = 0) separates by direction, so give it real data off the origin
    X, y = blobs() if kind != "svm" else svm_blobs()
    Xt, yt = blobs(seed=1) if kind != "svm" else svm_blobs(seed=1)
    head = make_head(kind).fit(X, y)
    acc = (head.predict(Xt) == yt).mean()
    assert acc > {"linear": 0.9, "knn": 0.8, "svm": 0.6}[kind]
    proba = head.predict_proba(Xt)
    assert proba.shape == (len(Xt), 2) and np.allclose(proba.sum(1), 1)
    assert np.corrcoef(head.decision_function(Xt), proba[:, 1])[0, 1] > 0.5  # score and probability agree
    head.save(tmp_path / kind)
    back = load_head(tmp_path / kind)
    assert type(back) is type(head)
    np.testing.assert_array_equal(back.predict(Xt), head.predict(Xt))
    np.testing.assert_array_equal(back.decision_function(Xt), head.decision_function(Xt))
    np.testing.assert_array_equal(back.predict_proba(Xt), head.predict_proba(Xt))
    assert not list(tmp_path.rglob("*.pkl")) and (tmp_path / kind / "head.json").is_file()


def test_linear_matches_sklearn():
    X, y = blobs()
    ref = LogisticRegression(C=0.316, max_iter=1500, class_weight="balanced").fit(X, y)
    head = LinearHead().fit(X, y)
    np.testing.assert_array_equal(head.predict(X), ref.predict(X))
    np.testing.assert_allclose(head.decision_function(X), ref.decision_function(X), atol=1e-10)
    np.testing.assert_allclose(head.predict_proba(X), ref.predict_proba(X), atol=1e-10)


def test_knn_matches_sklearn_and_scores_rank():
    X, y = blobs()
    Xt, _ = blobs(seed=2)
    ref = KNeighborsClassifier(n_neighbors=1, metric="cosine").fit(X, y)
    head = KNNHead().fit(X, y)
    np.testing.assert_array_equal(head.predict(Xt), ref.predict(Xt))
    assert ((head.decision_function(Xt) > 0) == (head.predict(Xt) == 1)).mean() > 0.99


def test_ocsvm_is_fit_on_real_only_and_matches_sklearn():
    X, y = blobs()
    ref = OneClassSVM(kernel="poly", gamma="auto", nu=0.1).fit(X[y == 0])
    head = OCSVMHead().fit(X, y)
    np.testing.assert_allclose(head.svm_decision(X), ref.decision_function(X), rtol=1e-8, atol=1e-8)
    np.testing.assert_array_equal(head.predict(X), (ref.predict(X) == -1).astype(int))  # outlier = fake
    # fakes given to fit only calibrate: the support vectors are all real points
    real = X[y == 0]
    assert all(np.isclose(real, sv).all(1).any() for sv in head.support_vectors_)


def test_unfitted_and_bad_input():
    with pytest.raises(NotFittedError, match="not fitted"):
        LinearHead().predict(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="both real"):
        LinearHead().fit(np.zeros((4, 3)), np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        LinearHead().fit(np.full((4, 3), np.nan), np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="classifier must be one of"):
        make_head("forest")


def test_headset_round_trip_and_tampering(tmp_path):
    X, y = blobs()
    heads = {"linear": LinearHead().fit(X, y), "linear:sd 2.1": LinearHead().fit(X, y)}
    save_headset(heads, tmp_path / "hs", model="m")
    loaded, meta = load_headset(tmp_path / "hs")
    assert set(loaded) == set(heads) and meta["model"] == "m"
    idx = json.loads((tmp_path / "hs" / "heads.json").read_text())
    idx["heads"]["linear"] = "../../etc"
    (tmp_path / "hs" / "heads.json").write_text(json.dumps(idx))
    with pytest.raises(ModelError, match="outside its folder"):
        load_headset(tmp_path / "hs")
    with pytest.raises(ModelError, match="not a saved head"):
        load_head(tmp_path)
