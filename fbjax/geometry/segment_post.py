"""From a segmentation (or a raw image) to the head ellipse: the methods compared.

Every method returns the head ellipse in ORIGINAL image pixels (or None),
so their HC/BPD/OFD are computed the same way (`fbjax.geometry.biometry`):

  "prototype"  the prototype's pipeline on the raw image, no network:
               histogram equalisation, 5x5 median blur, fixed threshold 180,
               largest external contour; the ellipse is `cv2.fitEllipse` of
               that contour and its mask is the filled contour.
  "plain"      network head probability > 0.5 on the network grid, largest
               external contour, `cv2.fitEllipse`, mapped back.
  "direct"     sub-pixel 0.5 iso-line of the head probability, points on the
               image border dropped, algebraic least-squares ellipse.
  "robust"     as "direct" inside RANSAC (Sampson distance, inlier band 4 %
               of the head radius), refitted on the inliers: ignores spurious pieces of outline
               (speckle blobs, a head cut by the border, a mask leaking into
               a neighbouring bright structure).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from fbjax.geometry import ellipse_fit
from fbjax.geometry.preprocess import Geometry

METHODS = ("prototype", "plain", "direct", "robust")
NETWORK_METHODS = ("plain", "direct", "robust")
PROTOTYPE_THRESHOLD = 180
PROTOTYPE_MEDIAN_KSIZE = 5
# RANSAC inlier band as a fraction of the head's mean radius: 4 % is ~3 grid
# pixels for a typical HC18 head at 128x192, wide enough to keep the whole of
# a slightly ragged predicted outline and narrow enough to drop a leak into
# a neighbouring structure. Chosen on HC18 validation predictions of an early
# model (bands of 3-5 % gave mean HC errors within 0.06 mm of each other;
# 1-2 % were worse, fitting arcs of a ragged outline).
RANSAC_REL_THRESHOLD = 0.04


def _to_uint8(image) -> np.ndarray:
  img = np.asarray(image)
  if img.dtype == np.uint8:
    return img
  return np.clip(np.rint(np.asarray(img, np.float64) * 255.0), 0, 255).astype(np.uint8)


def _largest_contour(binary: np.ndarray):
  contours, _ = cv2.findContours(binary.astype(np.uint8), cv2.RETR_EXTERNAL,
                                 cv2.CHAIN_APPROX_NONE)
  if not contours:
    return None
  return max(contours, key=cv2.contourArea)


def prototype_mask(image) -> tuple[np.ndarray, np.ndarray | None]:
  """The prototype's segmentation: (filled largest-contour mask, contour Nx1x2)."""
  img = _to_uint8(image)
  if img.ndim != 2:
    raise ValueError(f"expected a grey HxW image, got shape {img.shape}")
  eq = cv2.equalizeHist(img)
  blur = cv2.medianBlur(eq, PROTOTYPE_MEDIAN_KSIZE)
  _, binary = cv2.threshold(blur, PROTOTYPE_THRESHOLD, 1, cv2.THRESH_BINARY)
  c = _largest_contour(binary)
  mask = np.zeros(img.shape, np.uint8)
  if c is not None:
    cv2.drawContours(mask, [c], -1, 1, thickness=cv2.FILLED)
  return mask, c


def prototype_ellipse(image) -> ellipse_fit.Ellipse | None:
  _, c = prototype_mask(image)
  if c is None or len(c) < 5:
    return None
  return ellipse_fit.fit_cv2(c.reshape(-1, 2))


def plain_ellipse(prob, geometry: Geometry | None = None,
                  threshold: float = 0.5) -> ellipse_fit.Ellipse | None:
  """Threshold, largest external contour, `cv2.fitEllipse`, mapped to the original."""
  c = _largest_contour(np.asarray(prob) > threshold)
  if c is None or len(c) < 5:
    return None
  e = ellipse_fit.fit_cv2(c.reshape(-1, 2))
  return e.to_original(geometry) if geometry is not None else e


def fitted_ellipse(prob, geometry: Geometry | None = None, *, method: str = "robust",
                   level: float = 0.5, ransac_rel_threshold: float = RANSAC_REL_THRESHOLD,
                   ransac_min_threshold_px: float = 1.0,
                   seed: int = 0) -> ellipse_fit.Ellipse | None:
  """Sub-pixel outline without border points, direct or RANSAC fit, in original pixels.

  The RANSAC inlier band is `ransac_rel_threshold` times the mean radius
  sqrt(ab) of the direct fit (so it means the same at any image scale), at
  least `ransac_min_threshold_px` grid pixels.
  """
  p = np.asarray(prob)
  pts, kept = ellipse_fit.boundary_points(p, level, box=ellipse_fit.valid_box(geometry, p.shape))
  pts = pts[kept]
  if len(pts) < 20:
    return None
  if geometry is not None:
    pts = geometry.to_original_points(pts)
  scale = geometry.scale if geometry is not None else 1.0
  if method == "direct":
    return ellipse_fit.fit_direct(pts)
  if method == "robust":
    e0 = ellipse_fit.fit_direct(pts)
    if e0 is None:
      return None
    thr = max(ransac_rel_threshold * math.sqrt(e0.a * e0.b), ransac_min_threshold_px / scale)
    return ellipse_fit.fit_ransac(pts, threshold=thr, seed=seed)
  raise ValueError(f"unknown method {method!r}")


def head_ellipse(method: str, *, prob=None, image=None,
                 geometry: Geometry | None = None) -> ellipse_fit.Ellipse | None:
  """The head ellipse in original-image pixels by one of `METHODS`.

  `prob` is the head probability on the network grid (placed there by
  `geometry`); `image` is the original grey image (uint8 or float in [0,1]),
  used by "prototype" only.
  """
  if method == "prototype":
    if image is None:
      raise ValueError("method 'prototype' needs the original image")
    return prototype_ellipse(image)
  if method not in NETWORK_METHODS:
    raise ValueError(f"unknown method {method!r}; known: {METHODS}")
  if prob is None:
    raise ValueError(f"method {method!r} needs the head probability map")
  if method == "plain":
    return plain_ellipse(prob, geometry)
  return fitted_ellipse(prob, geometry, method=method)
