"""Image-quality metrics against scikit-image, SciPy and analytic cases."""

import chex
import numpy as np
import pytest
from absl.testing import parameterized
from scipy import ndimage
from skimage import metrics as skm

from fbjax.enhance import metrics as M

RNG = np.random.default_rng(0)
A = RNG.random((3, 40, 52)).astype(np.float32)
B = np.clip(A + 0.1 * RNG.standard_normal(A.shape), 0, 1).astype(np.float32)


class AgainstReferenceTest(chex.TestCase, parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_psnr_equals_skimage(self):
    expected = [skm.peak_signal_noise_ratio(A[i], B[i], data_range=1.0) for i in range(3)]
    np.testing.assert_allclose(self.variant(M.psnr)(B, A), expected, atol=1e-4)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(1.0, 2.0)
  def test_ssim_equals_skimage_gaussian(self, data_range):
    a, b = A * data_range, B * data_range
    expected = [skm.structural_similarity(a[i].astype(np.float64), b[i].astype(np.float64),
                                          gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False, data_range=data_range)
                for i in range(3)]
    got = self.variant(lambda x, y: M.ssim(x, y, data_range=data_range))(a, b)
    np.testing.assert_allclose(got, expected, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_edge_preservation_equals_scipy_laplace_correlation(self):
    def reference(x, r):
      dx, dr = ndimage.laplace(x.astype(np.float64)), ndimage.laplace(r.astype(np.float64))
      return np.corrcoef(dx[1:-1, 1:-1].ravel(), dr[1:-1, 1:-1].ravel())[0, 1]
    expected = [reference(B[i], A[i]) for i in range(3)]
    np.testing.assert_allclose(self.variant(M.edge_preservation)(B, A), expected, atol=1e-5)


def test_psnr_identical_is_inf():
  assert np.isinf(np.asarray(M.psnr(A, A))).all()


def test_ssim_identical_and_constant():
  np.testing.assert_allclose(M.ssim(A, A), 1.0, atol=1e-6)
  c = np.full((1, 20, 20), 0.3, np.float32)
  np.testing.assert_allclose(M.ssim(c, c), 1.0, atol=1e-6)


def test_ssim_too_small_raises():
  with pytest.raises(ValueError, match="smaller than the 11x11 window"):
    M.ssim(A[:, :8, :8], B[:, :8, :8])
  with pytest.raises(ValueError, match="equal shape"):
    M.ssim(A, B[:2])


def test_enl_of_gamma_speckle_is_number_of_looks():
  # Intensity speckle averaged over L looks is Gamma(L, mu / L): ENL = L.
  rng = np.random.default_rng(1)
  x = rng.gamma(4.0, 0.1, (2, 256, 256)).astype(np.float32)
  np.testing.assert_allclose(M.enl(x, np.ones((256, 256), bool)), 4.0, rtol=0.03)


def test_enl_and_cnr_exact_values_and_degenerate_regions():
  x = np.zeros((1, 4, 4), np.float32)
  x[0, :2] = [[0.2, 0.4, 0.2, 0.4], [0.4, 0.2, 0.4, 0.2]]     # mean 0.3, var 0.01
  x[0, 2:] = [[0.6, 0.8, 0.6, 0.8], [0.8, 0.6, 0.8, 0.6]]     # mean 0.7, var 0.01
  top = np.zeros((4, 4), bool)
  top[:2] = True
  np.testing.assert_allclose(M.enl(x, top), 0.09 / 0.01, rtol=1e-5)
  np.testing.assert_allclose(M.cnr(x, top, ~top), 0.4 / np.sqrt(0.02), rtol=1e-5)
  empty = np.zeros((4, 4), bool)
  assert np.isnan(M.enl(x, empty)).all() and np.isnan(M.cnr(x, top, empty)).all()
  flat = np.full((1, 4, 4), 0.5, np.float32)
  assert np.isinf(M.enl(flat, top)).all()
  assert np.isnan(M.cnr(flat, top, ~top)).all()           # 0 / 0


def test_edge_preservation_invariances():
  np.testing.assert_allclose(M.edge_preservation(A, A), 1.0, atol=1e-6)
  np.testing.assert_allclose(M.edge_preservation(0.5 * A + 0.2, A), 1.0, atol=1e-5)
  np.testing.assert_allclose(M.edge_preservation(1.0 - A, A), -1.0, atol=1e-5)
  mask = np.zeros((40, 52), bool)
  mask[5:30, 10:40] = True
  inside = M.edge_preservation(B, A, mask)
  ref = [np.corrcoef(ndimage.laplace(B[i].astype(np.float64))[mask].ravel(),
                     ndimage.laplace(A[i].astype(np.float64))[mask].ravel())[0, 1]
         for i in range(3)]
  np.testing.assert_allclose(inside, ref, atol=1e-5)
  flat = np.full((1, 20, 20), 0.5, np.float32)
  assert np.isnan(M.edge_preservation(flat, flat)).all()
