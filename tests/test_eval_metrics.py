"""Metrics against scikit-learn and hand-worked cases; bootstrap; thresholds and calibration."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from deepsift.evaluate.calibration import Calibrator, parse_band, threshold_for_fpr, unsure_report
from deepsift.evaluate.metrics import METRIC_NAMES, compute_metrics, pr_curve, roc_curve
from deepsift.exceptions import EvaluationError


def _data(n: int = 3000, seed: int = 0, ties: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    return y, (np.round(s, 2) if ties else s)


@pytest.mark.parametrize("ties", [True, False])
def test_metrics_match_sklearn(ties: bool) -> None:
    y, s = _data(ties=ties)
    m = compute_metrics(y, s, threshold=0.5)
    pred = (s >= 0.5).astype(int)
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert m["ap"] == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["acc_real"] == pytest.approx(skm.recall_score(y, pred, pos_label=0))
    assert m["acc_fake"] == pytest.approx(skm.recall_score(y, pred, pos_label=1))
    fpr, tpr, _ = skm.roc_curve(y, s)
    assert m["tpr@1%fpr"] == pytest.approx(tpr[fpr <= 0.01].max())
    assert m["tpr@5%fpr"] == pytest.approx(tpr[fpr <= 0.05].max())
    # EER: where the ROC crosses FPR == FNR (sklearn's points, linear interpolation)
    fnr = 1 - tpr
    k = np.argmax(fpr - fnr >= 0)
    a, b = fpr[k - 1] - fnr[k - 1], fpr[k] - fnr[k]
    eer = fpr[k - 1] + (-a / (b - a)) * (fpr[k] - fpr[k - 1])
    assert m["eer"] == pytest.approx(eer, abs=1e-9)
    # every ROC point, one per distinct threshold, as sklearn gives them without dropping any
    ours_fpr, ours_tpr, ours_thr = roc_curve(y, s)
    all_fpr, all_tpr, all_thr = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(ours_fpr, all_fpr, rtol=0, atol=1e-15)
    np.testing.assert_allclose(ours_tpr, all_tpr, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(ours_thr[1:], all_thr[1:])
    assert skm.auc(ours_fpr, ours_tpr) == pytest.approx(m["auroc"])


def test_hand_worked_case() -> None:
    # scores: reals 0.1, 0.4, 0.6 ; fakes 0.35, 0.8, 0.9  (threshold 0.5)
    y = [0, 0, 0, 1, 1, 1]
    s = [0.1, 0.4, 0.6, 0.35, 0.8, 0.9]
    m = compute_metrics(y, s, threshold=0.5)
    assert m["acc_real"] == pytest.approx(2 / 3) and m["acc_fake"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)  # tp 2, fp 1, fn 1
    assert m["auroc"] == pytest.approx(7 / 9)  # 7 of 9 (fake, real) pairs ordered correctly
    # ECE, 15 bins: every sample alone in its bin -> mean |y - p|
    assert m["ece"] == pytest.approx(np.mean(np.abs(np.array(y) - np.array(s))))
    # EER: ROC points (0,0) (0,1/3) (0,2/3) (1/3,2/3) (2/3,2/3) (2/3,1) (1,1): FPR = FNR = 1/3
    assert m["eer"] == pytest.approx(1 / 3)
    assert m["tpr@5%fpr"] == pytest.approx(2 / 3)


def _ece_reference(y: np.ndarray, p: np.ndarray, bins: int) -> float:
    """ECE written out: equal-width bins over [0, 1] (1.0 in the last), sum over bins of |fakes - sum p| / N."""
    idx = np.minimum((p * bins).astype(int), bins - 1)
    return float(sum(abs(y[idx == b].sum() - p[idx == b].sum()) for b in range(bins)) / len(y))


def test_ece_uses_15_equal_width_bins() -> None:
    y, s = _data(5000, seed=11, ties=False)
    ece = compute_metrics(y, s)["ece"]
    assert ece == pytest.approx(_ece_reference(y, s, 15), abs=1e-12)
    for other in (10, 14, 16, 20):  # the case tells the bin counts apart
        assert abs(_ece_reference(y, s, other) - ece) > 1e-4, other


def test_one_class_is_undefined_not_a_crash() -> None:
    m = compute_metrics([1, 1, 1], [0.2, 0.7, 0.9], bootstrap=20)
    for name in ("auroc", "ap", "eer", "tpr@1%fpr"):
        assert m[name] is None
        assert "both classes" in m.values[name].undefined
    assert m["acc_fake"] == pytest.approx(2 / 3)
    assert m["acc_real"] is None and m.values["acc_real"].undefined == "no real images"
    json.dumps(m.to_dict())  # strict JSON, no NaN


def test_raw_scores_make_ece_undefined() -> None:
    m = compute_metrics([0, 1, 0, 1], [-2.0, 3.0, -1.0, 0.5], threshold=0.0)
    assert m["ece"] is None and "probabilities" in m.values["ece"].undefined
    assert m["accuracy"] == 1.0


@pytest.mark.parametrize("bad, msg", [([0.1, float("nan"), 0.3], "NaN"), (["a", "0.2", "0.3"], "numeric")])
def test_bad_scores(bad: list, msg: str) -> None:
    with pytest.raises(EvaluationError, match=msg):
        compute_metrics([0, 1, 0], bad)


def test_bad_labels_and_lengths() -> None:
    with pytest.raises(EvaluationError, match="0 \\(real\\) or 1"):
        compute_metrics([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(EvaluationError, match="3 labels but 2 scores"):
        compute_metrics([0, 1, 1], [0.1, 0.2])


def test_bootstrap_interval_covers_and_is_reproducible() -> None:
    y, s = _data(2000, seed=3)
    a = compute_metrics(y, s, bootstrap=300, seed=7)
    b = compute_metrics(y, s, bootstrap=300, seed=7)
    for name in METRIC_NAMES:
        va = a.values[name]
        assert va.low <= va.value <= va.high, name
        assert (va.low, va.high) == (b.values[name].low, b.values[name].high)
    # the interval width shrinks with sample size, like the standard error
    small = compute_metrics(y[:200], s[:200], bootstrap=300, seed=7).values["auroc"]
    assert (small.high - small.low) > 1.8 * (a.values["auroc"].high - a.values["auroc"].low)


def test_bootstrap_matches_explicit_resampling() -> None:
    from scipy.stats import rankdata

    y, s = _data(300, seed=5)
    fast = compute_metrics(y, s, bootstrap=20000, seed=1).values["auroc"]
    rng = np.random.default_rng(99)
    real, fake = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    # stratified (each class resampled within itself, as pROC does); AUROC by Mann-Whitney with midranks
    r = s[rng.choice(real, (20000, real.size))]
    f = s[rng.choice(fake, (20000, fake.size))]
    ranks = rankdata(np.concatenate([f, r], axis=1), axis=1)[:, : fake.size]
    slow = (ranks.sum(axis=1) - fake.size * (fake.size + 1) / 2) / (fake.size * real.size)
    assert slow[0] == pytest.approx(skm.roc_auc_score(np.r_[np.ones(fake.size), np.zeros(real.size)],
                                                      np.r_[f[0], r[0]]), abs=1e-12)
    lo95, hi95 = np.quantile(slow, [0.025, 0.975])
    lo90, hi90 = np.quantile(slow, [0.05, 0.95])
    # a 95 % interval: close to the explicit 2.5/97.5 % quantiles, clearly wider than a 90 % one
    gap = min(lo90 - lo95, hi95 - hi90)
    assert gap > 0.004
    assert abs(fast.low - lo95) < gap / 2 and abs(fast.high - hi95) < gap / 2


def test_pr_curve_endpoints() -> None:
    y, s = _data(500)
    rec, prec = pr_curve(y, s)
    assert rec[-1] == 1.0 and prec[-1] == pytest.approx(y.mean())


def test_threshold_for_target_fpr() -> None:
    y, s = _data(5000, seed=2, ties=True)
    for target in (0.01, 0.05, 0.2):
        t = threshold_for_fpr(y, s, target)
        fpr = np.mean(s[y == 0] >= t)
        assert fpr <= target
        # the lowest such threshold: the next real score down would break the target
        lower = np.max(s[(y == 0) & (s < t)])
        assert np.mean(s[y == 0] >= lower) > target
    with pytest.raises(EvaluationError, match="real images"):
        threshold_for_fpr([1, 1], [0.2, 0.3], 0.1)


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibration_improves_ece_and_roundtrips(method: str, tmp_path) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 4000)
    raw = rng.normal(2.0 * y - 1.0, 1.0)  # the true posterior logit is 2 * raw
    over = 1 / (1 + np.exp(-8.0 * raw))  # an over-confident probability
    cal = Calibrator(method).fit(y[:2000], raw[:2000])
    p = cal.transform(raw[2000:])
    before = compute_metrics(y[2000:], over[2000:])["ece"]
    after = compute_metrics(y[2000:], p)["ece"]
    assert after < before / 2
    path = cal.save(tmp_path / "cal.json")
    again = Calibrator.load(path)
    np.testing.assert_allclose(again.transform(raw[:50]), cal.transform(raw[:50]))
    assert json.loads(path.read_text())["method"] == method


def test_calibration_needs_both_classes_and_valid_file(tmp_path) -> None:
    with pytest.raises(EvaluationError, match="both"):
        Calibrator("platt").fit([1, 1, 1], [0.1, 0.2, 0.3])
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(EvaluationError, match="not a deepsift calibration"):
        Calibrator.load(bad)


def test_unsure_band_reported_separately() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.45, 0.7, 0.55, 0.9, 0.2])
    r = unsure_report(y, p, (0.4, 0.6))
    assert r["n_unsure"] == 2 and r["unsure_real"] == 1 and r["unsure_fake"] == 1
    assert r["n_decided"] == 4
    assert r["decided_accuracy"] == pytest.approx(2 / 4)  # 0.1 ok, 0.7 wrong, 0.9 ok, 0.2 wrong
    assert r["decided_fpr"] == pytest.approx(1 / 2)
    assert parse_band("0.3,0.7") == (0.3, 0.7)
    with pytest.raises(EvaluationError):
        parse_band("0.7,0.3")


def test_bootstrap_survives_one_class_resamples_among_normal_ones() -> None:
    # with 2 samples, many resamples hold one class only while others hold both: the curve
    # metrics of the one-class rows are undefined and must not take the batch down
    m = compute_metrics([0, 1], [0.2, 0.8], bootstrap=200, seed=0)
    assert m["auroc"] == 1.0 and m["eer"] == 0.0
    y = np.r_[np.zeros(60, int), np.ones(3, int)]
    s = np.random.default_rng(0).random(63) + 0.3 * y
    m = compute_metrics(y, s, bootstrap=500, seed=1)
    for name in ("eer", "tpr@1%fpr", "tpr@5%fpr", "auroc"):
        v = m.values[name]
        assert v.low is not None and 0.0 <= v.low <= v.high <= 1.0, name


def test_bootstrap_keeps_the_class_counts() -> None:
    # a test set's real/fake counts are fixed by design: a resample keeps them (stratified), so a
    # detector that calls every real right and every fake wrong has accuracy 60/63 in all of them
    y = np.r_[np.zeros(60, int), np.ones(3, int)]
    s = np.r_[np.full(60, 0.1), np.full(3, 0.2)]
    m = compute_metrics(y, s, threshold=0.5, bootstrap=300, seed=0)
    acc = m.values["accuracy"]
    assert acc.low == pytest.approx(60 / 63) and acc.high == pytest.approx(60 / 63)
    assert m.values["auroc"].low == 1.0 == m.values["auroc"].high  # never a one-class resample


def test_threshold_for_target_fpr_on_separable_scores_is_mid_gap_and_readable() -> None:
    """Reals at 0, fakes at 1 (an isotonic map of separable scores): the rule reads 'P(fake) >= 0.5'."""
    y = np.array([0] * 40 + [1] * 40)
    s = np.array([0.0] * 40 + [1.0] * 40)
    t = threshold_for_fpr(y, s, 0.05)
    assert t == 0.5
    y2 = np.array([0, 0, 0, 0, 1, 1, 1])
    s2 = np.array([0.01, 0.02, 0.031, 0.2, 0.62, 0.7, 0.9])
    t2 = threshold_for_fpr(y2, s2, 0.0)
    assert 0.2 < t2 <= 0.62 and len(repr(t2)) <= 4  # in the gap, a short decimal (0.4)
    assert np.mean(s2[y2 == 0] >= t2) == 0 and np.mean(s2[y2 == 1] >= t2) == 1
    assert threshold_for_fpr([0, 0, 1], [0.3, 0.9, 0.95], 0.0) == pytest.approx(0.93)


def test_cluster_bootstrap_resamples_groups_not_images() -> None:
    """12 real and 12 fake groups of 25 images, one score per group: only the groups are independent, so the
    grouped interval is much wider than the per-image one and close to that of one image per group."""
    rng = np.random.default_rng(7)
    per_group_real, per_group_fake = rng.normal(0.0, 1.0, 12), rng.normal(0.8, 1.0, 12)
    y = np.repeat([0] * 12 + [1] * 12, 25)
    s = np.repeat(np.concatenate([per_group_real, per_group_fake]), 25) + rng.normal(0, 0.01, y.size)
    groups = np.repeat([f"r{i}" for i in range(12)] + [f"f{i}" for i in range(12)], 25)
    iid = compute_metrics(y, s, bootstrap=400, seed=1)
    grouped = compute_metrics(y, s, bootstrap=400, seed=1, groups=groups)
    one = compute_metrics(np.array([0] * 12 + [1] * 12), np.concatenate([per_group_real, per_group_fake]),
                          bootstrap=400, seed=1)
    w = {k: m.values["auroc"].high - m.values["auroc"].low for k, m in (("iid", iid), ("g", grouped), ("one", one))}
    assert w["g"] > 2.5 * w["iid"]
    assert abs(w["g"] - w["one"]) < 0.35 * w["one"]
    assert grouped.values["auroc"].value == iid.values["auroc"].value  # the point estimate is the same
    d = grouped.to_dict()
    assert d["n_real_groups"] == 12 and d["n_fake_groups"] == 12 and d["few_groups"] is True
    assert "fewer than 20 groups" in d["metrics"]["auroc"]["unreliable"] and "few_groups" not in iid.to_dict()
