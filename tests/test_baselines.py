"""The thumbnail shortcut baseline (`fbjax.evaluation.baselines`) against the same numbers
computed another way: block means and a bin count, an explicit threshold, a label table."""

import numpy as np

from fbjax.core import labels
from fbjax.data import sources
from fbjax.evaluation import baselines


def _source(n=24, seed=0):
  """Toy 64x64 images (the baseline's grid: no resampling), brighter when abnormal."""
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    ex = sources.toy_example(rng, i, (64, 64))
    ab = i % 3 == 0
    img = ex["image"].astype(np.float32) * (1.6 if ab else 1.0)
    ex.update(image=np.clip(img, 0, 255).astype(np.uint8), abnormal=int(ab),
              condition=int(rng.integers(0, len(labels.CONDITIONS))) if ab else 0)
    out.append(ex)
  return sources.ListSource(out)


def test_thumbnail_features_are_block_means_and_a_histogram():
  src = _source(6)
  x, y = baselines.thumbnail_features(src)
  assert x.shape == (6, 256 + 32)
  for i in range(len(src)):
    img = src[i]["image"][..., 0].astype(np.float64) / 255.0
    thumb = img.reshape(16, 4, 16, 4).mean(axis=(1, 3)).ravel()   # 64 -> 16: 4x4 means
    hist = np.bincount(np.minimum((img * 32).astype(int), 31).ravel(), minlength=32) / img.size
    np.testing.assert_allclose(x[i, :256], thumb, atol=1e-5)
    np.testing.assert_allclose(x[i, 256:], hist, atol=1e-12)
  np.testing.assert_array_equal(y["abnormal"], [src[i]["abnormal"] for i in range(6)])
  np.testing.assert_array_equal(y["condition"], [src[i]["condition"] for i in range(6)])


def test_probs_put_zero_on_classes_the_training_labels_lack():
  x = np.array([[0.0], [0.1], [1.0], [1.1], [-1.0]])
  model = baselines.fit(x, np.array([0, 0, 2, 2, -1]))   # -1: unknown, not trained on
  p = baselines.probs(model, x, 4)
  assert p.shape == (5, 4)
  np.testing.assert_array_equal(p[:, [1, 3]], 0.0)
  np.testing.assert_allclose(p.sum(1), 1.0)
  np.testing.assert_allclose(p[:, [0, 2]], model.predict_proba(x))


def test_fit_and_predict_and_fit_calibrated_agree_with_the_steps_by_hand():
  train, val, test = _source(30, 1), _source(15, 2), _source(12, 3)
  x_tr, y_tr = baselines.thumbnail_features(train)
  x_va, y_va = baselines.thumbnail_features(val)
  x_te, _ = baselines.thumbnail_features(test)
  by_hand = baselines.probs(baselines.fit(x_tr, y_tr["abnormal"]), x_te, 2)
  np.testing.assert_allclose(baselines.fit_and_predict([train], test, "abnormal", 2), by_hand)
  # Two training sources: their features and labels concatenated.
  half = sources.ListSource([train[i] for i in range(10)])
  x2 = np.concatenate([x_tr, x_tr[:10]])
  y2 = np.concatenate([y_tr["abnormal"], y_tr["abnormal"][:10]])
  np.testing.assert_allclose(baselines.fit_and_predict([train, half], test, "abnormal", 2),
                             baselines.probs(baselines.fit(x2, y2), x_te, 2))
  model, thr = baselines.fit_calibrated(x_tr, y_tr["abnormal"], x_va, y_va["abnormal"], 0.8)
  p_va = baselines.probs(model, x_va, 2)[:, 1]
  normals = np.sort(p_va[y_va["abnormal"] == 0])
  assert thr == normals[int(np.ceil(0.8 * len(normals) - 1e-9)) - 1]   # the 80th percentile
  assert np.mean(normals <= thr) >= 0.8 - 1e-9   # 80 % of validation normals pass
  np.testing.assert_allclose(baselines.probs(model, x_te, 2), by_hand)

