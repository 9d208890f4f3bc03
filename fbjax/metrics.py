"""Evaluation metrics: pure functions of arrays, one value per example.

Sections: segmentation (overlap, surface distance), biometry. Reductions
over a data set are left to the caller (per-example values plus masks).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

# ---------------------------------------------------------------------------
# Segmentation
# ---------------------------------------------------------------------------
#
# Empty masks (documented, tested):
#   dice:        both empty -> 1.0 (perfect agreement on "nothing");
#                exactly one empty -> 0.0.
#   hausdorff:   both empty -> 0.0 mm; exactly one empty -> inf (the distance
#                to an empty set). Summaries should count infs as failures
#                rather than average them.


def dice(pred, ref, *, axis=(-2, -1)):
  """Dice = 2|P & R| / (|P| + |R|) per example (masks are nonzero = inside).

  Works on numpy or jax arrays of shape (..., H, W); returns shape (...).
  """
  if hasattr(pred, "devices") or hasattr(ref, "devices"):  # jax arrays: stay on device
    import jax.numpy as xp
  else:
    xp = np
  p = xp.asarray(pred) > 0
  r = xp.asarray(ref) > 0
  inter = xp.sum(p & r, axis=axis).astype(xp.float32)
  total = (xp.sum(p, axis=axis) + xp.sum(r, axis=axis)).astype(xp.float32)
  return xp.where(total > 0, 2.0 * inter / xp.maximum(total, 1.0), 1.0)


def _spacing(spacing_mm, ndim: int = 2) -> tuple[float, ...]:
  s = np.broadcast_to(np.asarray(spacing_mm, np.float64), (ndim,))
  if not np.all(np.isfinite(s)) or np.any(s <= 0):
    raise ValueError(f"pixel spacing must be positive and finite, got {spacing_mm}")
  return tuple(float(v) for v in s)


def surface(mask) -> np.ndarray:
  """Boundary pixels: inside pixels with a 4-neighbour outside (or off the image)."""
  m = np.asarray(mask) > 0
  return m & ~ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(2, 1),
                                     border_value=0)


def surface_distances(a, b, spacing_mm=1.0) -> np.ndarray:
  """Distances (mm) from each boundary pixel of `a` to the nearest of `b`.

  `spacing_mm` is a scalar or (row, column) spacing for anisotropic pixels.
  """
  sp = _spacing(spacing_mm)
  sa, sb = surface(a), surface(b)
  if not sb.any():
    return np.full(int(sa.sum()), np.inf)
  dt = ndimage.distance_transform_edt(~sb, sampling=sp)
  return dt[sa]


def hausdorff_mm(pred, ref, spacing_mm=1.0, percentile: float = 95.0) -> float:
  """Symmetric percentile Hausdorff distance in mm (default HD95), one 2-D pair.

  max(P-th percentile of d(pred -> ref), P-th percentile of d(ref -> pred)),
  over boundary pixel centres (as MONAI's `compute_hausdorff_distance` with
  `directed=False`). percentile=100 is the classical Hausdorff distance.
  """
  p, r = np.asarray(pred) > 0, np.asarray(ref) > 0
  if p.shape != r.shape or p.ndim != 2:
    raise ValueError(f"expected two HxW masks of one shape, got {p.shape} and {r.shape}")
  if not p.any() and not r.any():
    return 0.0
  if not p.any() or not r.any():
    return math.inf
  d1 = surface_distances(p, r, spacing_mm)
  d2 = surface_distances(r, p, spacing_mm)
  return float(max(np.percentile(d1, percentile), np.percentile(d2, percentile)))


def hd95_mm(pred, ref, spacing_mm=1.0) -> float:
  return hausdorff_mm(pred, ref, spacing_mm, 95.0)


# ---------------------------------------------------------------------------
# Biometry
# ---------------------------------------------------------------------------
#
# A NaN on either side (no prediction, or no reference) gives NaN.


def abs_diff(pred, ref):
  """|pred - ref| elementwise (e.g. HC absolute difference in mm)."""
  return np.abs(np.asarray(pred, np.float64) - np.asarray(ref, np.float64))


def rel_diff(pred, ref):
  """|pred - ref| / |ref| elementwise (a fraction: 0.01 = 1 %)."""
  ref = np.asarray(ref, np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    return abs_diff(pred, ref) / np.abs(ref)


def hc_abs_diff_mm(pred_hc_mm, ref_hc_mm):
  return abs_diff(pred_hc_mm, ref_hc_mm)


def hc_rel_diff(pred_hc_mm, ref_hc_mm):
  return rel_diff(pred_hc_mm, ref_hc_mm)


def summarize(values) -> dict:
  """Mean, median, std, 95th percentile over finite values, plus counts."""
  v = np.asarray(values, np.float64).ravel()
  f = v[np.isfinite(v)]
  out = {"n": int(v.size), "n_finite": int(f.size)}
  if f.size:
    out.update(mean=float(f.mean()), median=float(np.median(f)), std=float(f.std()),
               p95=float(np.percentile(f, 95)), min=float(f.min()), max=float(f.max()))
  else:
    out.update(mean=math.nan, median=math.nan, std=math.nan, p95=math.nan,
               min=math.nan, max=math.nan)
  return out
