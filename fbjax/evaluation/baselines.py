"""The thumbnail shortcut: what a model must beat before its number means anything.

A logistic regression on a 16x16 thumbnail plus a 32-bin grey-level histogram
of the whole image (letterboxed to 64x64). In the fetal brain abnormalities
set every normal image comes from FETAL_PLANES_DB and the anomalies from other
sources, so this baseline separates normal from abnormal without looking at
the brain (DESIGN.md): every classification number fbjax reports is printed
beside it, trained on the same training images.

    x, y = baselines.thumbnail_features(train_source)
    model = baselines.fit(x, y["plane"])
    p = baselines.probs(model, baselines.thumbnail_features(test_source)[0], 4)
    # normal vs abnormal, its threshold at 95 % specificity on validation normals
    model, threshold = baselines.fit_calibrated(x, y["abnormal"], x_val, y_val["abnormal"])
"""

from __future__ import annotations

import cv2
import numpy as np

from fbjax.core import metrics
from fbjax.evaluation import evaluators

SIZE = 64
TASKS = ("plane", "abnormal", "condition")


def whole_images(src):
  """The original (whole-image) examples under an aligned-head source, in the same order
  (a source without alignment is returned as it is)."""
  inner = src
  while not hasattr(inner, "_ell"):
    if not hasattr(inner, "_source"):
      return src
    inner = inner._source
  return inner._source


def thumbnail_features(source, size: int = SIZE) -> tuple[np.ndarray, dict]:
  """(N, 256 + 32) features and {task: (N,) labels} of `source`'s images (whole images)."""

  x, ys = [], {k: [] for k in TASKS}
  for b in evaluators.host_batches(whole_images(source), (size, size), 64):
    keep = b["_mask"] > 0
    for img in b["image"][keep]:
      thumb = cv2.resize(img, (16, 16), interpolation=cv2.INTER_AREA).ravel()
      hist = np.histogram(img, bins=32, range=(0, 1))[0] / img.size
      x.append(np.concatenate([thumb, hist]))
    for k in ys:
      ys[k].append(b[k][keep])
  return np.asarray(x, np.float64), {k: np.concatenate(v) for k, v in ys.items()}


def fit(x, y):
  """Standardised features -> logistic regression, on the examples with a known label."""
  from sklearn.linear_model import (
    LogisticRegression,  # lazy: scikit-learn serves the shortcut baseline only
  )
  from sklearn.pipeline import make_pipeline  # lazy: scikit-learn serves the shortcut baseline only
  from sklearn.preprocessing import (
    StandardScaler,  # lazy: scikit-learn serves the shortcut baseline only
  )

  keep = np.asarray(y) >= 0
  model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=1.0))
  return model.fit(np.asarray(x)[keep], np.asarray(y)[keep])


def probs(model, x, num_classes: int) -> np.ndarray:
  """(N, num_classes) probabilities (0 for classes absent from the training labels)."""
  p = np.zeros((len(x), num_classes))
  p[:, model.classes_] = model.predict_proba(x)
  return p


def fit_and_predict(train_sources, test_source, task: str, num_classes: int) -> np.ndarray:
  """The baseline trained on `task` over `train_sources`, its probabilities on `test_source`."""
  parts = [thumbnail_features(s) for s in train_sources]
  x = np.concatenate([p[0] for p in parts])
  y = np.concatenate([p[1][task] for p in parts])
  return probs(fit(x, y), thumbnail_features(test_source)[0], num_classes)


def fit_calibrated(x, y, x_val, y_val, specificity: float = 0.95):
  """(model, threshold): the normal-vs-abnormal baseline fitted on (`x`, `y`) and the
  threshold of its abnormal probability at `specificity` on the validation normals
  (`y_val == 0`), as a model's decision threshold is set."""
  model = fit(x, y)
  p_val = probs(model, x_val, 2)[:, 1]
  return model, metrics.threshold_at_specificity(p_val[np.asarray(y_val) == 0], specificity)

