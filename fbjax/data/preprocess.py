"""Deterministic preprocessing: resizing to the network's grid and back.

Images of any size are fitted into the network's (H, W) grid by one isotropic
scale plus zero padding ("letterbox"), so a pixel stays square and the pixel
spacing stays a single number: `spacing_net = spacing_orig / scale`. The
`Geometry` returned records scale and offsets, so predictions can be mapped
back to the original image (biometry in the original pixel grid).
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

  def to_original_points(self, pts_xy: np.ndarray) -> np.ndarray:
    """Network-grid (x, y) coordinates -> original-image (x, y) coordinates."""
    pts = np.asarray(pts_xy, np.float64)
    off = np.array([self.offset_yx[1], self.offset_yx[0]], np.float64)
    return (pts - off) / self.scale

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
  h, w = g.orig_hw
  rh, rw = max(1, round(h * g.scale)), max(1, round(w * g.scale))
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
  rh, rw = max(1, round(h * g.scale)), max(1, round(w * g.scale))
  oy, ox = g.offset_yx
  crop = arr[oy:oy + rh, ox:ox + rw]
  interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
  out = cv2.resize(crop, (w, h), interpolation=interp)
  if arr.ndim == 3 and out.ndim == 2:
    out = out[..., None]
  return out
