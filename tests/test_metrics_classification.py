"""Classification metrics against scikit-learn on random cases."""

import math

import numpy as np
import pytest
from sklearn import calibration
from sklearn import metrics as skm

from fbjax.core import metrics


def _case(seed, n=300, c=5, ties=False):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, c, n)
  logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y]
  if ties:
    logits = np.round(logits, 1)
  p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  return y, p


@pytest.mark.parametrize("seed", range(4))
def test_accuracy_confusion_f1_match_sklearn(seed):
  y, p = _case(seed, c=3 + seed)
  pred = p.argmax(axis=1)
  c = p.shape[1]
  assert metrics.accuracy(y, pred) == pytest.approx(skm.accuracy_score(y, pred))
  np.testing.assert_array_equal(metrics.confusion_matrix(y, pred, c),
                                skm.confusion_matrix(y, pred, labels=range(c)))
  assert metrics.macro_f1(y, pred) == pytest.approx(skm.f1_score(y, pred, average="macro"))
  per = metrics.per_class_scores(metrics.confusion_matrix(y, pred, c))
  prec, rec, f1, sup = skm.precision_recall_fscore_support(y, pred, labels=range(c),
                                                           zero_division=0)
  np.testing.assert_allclose(per["precision"], prec)
  np.testing.assert_allclose(per["recall"], rec)
  np.testing.assert_allclose(per["f1"], f1)
  np.testing.assert_array_equal(per["support"], sup)


def test_macro_f1_skips_classes_never_seen_and_unknown_labels():
  y = np.array([0, 0, 1, 1, 3, -1, -1])
  pred = np.array([0, 1, 1, 1, 0, 2, 2])
  keep = y >= 0
  want = skm.f1_score(y[keep], pred[keep], average="macro", zero_division=0)
  assert metrics.macro_f1(y, pred, num_classes=5) == pytest.approx(want)
  assert metrics.accuracy(y, pred) == pytest.approx(0.6)


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True)])
def test_auroc_and_roc_curve_match_sklearn(seed, ties):
  y, p = _case(seed, n=257, c=2, ties=ties)
  s = p[:, 1]
  assert metrics.auroc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
  fpr, tpr, thr = metrics.roc_curve(y, s)
  fpr_s, tpr_s, thr_s = skm.roc_curve(y, s, drop_intermediate=False)
  np.testing.assert_allclose(fpr, fpr_s)
  np.testing.assert_allclose(tpr, tpr_s)
  np.testing.assert_allclose(thr[1:], thr_s[1:])
  assert math.isnan(metrics.auroc(np.zeros(5, int), np.arange(5.0)))


def test_auroc_ovr_matches_sklearn_per_class():
  y, p = _case(3, n=400, c=4)
  want = skm.roc_auc_score(y, p, multi_class="ovr", average=None)
  np.testing.assert_allclose(metrics.auroc_ovr(y, p), want, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("spec", [0.8, 0.95, 0.99])
def test_sensitivity_at_specificity_is_the_best_point_of_sklearns_roc(seed, spec):
  y, p = _case(seed + 10, n=500, c=2, ties=seed == 2)
  s = p[:, 1]
  fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
  want = tpr[fpr <= 1 - spec + 1e-12].max()
  assert metrics.sensitivity_at_specificity(y, s, spec) == pytest.approx(want)
  t = metrics.threshold_at_specificity(s[y == 0], spec)
  sens, got_spec = metrics.sensitivity_specificity(y, s, t)
  assert got_spec >= spec and sens == pytest.approx(want)


def test_threshold_at_specificity_analytic():
  neg = np.arange(1, 101, dtype=float)          # 1..100
  assert metrics.threshold_at_specificity(neg, 0.95) == 95.0
  assert metrics.threshold_at_specificity(neg, 1.0) == 100.0
  assert metrics.threshold_at_specificity(np.full(20, 3.0), 0.5) == 3.0
  with pytest.raises(ValueError, match="no negative"):
    metrics.threshold_at_specificity([], 0.95)


@pytest.mark.parametrize("seed", range(3))
def test_ece_matches_sklearn_calibration_curve(seed):
  y, p = _case(seed, n=1000, c=4)
  conf, correct = p.max(axis=1), (p.argmax(axis=1) == y).astype(int)
  bins = 10
  frac_pos, mean_pred = calibration.calibration_curve(correct, conf, n_bins=bins,
                                                      strategy="uniform")
  counts = np.histogram(conf, bins=np.linspace(0, 1, bins + 1))[0]
  counts = counts[counts > 0]
  want = np.sum(counts / len(y) * np.abs(frac_pos - mean_pred))
  assert metrics.expected_calibration_error(p, y, bins) == pytest.approx(want, abs=1e-12)
  # Binary input (probability of class 1) is the same as its two-column form.
  yb, pb = _case(seed, n=300, c=2)
  assert metrics.expected_calibration_error(pb[:, 1], yb) == pytest.approx(
      metrics.expected_calibration_error(pb, yb))
  # Perfectly calibrated one-hot predictions of the truth: ECE 0.
  assert metrics.expected_calibration_error(np.eye(4)[y], y) == 0.0


def test_classification_summary_fields():
  y, p = _case(5, n=200, c=3)
  s = metrics.classification_summary(y, p, ["a", "b", "c"])
  assert s["n"] == 200
  assert s["accuracy"] == pytest.approx(skm.accuracy_score(y, p.argmax(1)))
  assert s["per_class"]["b"]["auroc"] == pytest.approx(skm.roc_auc_score(y == 1, p[:, 1]))
  assert np.sum(s["confusion_matrix"]) == 200


def test_fit_temperature_recovers_the_generating_temperature():
  # Labels drawn from softmax(z / 2.5): the probabilities softmax(z) are over-confident
  # by exactly T = 2.5, which the NLL fit must find.
  rng = np.random.default_rng(0)
  z = rng.normal(scale=4.0, size=(20000, 4))
  true = np.exp(z / 2.5)
  true /= true.sum(1, keepdims=True)
  y = np.array([rng.choice(4, p=p) for p in true])
  p = np.exp(z - z.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  t = metrics.fit_temperature(p, y)
  assert t == pytest.approx(2.5, rel=0.05)
  q = metrics.apply_temperature(p, t)
  np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-9)
  np.testing.assert_allclose(metrics.apply_temperature(p, 1.0), p, atol=1e-9)
  assert metrics.nll(q, y) < metrics.nll(p, y)
  assert metrics.expected_calibration_error(q, y) < metrics.expected_calibration_error(p, y)
  assert math.isnan(metrics.fit_temperature(p[:3], [-1, -1, -1]))


def test_reliability_bins_count_and_average():
  p = np.array([[0.95, 0.05], [0.85, 0.15], [0.42, 0.58], [0.55, 0.45]])
  y = np.array([0, 1, 1, 0])
  r = metrics.reliability(p, y, num_bins=5)
  assert r["count"] == [0, 0, 2, 0, 2]        # confidences 0.58, 0.55 | 0.95, 0.85
  assert r["confidence"][2] == pytest.approx(0.565)
  assert r["confidence"][4] == pytest.approx(0.9)
  assert r["accuracy"][2] == 1.0 and r["accuracy"][4] == 0.5
  assert math.isnan(r["accuracy"][0])
