"""Independent NumPy references for the enhancement filters (used by tests and benchmarks).

Written from the papers' equations, pixel-index style (clamped neighbour
indices rather than padding), in float64, so they share no code with
`fbjax.enhance.filters`.
"""

from __future__ import annotations

import numpy as np


def srad(image: np.ndarray, q0: float, iterations: int, dt: float, rho: float = 0.0,
         eps: float = 1e-3) -> np.ndarray:
  """SRAD, Yu & Acton, IEEE TIP 11(11) 2002, eqs. (33), (35), (37), (58) with h = 1.

  One (H, W) image. Neumann boundary: neighbour indices are clamped.
  The diffusion coefficient is clipped to [0, 1]; I is floored at `eps` in
  the ratios (the sector background of a B-mode image is 0).
  """
  i_img = np.asarray(image, np.float64).copy()
  h, w = i_img.shape
  north = np.clip(np.arange(h) - 1, 0, h - 1)
  south = np.clip(np.arange(h) + 1, 0, h - 1)
  west = np.clip(np.arange(w) - 1, 0, w - 1)
  east = np.clip(np.arange(w) + 1, 0, w - 1)
  for n in range(iterations):
    t = n * dt
    q0_t = q0 * np.exp(-rho * t)                                   # eq. (37)
    grad_r = np.stack([i_img[south, :] - i_img, i_img[:, east] - i_img])    # forward
    grad_l = np.stack([i_img - i_img[north, :], i_img - i_img[:, west]])    # backward
    lap = (i_img[south, :] + i_img[north, :] + i_img[:, east] + i_img[:, west]
           - 4.0 * i_img)
    ii = np.maximum(i_img, eps)
    grad2 = (grad_r ** 2).sum(0) + (grad_l ** 2).sum(0)
    num = 0.5 * grad2 / ii ** 2 - (1.0 / 16.0) * (lap / ii) ** 2
    den = np.maximum((1.0 + 0.25 * lap / ii) ** 2, 1e-12)
    q2 = num / den                                                  # eq. (35)
    c = 1.0 / (1.0 + (q2 - q0_t ** 2) / (q0_t ** 2 * (1.0 + q0_t ** 2)))   # eq. (33)
    c = np.clip(c, 0.0, 1.0)
    d = (c[south, :] * (i_img[south, :] - i_img) + c * (i_img[north, :] - i_img)
         + c[:, east] * (i_img[:, east] - i_img) + c * (i_img[:, west] - i_img))
    i_img = i_img + dt / 4.0 * d                                    # eq. (58)
  return i_img


def nl_means(image: np.ndarray, h: float, patch: int, search: int, sigma: float = 0.0,
             guide: np.ndarray | None = None):
  """Brute-force non-local means (Buades et al. 2005), one pixel at a time.

  Uniform patch weights, w = exp(-max(d2 - 2 sigma^2, 0) / h^2), reflect-101
  borders (numpy "reflect"). With `guide`, d2 is measured on the guide and the
  image's values are averaged. Only for small images.
  """
  img = np.asarray(image, np.float64)
  rp, rs = patch // 2, search // 2
  p = np.pad(img, rp + rs, mode="reflect")
  g = p if guide is None else np.pad(np.asarray(guide, np.float64), rp + rs, mode="reflect")
  out = np.empty_like(img)
  for y in range(img.shape[0]):
    for x in range(img.shape[1]):
      cy, cx = y + rp + rs, x + rp + rs
      ref = g[cy - rp:cy + rp + 1, cx - rp:cx + rp + 1]
      num = den = 0.0
      for dy in range(-rs, rs + 1):
        for dx in range(-rs, rs + 1):
          qy, qx = cy + dy, cx + dx
          cand = g[qy - rp:qy + rp + 1, qx - rp:qx + rp + 1]
          d2 = np.mean((cand - ref) ** 2)
          wt = np.exp(-max(d2 - 2 * sigma ** 2, 0.0) / h ** 2)
          num += wt * p[qy, qx]
          den += wt
      out[y, x] = num / den
  return out
