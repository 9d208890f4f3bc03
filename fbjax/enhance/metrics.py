"""Image-quality metrics: pure `jnp`, batched, one value per image.

All functions take (B, H, W) float arrays and return (B,) float32. Regions
are boolean masks (B, H, W) or (H, W). What degenerate input returns is part
of the contract (and tested):

- `psnr`: identical images -> +inf.
- `ssim`: constant images are handled by the stabilising constants C1, C2
  (two equal constant images -> 1).
- `enl`: empty region -> NaN; zero variance -> +inf.
- `cnr`: either region empty -> NaN; both regions constant and equal means
  -> NaN (0 / 0), different means -> +inf.
- `edge_preservation`: an image without edges (zero Laplacian) -> NaN.

References: Wang, Bovik, Sheikh & Simoncelli 2004 (SSIM); Sattar, Floreby,
Salomonsson & Lovstrom 1997 (edge preservation index); ENL and CNR as used
for speckle filters in ultrasound (e.g. Yu & Acton 2002).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fbjax.enhance.filters import _sep_conv


def _pair(x, y, name):
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  if x.ndim != 3 or x.shape != y.shape:
    raise ValueError(f"{name}: expected two (B, H, W) arrays of equal shape, "
                     f"got {x.shape} and {y.shape}")
  return x, y


def psnr(x, ref, data_range: float = 1.0) -> jax.Array:
  """Peak signal-to-noise ratio in dB: 10 log10(data_range^2 / MSE)."""
  x, ref = _pair(x, ref, "psnr")
  mse = jnp.mean(jnp.square(x - ref), axis=(1, 2))
  return 10.0 * jnp.log10(data_range ** 2 / mse)


def ssim(x, ref, data_range: float = 1.0, sigma: float = 1.5, truncate: float = 3.5,
         k1: float = 0.01, k2: float = 0.03, return_map: bool = False):
  """Mean structural similarity with a Gaussian window (Wang et al. 2004).

  Local statistics use an isotropic Gaussian of std `sigma` (1.5), cut at
  `truncate` sigma (an 11x11 window), population (co)variances, C1 =
  (k1 L)^2, C2 = (k2 L)^2. The mean runs over the pixels whose window lies
  inside the image, the same convention and numbers as
  `skimage.metrics.structural_similarity(..., gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=L)`.

  Returns (B,) mean SSIM, or with `return_map` also the (B, H - 2r, W - 2r)
  map.
  """
  x, ref = _pair(x, ref, "ssim")
  r = int(truncate * sigma + 0.5)
  if x.shape[1] <= 2 * r or x.shape[2] <= 2 * r:
    raise ValueError(f"ssim: images of {x.shape[1:]} are smaller than the "
                     f"{2 * r + 1}x{2 * r + 1} window")
  t = np.arange(-r, r + 1, dtype=np.float64)
  k = np.exp(-0.5 * (t / sigma) ** 2)
  k = (k / k.sum()).astype(np.float32)

  def blur(v):
    return _sep_conv(v, k, k, None)

  mx, my = blur(x), blur(ref)
  vx = blur(x * x) - mx * mx
  vy = blur(ref * ref) - my * my
  cxy = blur(x * ref) - mx * my
  c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
  smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
  mean = jnp.mean(smap, axis=(1, 2))
  return (mean, smap) if return_map else mean


def _region_stats(x, mask):
  m = jnp.broadcast_to(jnp.asarray(mask, bool), x.shape)
  n = m.sum(axis=(1, 2)).astype(jnp.float32)
  mean = jnp.where(m, x, 0.0).sum(axis=(1, 2)) / n
  var = jnp.where(m, jnp.square(x - mean[:, None, None]), 0.0).sum(axis=(1, 2)) / n
  return mean, var


def _image(x, name):
  x = jnp.asarray(x, jnp.float32)
  if x.ndim != 3:
    raise ValueError(f"{name}: expected (B, H, W) images, got shape {x.shape}")
  return x


def enl(x, mask) -> jax.Array:
  """Equivalent number of looks mean^2 / variance over a region (population variance).

  Fully developed speckle in intensity with L looks has ENL = L; higher is
  smoother.
  """
  x = _image(x, "enl")
  mean, var = _region_stats(x, mask)
  return jnp.square(mean) / var


def cnr(x, mask_a, mask_b) -> jax.Array:
  """Contrast-to-noise ratio |mu_a - mu_b| / sqrt(var_a + var_b) between two regions."""
  x = _image(x, "cnr")
  ma, va = _region_stats(x, mask_a)
  mb, vb = _region_stats(x, mask_b)
  return jnp.abs(ma - mb) / jnp.sqrt(va + vb)


def _laplacian(x):
  """4-neighbour Laplacian on the interior (no border handling needed)."""
  return (x[:, :-2, 1:-1] + x[:, 2:, 1:-1] + x[:, 1:-1, :-2] + x[:, 1:-1, 2:]
          - 4.0 * x[:, 1:-1, 1:-1])


def edge_preservation(x, ref, mask=None) -> jax.Array:
  """Edge preservation index (Sattar et al. 1997).

  The correlation coefficient between the Laplacians (high-pass parts) of the
  filtered image `x` and of the reference `ref`:

    EPI = sum (dS - mean dS)(dR - mean dR) / sqrt(sum (dS - mean dS)^2 sum (dR - mean dR)^2)

  over the interior pixels (one pixel in from the border) inside `mask`
  (optional). 1 means the edges of `ref` are kept exactly (up to a gain).
  Use the clean image as `ref` where it exists (the phantom), else the input.
  """
  x, ref = _pair(x, ref, "edge_preservation")
  ds, dr = _laplacian(x), _laplacian(ref)
  if mask is None:
    m = jnp.ones_like(ds, bool)
  else:
    m = jnp.broadcast_to(jnp.asarray(mask, bool), x.shape)[:, 1:-1, 1:-1]
  n = m.sum(axis=(1, 2)).astype(jnp.float32)

  def centred(v):
    mu = jnp.where(m, v, 0.0).sum(axis=(1, 2)) / n
    return jnp.where(m, v - mu[:, None, None], 0.0)

  a, b = centred(ds), centred(dr)
  num = (a * b).sum(axis=(1, 2))
  return num / jnp.sqrt((a * a).sum(axis=(1, 2)) * (b * b).sum(axis=(1, 2)))
