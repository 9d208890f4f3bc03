"""Evaluation metrics: pure functions of arrays, one value per example.

Sections: segmentation (overlap, surface distance), biometry, classification. Reductions
over a data set are left to the caller (per-example values plus masks).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from scipy import ndimage
from scipy.stats import rankdata

# ---------------------------------------------------------------------------
# Segmentation
# ---------------------------------------------------------------------------
#
# Empty masks (documented, tested):
#   dice:        both empty -> 1.0 (perfect agreement on "nothing");
#                exactly one empty -> 0.0.
#   hausdorff:   both empty -> 0.0 mm; exactly one empty -> inf (the distance
#                to an empty set). Summaries should count infs as failures
#                rather than average them.


def dice(pred, ref, *, axis=(-2, -1)):
  """Dice = 2|P & R| / (|P| + |R|) per example (masks are nonzero = inside).

  Works on numpy or jax arrays of shape (..., H, W); returns shape (...).
  """
  if hasattr(pred, "devices") or hasattr(ref, "devices"):  # jax arrays: stay on device
    xp = jnp
  else:
    xp = np
  p = xp.asarray(pred) > 0
  r = xp.asarray(ref) > 0
  inter = xp.sum(p & r, axis=axis).astype(xp.float32)
  total = (xp.sum(p, axis=axis) + xp.sum(r, axis=axis)).astype(xp.float32)
  return xp.where(total > 0, 2.0 * inter / xp.maximum(total, 1.0), 1.0)


def _spacing(spacing_mm, ndim: int = 2) -> tuple[float, ...]:
  s = np.broadcast_to(np.asarray(spacing_mm, np.float64), (ndim,))
  if not np.all(np.isfinite(s)) or np.any(s <= 0):
    raise ValueError(f"pixel spacing must be positive and finite, got {spacing_mm}")
  return tuple(float(v) for v in s)


def surface(mask) -> np.ndarray:
  """Boundary pixels: inside pixels with a 4-neighbour outside (or off the image)."""
  m = np.asarray(mask) > 0
  return m & ~ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(2, 1),
                                     border_value=0)


def surface_distances(a, b, spacing_mm=1.0) -> np.ndarray:
  """Distances (mm) from each boundary pixel of `a` to the nearest of `b`.

  `spacing_mm` is a scalar or (row, column) spacing for anisotropic pixels.
  """
  sp = _spacing(spacing_mm)
  sa, sb = surface(a), surface(b)
  if not sb.any():
    return np.full(int(sa.sum()), np.inf)
  dt = ndimage.distance_transform_edt(~sb, sampling=sp)
  return dt[sa]


def hausdorff_mm(pred, ref, spacing_mm=1.0, percentile: float = 95.0) -> float:
  """Symmetric percentile Hausdorff distance in mm (default HD95), one 2-D pair.

  max(P-th percentile of d(pred -> ref), P-th percentile of d(ref -> pred)),
  over boundary pixel centres (as MONAI's `compute_hausdorff_distance` with
  `directed=False`). percentile=100 is the classical Hausdorff distance.
  """
  p, r = np.asarray(pred) > 0, np.asarray(ref) > 0
  if p.shape != r.shape or p.ndim != 2:
    raise ValueError(f"expected two HxW masks of one shape, got {p.shape} and {r.shape}")
  if not p.any() and not r.any():
    return 0.0
  if not p.any() or not r.any():
    return math.inf
  d1 = surface_distances(p, r, spacing_mm)
  d2 = surface_distances(r, p, spacing_mm)
  return float(max(np.percentile(d1, percentile), np.percentile(d2, percentile)))


def hd95_mm(pred, ref, spacing_mm=1.0) -> float:
  return hausdorff_mm(pred, ref, spacing_mm, 95.0)


# ---------------------------------------------------------------------------
# Biometry
# ---------------------------------------------------------------------------
#
# A NaN on either side (no prediction, or no reference) gives NaN.


def abs_diff(pred, ref):
  """|pred - ref| elementwise (e.g. HC absolute difference in mm)."""
  return np.abs(np.asarray(pred, np.float64) - np.asarray(ref, np.float64))


def rel_diff(pred, ref):
  """|pred - ref| / |ref| elementwise (a fraction: 0.01 = 1 %)."""
  ref = np.asarray(ref, np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    return abs_diff(pred, ref) / np.abs(ref)


def hc_abs_diff_mm(pred_hc_mm, ref_hc_mm):
  return abs_diff(pred_hc_mm, ref_hc_mm)


def hc_rel_diff(pred_hc_mm, ref_hc_mm):
  return rel_diff(pred_hc_mm, ref_hc_mm)


def summarize(values) -> dict:
  """Mean, median, std, 95th percentile over finite values, plus counts."""
  v = np.asarray(values, np.float64).ravel()
  f = v[np.isfinite(v)]
  out = {"n": int(v.size), "n_finite": int(f.size)}
  if f.size:
    out.update(mean=float(f.mean()), median=float(np.median(f)), std=float(f.std()),
               p95=float(np.percentile(f, 95)), min=float(f.min()), max=float(f.max()))
  else:
    out.update(mean=math.nan, median=math.nan, std=math.nan, p95=math.nan,
               min=math.nan, max=math.nan)
  return out


# ---------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------
#
# Host-side numpy on a whole evaluation set (labels int, -1 = unknown and
# left out where a `mask` is not given). Conventions follow scikit-learn:
#   macro-F1:    the unweighted mean over `classes` (default: every class in
#                the labels or the predictions); a class with no true and no
#                predicted example is not counted; 0/0 precision or recall = 0.
#   AUROC:       probability that a random positive outscores a random
#                negative, ties counting 1/2; NaN when a class is absent.
#   a decision at threshold t is "positive" when score > t.


def _known(labels, *arrays):
  """Drops examples whose label is negative (unknown)."""
  y = np.asarray(labels).astype(np.int64).ravel()
  keep = y >= 0
  return (y[keep], *(np.asarray(a)[keep] for a in arrays))


def accuracy(labels, preds) -> float:
  y, p = _known(labels, np.asarray(preds).ravel())
  return float(np.mean(y == p)) if y.size else math.nan


def confusion_matrix(labels, preds, num_classes: int) -> np.ndarray:
  """(num_classes, num_classes) counts; row = true class, column = prediction."""
  y, p = _known(labels, np.asarray(preds).ravel())
  if y.size and (y.max() >= num_classes or p.min() < 0 or p.max() >= num_classes):
    raise ValueError(f"labels or predictions outside [0, {num_classes})")
  cm = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(cm, (y, p.astype(np.int64)), 1)
  return cm


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
  """Precision, recall (= sensitivity), F1 and support per class from a confusion matrix."""
  cm = np.asarray(cm, np.float64)
  tp = np.diag(cm)
  pred_n, true_n = cm.sum(axis=0), cm.sum(axis=1)
  with np.errstate(divide="ignore", invalid="ignore"):
    precision = np.where(pred_n > 0, tp / pred_n, 0.0)
    recall = np.where(true_n > 0, tp / true_n, 0.0)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
  return {"precision": precision, "recall": recall, "f1": f1, "support": true_n.astype(np.int64)}


def macro_f1(labels, preds, num_classes: int | None = None, classes=None) -> float:
  """Unweighted mean F1 over `classes` (default: classes seen in labels or predictions)."""
  y, p = _known(labels, np.asarray(preds).ravel())
  if not y.size:
    return math.nan
  n = int(max(y.max(), p.max()) + 1) if num_classes is None else num_classes
  f1 = per_class_scores(confusion_matrix(y, p, n))["f1"]
  if classes is None:
    classes = np.union1d(y, p)
  return float(np.mean(f1[np.asarray(classes, np.int64)]))


def auroc(labels, scores) -> float:
  """Area under the ROC curve for binary labels {0, 1} (Mann-Whitney U with mid-ranks)."""
  y, s = _known(labels, np.asarray(scores, np.float64).ravel())
  pos, neg = int(np.sum(y == 1)), int(np.sum(y == 0))
  if pos == 0 or neg == 0:
    return math.nan

  ranks = rankdata(s)  # ties get their mean rank
  return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def auroc_ovr(labels, probs) -> np.ndarray:
  """One-vs-rest AUROC per class of (N, C) scores; NaN for a class with no positive."""
  y, pr = _known(labels, np.asarray(probs, np.float64))
  return np.array([auroc((y == c).astype(np.int64), pr[:, c]) for c in range(pr.shape[1])])


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(fpr, tpr, thresholds), positive when score >= threshold; starts at (0, 0)."""
  y, s = _known(labels, np.asarray(scores, np.float64).ravel())
  order = np.argsort(-s, kind="mergesort")
  s, y = s[order], y[order]
  last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]   # last index of each distinct score
  tps = np.cumsum(y == 1)[last].astype(np.float64)
  fps = np.cumsum(y == 0)[last].astype(np.float64)
  tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
  thr = np.r_[np.inf, s[last]]
  return fps / max(fps[-1], 1.0), tps / max(tps[-1], 1.0), thr


def threshold_at_specificity(negative_scores, specificity: float = 0.95) -> float:
  """The smallest threshold t (a negative's score) with mean(negatives <= t) >= specificity.

  Calling "positive" when score > t keeps at least `specificity` of these
  negatives negative and is the most sensitive such rule. This is how the
  anomaly score is calibrated on normal validation images.
  """
  s = np.sort(np.asarray(negative_scores, np.float64).ravel())
  if not s.size:
    raise ValueError("no negative scores to calibrate a threshold on")
  if not 0.0 <= specificity <= 1.0:
    raise ValueError(f"specificity must be in [0, 1], got {specificity}")
  k = max(int(math.ceil(specificity * s.size - 1e-9)), 1)
  return float(s[k - 1])


def sensitivity_specificity(labels, scores, threshold: float) -> tuple[float, float]:
  """(sensitivity, specificity) of the rule score > threshold."""
  y, s = _known(labels, np.asarray(scores, np.float64).ravel())
  pos, neg = s[y == 1], s[y == 0]
  sens = float(np.mean(pos > threshold)) if pos.size else math.nan
  spec = float(np.mean(neg <= threshold)) if neg.size else math.nan
  return sens, spec


def sensitivity_at_specificity(labels, scores, specificity: float = 0.95) -> float:
  """The highest sensitivity of a threshold rule whose specificity is >= `specificity`."""
  y, s = _known(labels, np.asarray(scores, np.float64).ravel())
  if not np.any(y == 1) or not np.any(y == 0):
    return math.nan
  t = threshold_at_specificity(s[y == 0], specificity)
  return sensitivity_specificity(y, s, t)[0]


def expected_calibration_error(probs, labels, num_bins: int = 15) -> float:
  """ECE of the top-class confidence (Guo et al. 2017), equal-width bins on [0, 1].

  `probs` is (N, C) class probabilities, or (N,) probabilities of class 1 of
  a binary problem. ECE = sum_b n_b / N * |accuracy_b - mean confidence_b|.
  """
  p = np.asarray(probs, np.float64)
  if p.ndim == 1:
    p = np.stack([1.0 - p, p], axis=1)
  y, p = _known(labels, p)
  if not y.size:
    return math.nan
  conf = p.max(axis=1)
  correct = (p.argmax(axis=1) == y).astype(np.float64)
  # Bin b holds confidences in (b/n, (b+1)/n]; a confidence of exactly 0 goes to bin 0.
  b = np.clip(np.ceil(conf * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
  # Per bin, n_b |acc_b - conf_b| = |sum(correct) - sum(confidence)|.
  acc = np.bincount(b, correct, minlength=num_bins)
  cf = np.bincount(b, conf, minlength=num_bins)
  return float(np.sum(np.abs(acc - cf)) / y.size)


def classification_summary(labels, probs, class_names=None) -> dict:
  """Accuracy, macro-F1, ECE, confusion matrix, per-class table and OvR AUROC.

  `probs` is (N, C); for C == 2 also the binary AUROC of class 1. Examples
  with label -1 are left out.
  """
  p = np.asarray(probs, np.float64)
  y, p = _known(labels, p)
  c = p.shape[1]
  names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
  pred = p.argmax(axis=1)
  cm = confusion_matrix(y, pred, c)
  per = per_class_scores(cm)
  out = {"n": int(y.size), "accuracy": accuracy(y, pred),
         "macro_f1": macro_f1(y, pred, c), "ece": expected_calibration_error(p, y),
         "confusion_matrix": cm.tolist(), "classes": names,
         "per_class": {n: {"precision": float(per["precision"][i]),
                           "recall": float(per["recall"][i]), "f1": float(per["f1"][i]),
                           "support": int(per["support"][i])} for i, n in enumerate(names)}}
  ovr = auroc_ovr(y, p) if y.size else np.full(c, math.nan)
  for i, n in enumerate(names):
    out["per_class"][n]["auroc"] = float(ovr[i])
  if c == 2:
    out["auroc"] = float(ovr[1])
  return out


# ---------------------------------------------------------------------------
# Calibration: temperature scaling (Guo et al. 2017, guo2017calibration in CITATIONS.bib)
# ---------------------------------------------------------------------------


def apply_temperature(probs, temperature: float) -> np.ndarray:
  """softmax(log(probs) / T): the probabilities of logits divided by T (rows of (N, C))."""
  logp = np.log(np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)) / float(temperature)
  logp -= logp.max(axis=-1, keepdims=True)
  e = np.exp(logp)
  return e / e.sum(axis=-1, keepdims=True)


def nll(probs, labels) -> float:
  """Mean negative log-likelihood of the known labels (-1 left out)."""
  y, p = _known(labels, np.asarray(probs, np.float64))
  if not y.size:
    return math.nan
  return float(-np.mean(np.log(np.clip(p[np.arange(y.size), y], 1e-12, 1.0))))


def fit_temperature(probs, labels, *, bounds=(0.05, 20.0)) -> float:
  """The T > 0 that minimises the NLL of `apply_temperature(probs, T)` on known labels.

  `probs` (N, C) are a model's (e.g. test-time averaged) probabilities, so
  log(probs) play the logits' part. The NLL is convex in 1/T: a golden-section
  search over log T within `bounds` (a grid first, so a flat end is found too).
  NaN without a known label.
  """
  y, p = _known(labels, np.asarray(probs, np.float64))
  if not y.size:
    return math.nan
  f = lambda lt: nll(apply_temperature(p, math.exp(lt)), y)  # noqa: E731
  grid = np.linspace(math.log(bounds[0]), math.log(bounds[1]), 41)
  k = int(np.argmin([f(v) for v in grid]))
  lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
  g = (math.sqrt(5) - 1) / 2
  for _ in range(40):
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    if f(a) < f(b):
      hi = b
    else:
      lo = a
  return float(math.exp((lo + hi) / 2))


def reliability(probs, labels, num_bins: int = 10) -> dict:
  """Per equal-width confidence bin: count, mean confidence and accuracy (a reliability
  diagram's points; empty bins NaN)."""
  y, p = _known(labels, np.asarray(probs, np.float64))
  conf = p.max(axis=1) if y.size else np.zeros(0)
  correct = (p.argmax(axis=1) == y).astype(np.float64) if y.size else np.zeros(0)
  b = np.clip(np.ceil(conf * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
  n = np.bincount(b, minlength=num_bins).astype(np.float64)
  with np.errstate(invalid="ignore", divide="ignore"):
    return {"edges": np.linspace(0, 1, num_bins + 1).tolist(), "count": n.astype(int).tolist(),
            "confidence": (np.bincount(b, conf, minlength=num_bins) / n).tolist(),
            "accuracy": (np.bincount(b, correct, minlength=num_bins) / n).tolist()}
