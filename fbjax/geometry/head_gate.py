"""Is there a fetal head? Evidence for the segmentation model's head, and the gate on it.

A segmentation network answers "where is the head", never "is there one": on
an all-black image a U-Net's output is its biases and the imprint of its
zero padding (normalised features of a constant input are 0 except near the
border), which can be a confident blob, and on noise or an abdomen it
outlines whatever round region it finds. The ellipse fit then succeeds, and
biometry and classification give confident answers about nothing.

The gate asks the image and the predicted head for evidence of a skull,
all on the segmentation grid (inside the letterbox's image region):

  spread        image intensity range (99th - 1st percentile): a blank or
                near-constant picture holds no anatomy at all.
  area_fraction share of the image the predicted head covers: a head the
                model finds but that is a speck is not a measurable head.
  ellipse_dice  agreement of the fitted ellipse with the predicted head
                region: a head is an ellipse, a blob of noise is not.
  ring_contrast the skull is the brightest structure around the head: mean
                intensity of a band along the fitted ellipse minus that of
                the band just inside it, in units of `spread`, averaged over
                the ring (an abdomen, a blob of noise, or a region the model
                drew around a femur has no bright ring on its outline).
  ring_support  share of directions (64 around the ellipse) in which that
                band is brighter than the inside: a skull is visible over
                most of the head's outline, a lucky bright arc is not.

`THRESHOLDS` were chosen on 200 HC18 training images (positives, through a
64x96 U-Net trained on HC18 train for 400 steps, head Dice 0.955) and 270
synthetic negatives (`benchmarks/head_gate.py`, which recomputes all of this):
heads have spread >= 0.28, area_fraction >= 0.07, ellipse_dice >= 0.9 and a
median ring_contrast of 0.39 (1st percentile 0.0); blank pictures have spread
0, noise and speckle <= 0.08; gradients, filled shapes, an abdomen-like disc
and a femur-like bar have ring_contrast <= 0.012 (one pair of touching
shapes: 0.12). ring_contrast 0.02 is the lowest threshold that rejected
99.6 % of the negatives (0.0: 95.6 %); it rejects 2.5 % of the training heads
and 2.6 % (4 of 152) of the HC18 validation heads. Through the same
HC18-only U-Net, which never saw those sources, it rejects 6 of 104
FETAL_PLANES_DB images, 2 of 200 of the 640 copy and 30 of 400 training
images of the abnormalities set (2 of its 62 normal heads, 28 of its 338
abnormal ones, whose skull can be deformed or open): recalibrate with the
segmentation model in use (`benchmarks/head_gate.py --seg_workdir`).

Every picture above, blank ones included, got a head from the segmenter:
with zero padding, a constant input still gives the U-Net a border-shaped
response, and the black 800x540 picture became a head over 42 % of the image.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import cv2
import numpy as np

from fbjax.geometry import ellipse_fit
from fbjax.geometry.ellipse_fit import Ellipse

# Normalised radii (1 = the fitted ellipse, which is the skull's outer edge)
# of the bands compared: the skull is 0.9-1.0 of the radius at any age.
RING = (0.88, 1.02)
INSIDE = (0.5, 0.8)
OUTSIDE = (1.1, 1.3)
NUM_DIRECTIONS = 64
NUM_RADII = 32
# `spread` is measured on the image shrunk to this many rows (area average):
# structure at 1/32 of the picture's height, whatever the segmenter's grid, so
# that speckle or noise alone (averaged away at that scale) has no spread.
COARSE_ROWS = 32
# Minimum evidence of a head. See the module notes and benchmarks/head_gate.py.
THRESHOLDS = {"spread": 0.15, "area_fraction": 0.02, "ellipse_dice": 0.8,
              "ring_contrast": 0.02, "ring_support": 0.1}
# Plausible head circumference (mm) when the pixel spacing is known: 12 weeks
# (about 70 mm) to term and beyond (about 360 mm), with a wide margin.
HC_MM_RANGE = (40.0, 450.0)


@dataclasses.dataclass(frozen=True)
class Evidence:
  spread: float
  area_fraction: float
  ellipse_dice: float
  ring_contrast: float
  ring_support: float

  def failed(self, thresholds: dict | None = None) -> list[str]:
    """Names of the features below their thresholds (empty: a head)."""
    t = THRESHOLDS if thresholds is None else thresholds
    return [k for k, v in dataclasses.asdict(self).items()
            if k in t and not (math.isfinite(v) and v >= t[k])]


def ring_profile(image: np.ndarray, e: Ellipse, radii: np.ndarray,
                 n_dir: int = NUM_DIRECTIONS) -> np.ndarray:
  """Image intensity at normalised radii x directions around ellipse `e` (bilinear)."""
  t = np.linspace(0.0, 2 * np.pi, n_dir, endpoint=False)
  c, s = math.cos(e.theta), math.sin(e.theta)
  u = e.a * radii[:, None] * np.cos(t)[None]
  v = e.b * radii[:, None] * np.sin(t)[None]
  x = (e.cx + c * u - s * v).astype(np.float32)
  y = (e.cy + s * u + c * v).astype(np.float32)
  return cv2.remap(np.asarray(image, np.float32), x, y, cv2.INTER_LINEAR,
                   borderMode=cv2.BORDER_CONSTANT, borderValue=float("nan"))


def evidence(grid_image: np.ndarray, head_prob: np.ndarray, e_grid: Ellipse | None,
             box: tuple[int, int, int, int]) -> Evidence:
  """The gate's features of one image (all on the segmentation grid).

  `grid_image` (H, W) in [0, 1] is what the segmenter saw, `head_prob` its
  head probability, `e_grid` the fitted ellipse on the grid (None: no fit)
  and `box` (y0, x0, y1, x1) the region holding image data.
  """
  y0, x0, y1, x1 = box
  img = np.asarray(grid_image, np.float32)[y0:y1, x0:x1]
  region = np.asarray(head_prob)[y0:y1, x0:x1] > 0.5
  spread = coarse_spread(img)
  area = float(region.mean()) if region.size else 0.0
  nan = math.nan
  if e_grid is None or not region.any():
    return Evidence(spread, area, nan, nan, nan)
  ell = ellipse_fit.rasterize(e_grid, head_prob.shape)[y0:y1, x0:x1] > 0
  inter = np.logical_and(ell, region).sum()
  dice = float(2 * inter / max(ell.sum() + region.sum(), 1))
  lo, hi = np.percentile(img, (1, 99))
  if spread <= 1e-3 or hi - lo <= 1e-3:
    return Evidence(spread, area, dice, 0.0, 0.0)
  # The profile is sampled on the image region only (the letterbox's padding
  # is not image): points outside it are NaN and left out.
  full = np.full(head_prob.shape, np.nan, np.float32)
  full[y0:y1, x0:x1] = img
  radii = np.linspace(INSIDE[0], OUTSIDE[1], NUM_RADII)
  prof = ring_profile(full, e_grid, radii)            # (radii, directions), NaN off the image
  # The skull is a ridge, not a step: brighter than both the brain inside and
  # the tissue outside (a gradient, or the edge of a filled region, is brighter
  # on one side only). The radial profile is the median over directions (a
  # shadowed or cut-off side does not pull it); the ring is its peak in `RING`
  # (where the skull lies depends on the segmenter: HC18's peak is at r = 0.95).
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN rows (off the image) stay NaN
    median = np.nanmedian(prof, axis=1)
  in_ring = median[_band(radii, RING)]
  ring = float(np.nanmax(in_ring)) if np.isfinite(in_ring).any() else math.nan
  beside = np.nanmax([_mean(median[_band(radii, INSIDE)]), _mean(median[_band(radii, OUTSIDE)])])
  contrast = float((ring - beside) / (hi - lo))
  # Per direction: the ring band's mean above both neighbouring bands' means.
  ring_d = _band_mean(prof, radii, RING)
  beside_d = np.fmax(_band_mean(prof, radii, INSIDE), _band_mean(prof, radii, OUTSIDE))
  ok = np.isfinite(ring_d) & np.isfinite(beside_d)
  support = float((ring_d[ok] > beside_d[ok]).mean()) if ok.any() else math.nan
  return Evidence(spread, area, dice, contrast, support)


def _band(radii: np.ndarray, band: tuple[float, float]) -> np.ndarray:
  return (radii >= band[0]) & (radii <= band[1])


def _mean(v: np.ndarray) -> float:
  v = v[np.isfinite(v)]
  return float(v.mean()) if v.size else math.nan


def coarse_spread(img: np.ndarray) -> float:
  """99th - 1st percentile of `img` area-averaged to `COARSE_ROWS` rows (0 if empty)."""
  h, w = img.shape
  if h == 0 or w == 0:
    return 0.0
  rows = min(h, COARSE_ROWS)
  cols = max(1, round(w * rows / h))
  small = cv2.resize(np.ascontiguousarray(img, np.float32), (cols, rows),
                     interpolation=cv2.INTER_AREA)
  lo, hi = np.percentile(small, (1, 99))
  return float(hi - lo)


def _band_mean(prof: np.ndarray, radii: np.ndarray, band: tuple[float, float]) -> np.ndarray:
  sel = prof[(radii >= band[0]) & (radii <= band[1])]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)     # all-NaN directions stay NaN
    return np.nanmean(sel, axis=0)
