"""import-official: the published pickled sklearn files become safe heads, only with explicit trust."""
from __future__ import annotations

import pickle

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import OneClassSVM

from deepsift.cli import main
from deepsift.exceptions import UnsafeFileError
from deepsift.model.headset import load_headset
from deepsift.model.official import OFFICIAL_FILES, import_official


@pytest.fixture(scope="module")
def official_dir(tmp_path_factory):
    """A model folder whose sklearn/ holds pickles made the way the authors made theirs."""
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (120, 192)), rng.normal(0.4, 1, (120, 192))].astype(np.float32)
    y = np.r_[np.zeros(120, int), np.ones(120, int)]
    d = tmp_path_factory.mktemp("official")
    (d / "sklearn").mkdir()
    ests = {
        "linear": LogisticRegression(C=0.316, max_iter=1500, class_weight="balanced").fit(X, y),
        "knn": KNeighborsClassifier(n_neighbors=1, metric="cosine").fit(X, y),
        "svm": OneClassSVM(kernel="poly", gamma="auto", nu=0.1).fit(X[y == 0]),
    }
    with open(d / "sklearn" / OFFICIAL_FILES["linear"], "wb") as fh:
        pickle.dump(ests["linear"], fh)
    with open(d / "sklearn" / OFFICIAL_FILES["knn"], "wb") as fh:
        pickle.dump(ests["knn"], fh)
    joblib.dump(ests["svm"], d / "sklearn" / OFFICIAL_FILES["svm"])
    return d, ests


def test_refuses_without_trust(official_dir):
    d, _ = official_dir
    with pytest.raises(UnsafeFileError, match="trust-pickles option"):
        import_official(d)
    assert main(["weights", "import-official", str(d)]) == 2  # refused at once: the flag is missing
    assert not (d / "heads").exists()


def test_converted_heads_decide_like_the_originals(official_dir, tmp_path):
    d, ests = official_dir
    assert main(["weights", "import-official", str(d), "--trust-pickles", "--out", str(tmp_path / "h")]) == 0
    heads, meta = load_headset(tmp_path / "h")
    assert set(heads) == {"linear", "knn", "svm"} and meta["embedding_dim"] == 192
    probe = np.random.default_rng(5).normal(0.2, 1.1, (300, 192)).astype(np.float32)
    np.testing.assert_array_equal(heads["linear"].predict(probe), ests["linear"].predict(probe))
    np.testing.assert_allclose(heads["linear"].decision_function(probe), ests["linear"].decision_function(probe),
                               atol=1e-5)
    np.testing.assert_array_equal(heads["knn"].predict(probe), ests["knn"].predict(probe))
    np.testing.assert_array_equal(heads["svm"].predict(probe), (ests["svm"].predict(probe) == -1).astype(int))
    np.testing.assert_allclose(-heads["svm"].decision_function(probe), ests["svm"].decision_function(probe),
                               rtol=1e-6, atol=1e-6)
    assert not any(p.suffix in (".sav", ".joblib", ".pkl") for p in (tmp_path / "h").rglob("*"))


def test_default_output_is_beside_the_model(official_dir):
    d, _ = official_dir
    assert main(["weights", "import-official", str(d), "--trust-pickles"]) == 0
    assert (d / "heads" / "heads.json").is_file()


def test_wrong_estimator_type_is_refused(tmp_path):
    (tmp_path / "sklearn").mkdir()
    with open(tmp_path / "sklearn" / OFFICIAL_FILES["linear"], "wb") as fh:
        pickle.dump({"not": "a classifier"}, fh)
    assert main(["weights", "import-official", str(tmp_path), "--trust-pickles"]) == 1


def test_unreachable_hub_is_one_line_at_once(tmp_path):
    """The first README line offline: one line within seconds, not the hub client's retries (even with -q)."""
    import os
    import subprocess
    import sys
    import time

    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "deepsift", "-q", "weights", "import-official", "aimagelab/CoDE",
                          "--trust-pickles"], capture_output=True, text=True, env=env, timeout=120)
    elapsed = time.monotonic() - t0
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "aimagelab/CoDE" in res.stderr and "cannot be reached" in res.stderr
    assert elapsed < 15, elapsed  # generous for a loaded machine; the retries took 23 s
