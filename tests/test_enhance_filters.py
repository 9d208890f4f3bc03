"""Enhancement filters against OpenCV and NumPy references (fbjax/enhance/filters.py).

OpenCV works on 8-bit images and rounds its output; the fbjax filters take
float images. The inputs here are 8-bit levels / 255, and 8-bit fbjax outputs
are compared as round(255 y). Where the filter reproduces OpenCV's arithmetic
the expected difference is exactly 0 levels.
"""

import contextlib

import chex
import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from fbjax.enhance import filters as F
from tests import enhance_reference as ref


def speckle_images(b=3, h=37, w=53, seed=0):
  """8-bit speckled images with structure, a black band and saturated pixels."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:h, :w]
  out = []
  for i in range(b):
    base = 0.35 + 0.25 * np.sin(xx / (5.0 + i)) * np.cos(yy / 7.0)
    base[h // 3:h // 2, w // 4:w // 2] = 0.85
    im = np.clip(base * rng.rayleigh(0.55, (h, w)), 0, 1)
    im[:4] = 0.0
    out.append(np.round(im * 255).astype(np.uint8))
  return np.stack(out)


U8 = speckle_images()
X = U8.astype(np.float32) / 255


def levels(y):
  return np.round(np.asarray(y, np.float64) * 255)


def max_level_diff(y, expected_u8):
  return float(np.abs(levels(y) - expected_u8.astype(np.float64)).max())


@contextlib.contextmanager
def no_ipp():
  """OpenCV's own C++ code path (its IPP path rounds differently, see below)."""
  old = cv2.ipp.useIPP()
  cv2.ipp.setUseIPP(False)
  try:
    yield
  finally:
    cv2.ipp.setUseIPP(old)


class AgainstReferenceTest(chex.TestCase, parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(3, 5, 7)
  def test_median_equals_cv2_median_blur(self, size):
    expected = np.stack([cv2.medianBlur(a, size) for a in U8])
    got = self.variant(lambda x: F.median(x, size))(X)
    self.assertEqual(max_level_diff(got, expected), 0.0)
    # The median of levels/255 is itself a level/255: exact in float too.
    np.testing.assert_array_equal(np.asarray(got), expected.astype(np.float32) / 255)

  @chex.variants(with_jit=True, without_jit=True)
  def test_equalize_hist_equals_cv2(self):
    expected = np.stack([cv2.equalizeHist(a) for a in U8])
    self.assertEqual(max_level_diff(self.variant(F.equalize_hist)(X), expected), 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  def test_clahe_equals_cv2_defaults(self):
    # OpenCV's defaults (clip 40, 8x8 tiles) on 37x53: both sides padded.
    expected = np.stack([cv2.createCLAHE().apply(a) for a in U8])
    self.assertEqual(max_level_diff(self.variant(F.clahe)(X), expected), 0.0)

  @parameterized.parameters(
      (2.0, (8, 8), (32, 48)),     # divisible: no padding
      (3.0, (4, 6), (36, 53)),     # H divides, W does not: OpenCV pads H by a whole tile row
      (0.0, (3, 5), (37, 53)),     # no clipping
      (1.0, (2, 2), (37, 53)),     # clip limit 1 -> residual redistribution
      (4.0, (8, 8), (3, 5)),       # image smaller than the grid: pads wrap around
  )
  def test_clahe_equals_cv2(self, clip_limit, tiles, shape):
    u8 = speckle_images(2, *shape, seed=1)
    cl = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles[1], tiles[0]))
    expected = np.stack([cl.apply(a) for a in u8])
    got = jax.jit(lambda x: F.clahe(x, clip_limit, tiles))(u8.astype(np.float32) / 255)
    self.assertEqual(max_level_diff(got, expected), 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  def test_bilateral_equals_cv2(self):
    with no_ipp():
      expected = np.stack([cv2.bilateralFilter(a, 5, 25.5, 2.0) for a in U8])
    got = self.variant(lambda x: F.bilateral(x, 5, 0.1, 2.0))(X)
    self.assertEqual(max_level_diff(got, expected), 0.0)

  @parameterized.parameters((3, 10.0, 1.0), (9, 50.0, 3.0), (0, 20.0, 2.0))
  def test_bilateral_equals_cv2_other_windows(self, d, sigma_color, sigma_space):
    with no_ipp():
      expected = np.stack([cv2.bilateralFilter(a, d, sigma_color, sigma_space) for a in U8])
    got = jax.jit(lambda x: F.bilateral(x, d, sigma_color / 255, sigma_space))(X)
    self.assertEqual(max_level_diff(got, expected), 0.0)

  def test_bilateral_vs_cv2_ipp_path(self):
    # With IPP (the default in the opencv-python wheels) OpenCV takes Intel's
    # bilateral for small windows, which truncates instead of rounding: the
    # float result lies in [ipp, ipp + 1) levels up to IPP's own weight
    # approximation, so the rounded outputs differ by at most one level.
    old = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(True)
    try:
      expected = np.stack([cv2.bilateralFilter(a, 5, 25.5, 2.0) for a in U8])
    finally:
      cv2.ipp.setUseIPP(old)
    got = F.bilateral(X, 5, 0.1, 2.0)
    self.assertLessEqual(max_level_diff(got, expected), 1.0)

  @chex.variants(with_jit=True, without_jit=True)
  def test_prototype_equals_cv2_chain(self):
    expected = np.stack([cv2.medianBlur(cv2.equalizeHist(a), 5) for a in U8])
    self.assertEqual(max_level_diff(self.variant(F.prototype)(X), expected), 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters((0.25, 30, 0.1, 0.0), (0.1, 20, 0.5, 1 / 6), (0.5, 15, 1.0, 0.0))
  def test_srad_equals_numpy_paper_reference(self, q0, iterations, dt, rho):
    expected = np.stack([ref.srad(a, q0, iterations, dt, rho) for a in X])
    got = np.asarray(self.variant(lambda x: F.srad(x, q0, iterations, dt, rho))(X))
    self.assertLess(np.abs(got - expected).max(), 2e-6)
    self.assertGreater(np.abs(expected - X).max(), 0.05)  # it did diffuse

  @chex.variants(with_jit=True, without_jit=True)
  def test_nl_means_equals_brute_force(self):
    x = X[:2, :14, :17]
    expected = np.stack([ref.nl_means(a, 0.1, 3, 5, 0.02) for a in x])
    got = np.asarray(self.variant(lambda v: F.nl_means(v, 0.1, 3, 5, 0.02))(x))
    self.assertLess(np.abs(got - expected).max(), 2e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_guided_nl_means_equals_brute_force(self):
    x = X[:2, :14, :17]
    g = np.asarray(F.gaussian_blur(x, 1.0))
    expected = np.stack([ref.nl_means(a, 0.05, 3, 5, guide=b) for a, b in zip(x, g, strict=True)])
    got = np.asarray(self.variant(lambda v, w: F.nl_means(v, 0.05, 3, 5, guide=w))(x, g))
    self.assertLess(np.abs(got - expected).max(), 2e-6)
    first = np.asarray(F.nl_means(x, 0.1, 3, 5))
    two = np.asarray(self.variant(lambda v: F.nl_means_2pass(v, 0.1, 0.05, 3, 5))(x))
    np.testing.assert_allclose(two, np.asarray(F.nl_means(x, 0.05, 3, 5, guide=first)), atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_unsharp_mask_equals_cv2(self):
    blur = np.stack([cv2.GaussianBlur(a, (13, 13), 2.0, borderType=cv2.BORDER_REFLECT_101)
                     for a in X])
    expected = np.clip(X + 0.7 * (X - blur), 0, 1)
    got = np.asarray(self.variant(lambda x: F.unsharp_mask(x, 2.0, 0.7))(X))
    self.assertLess(np.abs(got - expected).max(), 1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_point_operations(self):
    x64 = X.astype(np.float64)
    got = np.asarray(self.variant(lambda x: F.log_compress(x, 50.0))(X))
    np.testing.assert_allclose(got, np.log1p(50 * x64) / np.log1p(50), atol=1e-6)
    got = np.asarray(self.variant(lambda x: F.gamma(x, 0.6))(X))
    np.testing.assert_allclose(got, x64 ** 0.6, atol=1e-6)


def test_srad_keeps_range_and_mean():
  # The clipped coefficient makes each step a convex combination and the
  # scheme is conservative (flux form, Neumann border): the range cannot grow
  # and the mean is kept.
  y = np.asarray(F.srad(X, 0.2, 40, 1.0))
  assert y.min() >= X.min() - 1e-6 and y.max() <= X.max() + 1e-6
  np.testing.assert_allclose(y.mean(axis=(1, 2)), X.mean(axis=(1, 2)), rtol=1e-5)


def test_estimate_q0_on_gamma_speckle():
  # Intensity speckle with L looks: std / mean = 1 / sqrt(L).
  rng = np.random.default_rng(0)
  x = rng.gamma(4.0, 0.05, (2, 128, 128)).astype(np.float32)
  q0 = np.asarray(F.estimate_q0(x, np.ones((128, 128), bool)))
  np.testing.assert_allclose(q0, 0.5, rtol=0.03)


def test_pad_matches_opencv_borders():
  a = np.arange(20, dtype=np.float32).reshape(1, 4, 5)
  for mode, cv_mode in (("reflect", cv2.BORDER_REFLECT_101), ("symmetric", cv2.BORDER_REFLECT),
                        ("edge", cv2.BORDER_REPLICATE)):
    got = np.asarray(F._pad(jnp.asarray(a), 3, 6, mode))[0]
    np.testing.assert_array_equal(got, cv2.copyMakeBorder(a[0], 3, 3, 6, 6, cv_mode))


# ---------------------------------------------------------------------------
# Bad input: constant image, NaN, empty batch, wrong shape or dtype
# ---------------------------------------------------------------------------

ALL = {
    "median": lambda x: F.median(x, 5), "equalize_hist": F.equalize_hist, "clahe": F.clahe,
    "bilateral": F.bilateral, "nl_means": lambda x: F.nl_means(x, 0.1, 3, 5),
    "nl_means_2pass": lambda x: F.nl_means_2pass(x, 0.1, 0.05, 3, 5),
    "srad": lambda x: F.srad(x, 0.2, 5), "unsharp_mask": F.unsharp_mask,
    "log_compress": F.log_compress, "gamma": F.gamma, "prototype": F.prototype,
    "gaussian_blur": lambda x: F.gaussian_blur(x, 1.0),
}


@pytest.mark.parametrize("name", sorted(ALL))
def test_constant_image(name):
  c = np.float32(100 / 255)
  x = np.full((2, 24, 40), c, np.float32)
  y = np.asarray(jax.jit(ALL[name])(x))
  assert np.isfinite(y).all()
  assert np.ptp(y) == 0, name          # stays constant
  expected = {
      "log_compress": np.log1p(100 * c) / np.log1p(100), "gamma": c ** 0.5,
      # cv2.equalizeHist returns a constant image unchanged.
      "equalize_hist": c, "prototype": c,
      # CLAHE: one full bin per tile, clipped and spread evenly.
      "clahe": cv2.createCLAHE(40.0, (8, 8)).apply(np.full((24, 40), 100, np.uint8))[0, 0] / 255,
  }.get(name, c)
  np.testing.assert_allclose(y, expected, atol=1e-6)


@pytest.mark.parametrize("name", sorted(ALL))
def test_nan_poisons_only_its_image(name):
  x = X.copy()
  x[1, 5, 7] = np.nan
  y = np.asarray(jax.jit(ALL[name])(x))
  assert np.isnan(y[1]).all(), name
  clean = np.asarray(jax.jit(ALL[name])(X[[0, 2]]))
  np.testing.assert_allclose(y[[0, 2]], clean, atol=1e-6)


@pytest.mark.parametrize("name", sorted(ALL))
def test_empty_batch(name):
  y = ALL[name](np.zeros((0, 24, 40), np.float32))
  assert y.shape == (0, 24, 40) and y.dtype == jnp.float32


@pytest.mark.parametrize("name", sorted(ALL))
def test_wrong_shape_or_dtype_raises(name):
  with pytest.raises(ValueError, match=r"\(B, H, W\)"):
    ALL[name](np.zeros((24, 40), np.float32))
  with pytest.raises(ValueError, match="divide 8-bit images by 255"):
    ALL[name](np.zeros((1, 24, 40), np.uint8))


def test_bad_parameters_raise():
  with pytest.raises(ValueError, match="odd"):
    F.median(X, 4)
  with pytest.raises(ValueError, match="sigma_space"):
    F.bilateral(X, 5, 0.1, 0.0)
  with pytest.raises(ValueError, match="tiles"):
    F.clahe(X, 2.0, (0, 8))


def test_check_images_names_the_problem():
  x = X.copy()
  x[2, 0, 0] = np.nan
  with pytest.raises(ValueError, match="image 2 contains NaN"):
    F.check_images(x)
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    F.check_images(X * 2)
  np.testing.assert_array_equal(F.check_images(X), X)
