"""Letterbox geometry and augmentation (fbjax/data/{preprocess,augment}.py)."""

import cv2
import numpy as np
import pytest

from fbjax.data import augment, preprocess


def _disk(hw, centre_xy, radius):
  m = np.zeros(hw, np.uint8)
  cv2.circle(m, tuple(int(round(c)) for c in centre_xy), int(radius), 1, -1)
  return m


@pytest.mark.parametrize("orig,out", [((540, 800), (128, 128)), ((392, 640), (256, 384)),
                                      ((100, 60), (64, 64)), ((64, 64), (128, 128))])
def test_letterbox_keeps_aspect_and_maps_points_back(orig, out):
  img = np.zeros(orig, np.uint8)
  cy, cx = orig[0] * 0.4, orig[1] * 0.6
  r = min(orig) * 0.2
  img[:] = _disk(orig, (cx, cy), r) * 255
  boxed, g = preprocess.letterbox(img, out)
  assert boxed.shape == out
  # the disk stays round: its area on the grid is the original area times scale^2
  area_ratio = (boxed > 127).sum() / (img > 127).sum()
  assert area_ratio == pytest.approx(g.scale ** 2, rel=0.08)
  # the centroid maps back to the original centre
  ys, xs = np.nonzero(boxed > 127)
  back = g.to_original_points(np.array([[xs.mean(), ys.mean()]]))[0]
  assert np.hypot(back[0] - cx, back[1] - cy) < 1.0 / g.scale + 1.0
  # unletterbox recovers the original size and content
  rec = preprocess.unletterbox(boxed, g, nearest=True)
  assert rec.shape == orig
  inter = np.logical_and(rec > 127, img > 127).sum()
  union = np.logical_or(rec > 127, img > 127).sum()
  assert inter / union > 0.9


def test_spacing_on_grid():
  g = preprocess.letterbox_geometry((540, 800), (270, 400))
  assert g.scale == pytest.approx(0.5)
  assert g.spacing_on_grid(0.1) == pytest.approx(0.2)


def _example(seed=0):
  rng = np.random.default_rng(seed)
  img = rng.random((64, 64)).astype(np.float32)
  return {"image": img, "clean": img.copy(),
          "head_mask": _disk((64, 64), (30, 34), 14), "pixel_spacing_mm": np.float32(0.2)}


def test_augment_is_a_pure_function_of_the_rng():
  ex = _example()
  before = {k: np.copy(v) for k, v in ex.items()}
  a = augment.augment(np.random.default_rng(5), ex)
  b = augment.augment(np.random.default_rng(5), ex)
  c = augment.augment(np.random.default_rng(6), ex)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(a["image"], c["image"])
  for k in ex:  # input untouched
    np.testing.assert_array_equal(ex[k], before[k])


def test_flip_moves_masks_with_the_image():
  ex = _example()
  out = augment.flip(np.random.default_rng(0), ex, prob=1.0)
  np.testing.assert_array_equal(out["image"], ex["image"][:, ::-1])
  np.testing.assert_array_equal(out["head_mask"], ex["head_mask"][:, ::-1])


def test_scale_updates_spacing_so_mm_area_is_preserved():
  ex = _example()
  mm2 = ex["head_mask"].sum() * ex["pixel_spacing_mm"] ** 2
  for seed in range(5):
    out = augment.affine(np.random.default_rng(seed), ex, max_rotate_deg=30, max_log_scale=0.3)
    mm2_out = out["head_mask"].sum() * out["pixel_spacing_mm"] ** 2
    assert mm2_out == pytest.approx(mm2, rel=0.05)


def test_gain_gamma_changes_image_not_clean():
  ex = _example()
  out = augment.gain_gamma(np.random.default_rng(1), ex, 0.5, 0.5)
  np.testing.assert_array_equal(out["clean"], ex["clean"])
  assert not np.allclose(out["image"], ex["image"])
  assert out["image"].min() >= 0 and out["image"].max() <= 1
