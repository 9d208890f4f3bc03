"""Realism statistics (fbjax.phantom.realism) against analytic cases."""

import math
import os

import cv2
import numpy as np
import pytest

from fbjax.phantom import realism, realism_table


def _blurred_noise(shape, sigma_r, sigma_c, seed=0):
  x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
  return cv2.GaussianBlur(x, (0, 0), sigmaX=sigma_c, sigmaY=sigma_r)


def test_autocorr_fwhm_of_gaussian_blurred_noise():
  # white noise blurred by a Gaussian of sigma s has a Gaussian autocorrelation
  # of sigma s sqrt(2): FWHM = 2 sqrt(2 ln 2) sqrt(2) s = 3.330 s
  img = _blurred_noise((400, 500), 1.5, 4.0)
  region = np.ones(img.shape, bool)
  ax, lat = realism.autocorr_fwhm(img, region, None)
  k = 2 * math.sqrt(2 * math.log(2)) * math.sqrt(2)
  assert ax == pytest.approx(k * 1.5, rel=0.06)
  assert lat == pytest.approx(k * 4.0, rel=0.06)


def test_autocorr_fwhm_independent_of_region_shape():
  img = _blurred_noise((400, 400), 2.0, 2.0, seed=1)
  full = realism.autocorr_fwhm(img, np.ones(img.shape, bool), None)
  disc = np.zeros(img.shape, np.uint8)
  cv2.circle(disc, (200, 200), 120, 1, -1)
  part = realism.autocorr_fwhm(img, disc > 0, None)
  np.testing.assert_allclose(part, full, rtol=0.08)


def _ellipse_image(ring, interior, size=(300, 400)):
  mask = np.zeros(size, np.uint8)
  cv2.ellipse(mask, ((200, 150), (300, 220), 20), 1, -1)
  img = np.full(size, 20, np.uint8)
  img[mask > 0] = ring
  inner = np.zeros(size, np.uint8)
  cv2.ellipse(inner, ((200, 150), (300 * 0.85, 220 * 0.85), 20), 1, -1)
  img[inner > 0] = interior
  return img, mask


def test_measure_ring_interior_and_grey_levels():
  img, mask = _ellipse_image(180, 60)
  m = realism.measure(img, mask, 0.2)
  assert m["ring"] == pytest.approx(180, abs=6)     # the band 0.88-1.0 is the bright ring
  assert m["interior"] == 60
  assert m["ring_over_interior"] == pytest.approx(3.0, rel=0.04)
  inside = img[realism.ellipse_radius(mask) < 1.0]
  assert m["grey_p50"] == np.percentile(inside, 50)
  assert m["grey_mean"] == pytest.approx(inside.mean())
  assert sum(m["hist"]) == inside.size


def test_grain_in_mm_does_not_depend_on_pixel_spacing():
  # the same speckle pattern seen at two pixel spacings: same grain in mm
  fine = _blurred_noise((600, 800), 3.0, 6.0, seed=2) * 20 + 100
  coarse = cv2.resize(cv2.GaussianBlur(fine, (0, 0), 0.87), None, fx=0.5, fy=0.5,
                      interpolation=cv2.INTER_LINEAR)
  mask = np.zeros(fine.shape, np.uint8)
  cv2.ellipse(mask, ((400, 300), (700, 520), 0), 1, -1)
  small_mask = cv2.resize(mask, coarse.shape[::-1], interpolation=cv2.INTER_NEAREST)
  a = realism.measure(np.clip(fine, 1, 255).astype(np.uint8), mask, 0.1)
  b = realism.measure(np.clip(coarse, 1, 255).astype(np.uint8), small_mask, 0.2)
  assert b["grain_lateral_mm"] == pytest.approx(a["grain_lateral_mm"], rel=0.12)
  assert b["grain_axial_mm"] == pytest.approx(a["grain_axial_mm"], rel=0.15)


def test_emd_and_terciles():
  h1 = np.zeros(256)
  h1[10] = 1
  h2 = np.zeros(256)
  h2[30] = 3          # unnormalised: same as one unit of mass at 30
  assert realism.emd(h1, h2) == pytest.approx(20.0)
  np.testing.assert_array_equal(realism.terciles(np.arange(9)), [0, 0, 0, 1, 1, 1, 2, 2, 2])
  np.testing.assert_array_equal(realism.terciles([1, 5, 9], (4, 6)), [0, 1, 2])


def test_empty_mask_is_a_clear_error():
  with pytest.raises(ValueError, match="no region"):
    realism.measure(np.zeros((40, 40), np.uint8), np.zeros((40, 40), np.uint8), 0.2)


REAL = os.environ.get("FBJAX_REAL_DATA")


@pytest.mark.skipif(not REAL, reason="FBJAX_REAL_DATA not set")
def test_realism_table_tuning_and_held_out_halves_by_patient():
  tune, held = realism_table.hc18_subset(REAL, "tune"), realism_table.hc18_subset(REAL, "held_out")
  assert len(tune) + len(held) == 798
  groups = lambda items: {realism_table.hc18_group(it[0]) for it in items}  # noqa: E731
  assert not groups(tune) & groups(held)
  assert 0.4 < len(tune) / 798 < 0.6
  assert not set(realism_table.TUNE_SEEDS) & set(realism_table.HELD_OUT_SEEDS)
  t = realism_table.realism_table(REAL, "held_out", num_native=2, num_256=4, hc18_limit=6)
  for name in ("native", "256"):
    rows = t[name]["by_tercile"]
    assert rows["all"]["phantom"]["n"] == (2 if name == "native" else 4)
    assert rows["all"]["hc18"]["n"] == t["hc18_images"] >= 6
    r = rows["all"]
    assert r["ratio"]["grey_mean"] == pytest.approx(
        r["phantom"]["grey_mean"] / r["hc18"]["grey_mean"])
    assert t[name]["worst_rel_dev"] >= r["worst_rel_dev"] >= 0
  # the 256-px HC18 images have the phantom's 256-px spacing: 800 / 256 times HC18's
  assert t["256"]["by_tercile"]["all"]["hc18"]["spacing_mm"] == pytest.approx(
      t["native"]["by_tercile"]["all"]["hc18"]["spacing_mm"] * 800 / 256, rel=0.02)
