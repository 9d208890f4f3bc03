"""Letterbox geometry and augmentation (fbjax/data/{preprocess,augment}.py)."""

import cv2
import numpy as np
import pytest

from fbjax.data import augment
from fbjax.geometry import ellipse_fit, preprocess


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


def _soft_ellipse(hw, e, sharpness):
  """Head probability of ellipse `e` on an (h, w) image: a logistic of the signed distance."""
  yy, xx = np.mgrid[0:hw[0], 0:hw[1]].astype(np.float64)
  c, s = np.cos(e.theta), np.sin(e.theta)
  u = (xx - e.cx) * c + (yy - e.cy) * s
  v = -(xx - e.cx) * s + (yy - e.cy) * c
  d = (1 - np.sqrt((u / e.a) ** 2 + (v / e.b) ** 2)) * np.sqrt(e.a * e.b)
  return (1 / (1 + np.exp(-d * sharpness))).astype(np.float32)


@pytest.mark.parametrize("orig", [(541, 797), (333, 611), (1001, 703), (93, 141)])
def test_grid_to_original_is_exact_at_odd_sizes(orig):
  """Rendered in the original, letterboxed by cv2, fitted on the grid and mapped back."""
  from fbjax.geometry import segment_post  # noqa: PLC0415

  h, w = orig
  e = ellipse_fit.Ellipse.make(w * 0.47, h * 0.53, min(h, w) * 0.33, min(h, w) * 0.27, 0.4)
  grid, g = preprocess.letterbox(_soft_ellipse(orig, e, 1.5 if h > 300 else 3.0), (128, 192))
  f = segment_post.fitted_ellipse(grid, g, method="direct")
  assert f.perimeter == pytest.approx(e.perimeter, rel=5e-4)    # HC within 0.05 %
  assert np.hypot(f.cx - e.cx, f.cy - e.cy) < 0.1                # original pixels
  # The per-axis scales are what cv2.resize applied, not the nominal one.
  assert tuple(g.resized_hw) == (round(h * g.scale), round(w * g.scale))
  np.testing.assert_allclose(g.scale_xy, [g.resized_hw[1] / w, g.resized_hw[0] / h])


def test_points_and_ellipses_round_trip_through_the_grid():

  g = preprocess.letterbox_geometry((541, 797), (128, 192))
  pts = np.array([[0.0, 0.0], [796.0, 540.0], [-0.5, -0.5], [123.25, 77.5]])
  np.testing.assert_allclose(g.to_original_points(g.to_grid_points(pts)), pts, atol=1e-9)
  # The original's outer pixel edges (-0.5 and w - 0.5) land on the resized block's edges.
  oy, ox = g.offset_yx
  rh, rw = g.resized_hw
  np.testing.assert_allclose(g.to_grid_points([[-0.5, -0.5], [796.5, 540.5]]),
                             [[ox - 0.5, oy - 0.5], [ox + rw - 0.5, oy + rh - 0.5]], atol=1e-9)
  # An ellipse mapped by the affine equals the ellipse fitted to its mapped points.
  e = ellipse_fit.Ellipse.make(400.0, 260.0, 180.0, 140.0, 0.7)
  eg = e.to_grid(g)
  fit = ellipse_fit.fit_direct(g.to_grid_points(e.points(720)))
  for k in ("cx", "cy", "a", "b", "theta"):
    assert getattr(eg, k) == pytest.approx(getattr(fit, k), rel=1e-6, abs=1e-6)
  back = eg.to_original(g)
  for k in ("cx", "cy", "a", "b", "theta"):
    assert getattr(back, k) == pytest.approx(getattr(e, k), rel=1e-9, abs=1e-9)
