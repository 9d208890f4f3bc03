"""Segmentation and biometry metrics against analytic cases."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import cdist

from fbjax.core import metrics
from fbjax.geometry import ellipse_fit


def _ellipse(shape, cx, cy, a, b, theta=0.0):
  return ellipse_fit.rasterize(ellipse_fit.Ellipse.make(cx, cy, a, b, theta), shape)


def test_dice_perpendicular_ellipses_known_overlap():
  # Two congruent ellipses at right angles share 4ab*atan(b/a): Dice = 4 atan(b/a) / pi.
  a, b = 150.0, 75.0
  p = _ellipse((400, 400), 199.5, 199.5, a, b, 0.0)
  r = _ellipse((400, 400), 199.5, 199.5, a, b, math.pi / 2)
  want = 4.0 * math.atan(b / a) / math.pi
  assert float(metrics.dice(p, r)) == pytest.approx(want, abs=2e-3)


def test_dice_offset_circles_lens_area():
  r, d = 80.0, 50.0
  p = _ellipse((300, 400), 150.0, 150.0, r, r)
  q = _ellipse((300, 400), 150.0 + d, 150.0, r, r)
  lens = 2 * r * r * math.acos(d / (2 * r)) - d / 2 * math.sqrt(4 * r * r - d * d)
  want = 2 * lens / (2 * math.pi * r * r)
  assert float(metrics.dice(p, q)) == pytest.approx(want, abs=2e-3)


def test_dice_batched_numpy_and_jax_agree():
  rng = np.random.default_rng(0)
  p = rng.random((4, 32, 48)) > 0.5
  r = rng.random((4, 32, 48)) > 0.3
  want = [2 * (a & b).sum() / (a.sum() + b.sum()) for a, b in zip(p, r, strict=True)]
  np.testing.assert_allclose(metrics.dice(p, r), want, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(metrics.dice(jnp.asarray(p), jnp.asarray(r))), want,
                             rtol=1e-6)


def test_empty_masks():
  z = np.zeros((20, 30), np.uint8)
  m = z.copy()
  m[5:10, 5:10] = 1
  assert float(metrics.dice(z, z)) == 1.0
  assert float(metrics.dice(m, z)) == 0.0
  assert float(metrics.dice(z, m)) == 0.0
  assert metrics.hausdorff_mm(z, z, 0.5) == 0.0
  assert metrics.hausdorff_mm(m, z, 0.5) == math.inf
  assert metrics.hausdorff_mm(z, m, 0.5) == math.inf


@pytest.mark.parametrize("axis,spacing", [(0, (0.5, 0.2)), (1, (0.5, 0.2)), (0, (0.1, 0.7))])
def test_hd95_shifted_rectangle_anisotropic(axis, spacing):
  # A long thin rectangle shifted by k pixels across its length: most boundary
  # pixels (both long sides) are exactly k pixels from the other boundary and
  # none is further, so HD95 = HD = k * spacing along the shift axis.
  k = 3
  m = np.zeros((120, 160), np.uint8)
  if axis == 0:
    m[40:52, 20:140] = 1
  else:
    m[20:100, 60:72] = 1
  s = np.roll(m, k, axis=axis)
  want = k * spacing[axis]
  assert metrics.hd95_mm(m, s, spacing) == pytest.approx(want, rel=1e-9)
  assert metrics.hausdorff_mm(m, s, spacing, 100.0) == pytest.approx(want, rel=1e-9)
  # Isotropic spacing along the other axis would give a different number.
  other = (spacing[1], spacing[0])
  assert metrics.hd95_mm(m, s, other) == pytest.approx(k * other[axis], rel=1e-9)


def test_hd95_concentric_disks_in_mm_with_anisotropic_pixels():
  # Physical disks of radius 20 and 23 mm drawn on 0.2 x 0.3 mm pixels: every
  # boundary point is ~3 mm from the other boundary (up to one pixel).
  sy, sx = 0.2, 0.3
  yy, xx = np.mgrid[0:300, 0:220]
  r2 = ((yy - 150) * sy) ** 2 + ((xx - 110) * sx) ** 2
  a, b = r2 <= 20.0**2, r2 <= 23.0**2
  assert metrics.hd95_mm(a, b, (sy, sx)) == pytest.approx(3.0, abs=max(sy, sx))


def test_hausdorff_matches_brute_force():
  rng = np.random.default_rng(1)
  sp = (0.4, 0.15)
  a = np.zeros((40, 50), bool)
  b = np.zeros((40, 50), bool)
  a[5:25, 8:30] = True
  a[rng.integers(0, 40, 30), rng.integers(0, 50, 30)] = True
  b[12:35, 14:44] = True
  pa = np.argwhere(metrics.surface(a)) * sp
  pb = np.argwhere(metrics.surface(b)) * sp
  d = cdist(pa, pb)
  for q in (95.0, 100.0, 50.0):
    want = max(np.percentile(d.min(1), q), np.percentile(d.min(0), q))
    assert metrics.hausdorff_mm(a, b, sp, q) == pytest.approx(want, rel=1e-9)


def test_bad_spacing_raises():
  m = np.ones((4, 4))
  with pytest.raises(ValueError, match="spacing"):
    metrics.hd95_mm(m, m, (0.1, float("nan")))


def test_hc_differences_and_nan():
  np.testing.assert_allclose(metrics.hc_abs_diff_mm([101.0, 95.0], [100.0, 100.0]), [1.0, 5.0])
  np.testing.assert_allclose(metrics.hc_rel_diff([101.0, 95.0], [100.0, 100.0]), [0.01, 0.05])
  assert np.isnan(metrics.hc_abs_diff_mm(math.nan, 100.0))
  assert np.isnan(metrics.hc_rel_diff(100.0, math.nan))


def test_summarize_counts_non_finite():
  s = metrics.summarize([1.0, 3.0, math.inf, math.nan])
  assert s["n"] == 4 and s["n_finite"] == 2
  assert s["mean"] == 2.0 and s["median"] == 2.0
