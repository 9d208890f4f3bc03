"""Deterministic preprocessing: resizing to the network's grid and back.

Images of any size are fitted into the network's (H, W) grid by one isotropic
scale plus zero padding ("letterbox"), so a pixel stays (nearly) square and
the pixel spacing stays a single number: `spacing_net = spacing_orig / scale`.
The `Geometry` returned records scale and offsets, so predictions can be mapped
back to the original image (biometry in the original pixel grid).

Exact mapping. The resized image is (rh, rw) = (round(h * scale), round(w *
scale)), so the scales `cv2.resize` really applies are rh / h and rw / w,
which differ from `scale` and from each other by up to half a pixel over the
image. OpenCV samples at pixel centres: grid pixel x (centre at x, pixels
indexed from 0) reads the original at (x - ox + 0.5) * w / rw - 0.5. The
mappings below (`to_original_points`, `to_grid_points`) use exactly these
per-axis scales and half-pixel centres, so they are the inverse of what the
letterbox does; `scale` stays the nominal isotropic scale (the spacing on the
grid and the training pipeline use it).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np


@dataclasses.dataclass(frozen=True)
class Geometry:
  """How an original (h, w) image was placed on the network grid."""

  orig_hw: tuple[int, int]
  out_hw: tuple[int, int]
  scale: float      # network px per original px
  offset_yx: tuple[int, int]  # top-left of the resized image on the grid

  @property
  def resized_hw(self) -> tuple[int, int]:
    """Size of the resized image inside the grid (before padding)."""
    h, w = self.orig_hw
    return max(1, round(h * self.scale)), max(1, round(w * self.scale))

  @property
  def scale_xy(self) -> np.ndarray:
    """Per-axis scales (grid px per original px) that `cv2.resize` applied: (sx, sy)."""
    (h, w), (rh, rw) = self.orig_hw, self.resized_hw
    return np.array([rw / w, rh / h], np.float64)

  def to_original_points(self, pts_xy: np.ndarray) -> np.ndarray:
    """Network-grid (x, y) coordinates -> original-image (x, y) coordinates (exact)."""
    pts = np.asarray(pts_xy, np.float64)
    off = np.array([self.offset_yx[1], self.offset_yx[0]], np.float64)
    return (pts - off + 0.5) / self.scale_xy - 0.5

  def to_grid_points(self, pts_xy: np.ndarray) -> np.ndarray:
    """Original-image (x, y) coordinates -> network-grid (x, y); inverse of the above."""
    pts = np.asarray(pts_xy, np.float64)
    off = np.array([self.offset_yx[1], self.offset_yx[0]], np.float64)
    return (pts + 0.5) * self.scale_xy - 0.5 + off

  def to_original_affine(self) -> tuple[np.ndarray, np.ndarray]:
    """(scale_xy, offset_xy) with original = grid * scale_xy + offset_xy."""
    sx, sy = self.scale_xy
    oy, ox = self.offset_yx
    return (np.array([1 / sx, 1 / sy]),
            np.array([(0.5 - ox) / sx - 0.5, (0.5 - oy) / sy - 0.5]))

  def to_grid_affine(self) -> tuple[np.ndarray, np.ndarray]:
    """(scale_xy, offset_xy) with grid = original * scale_xy + offset_xy."""
    sx, sy = self.scale_xy
    oy, ox = self.offset_yx
    return np.array([sx, sy]), np.array([0.5 * sx - 0.5 + ox, 0.5 * sy - 0.5 + oy])

  def spacing_on_grid(self, pixel_spacing_mm: float) -> float:
    return float(pixel_spacing_mm) / self.scale


def letterbox_geometry(orig_hw: tuple[int, int], out_hw: tuple[int, int]) -> Geometry:
  h, w = orig_hw
  oh, ow = out_hw
  scale = min(oh / h, ow / w)
  rh, rw = max(1, round(h * scale)), max(1, round(w * scale))
  return Geometry((h, w), (oh, ow), scale, ((oh - rh) // 2, (ow - rw) // 2))


def letterbox(img: np.ndarray, out_hw: tuple[int, int], *, nearest: bool = False,
              geometry: Geometry | None = None) -> tuple[np.ndarray, Geometry]:
  """Resizes `img` (HxW or HxWxC) into `out_hw` keeping its aspect; pads with 0."""
  g = geometry or letterbox_geometry(img.shape[:2], out_hw)
  rh, rw = g.resized_hw
  if nearest:
    interp = cv2.INTER_NEAREST
  else:
    interp = cv2.INTER_AREA if g.scale < 1 else cv2.INTER_LINEAR
  resized = cv2.resize(img, (rw, rh), interpolation=interp)
  if img.ndim == 3 and resized.ndim == 2:
    resized = resized[..., None]
  out = np.zeros((*g.out_hw, *img.shape[2:]), img.dtype)
  oy, ox = g.offset_yx
  out[oy:oy + rh, ox:ox + rw] = resized
  return out, g


def unletterbox(arr: np.ndarray, g: Geometry, *, nearest: bool = False) -> np.ndarray:
  """Inverse of `letterbox`: crops the padding and resizes to the original size."""
  h, w = g.orig_hw
  rh, rw = g.resized_hw
  oy, ox = g.offset_yx
  crop = arr[oy:oy + rh, ox:ox + rw]
  interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
  out = cv2.resize(crop, (w, h), interpolation=interp)
  if arr.ndim == 3 and out.ndim == 2:
    out = out[..., None]
  return out
