"""The aligned head: a canonical crop of the fetal head from its ellipse.

A classifier that sees the whole image can decide from what surrounds the
head (the sector's border, text overlays, a scanner's look). The aligned
head removes that: the image is rotated so that the head ellipse's major
axis is horizontal, scaled so that the major axis spans a fixed fraction
(`head_fraction`) of the crop's width, centred, and everything more than a
small `margin` outside the ellipse is set to 0.

Conventions are those of `fbjax.geometry.biometry`: points are (x, y) with the centre
of the top-left pixel at (0, 0) (also OpenCV's for `warpAffine`), and an
`Ellipse` has semi-axes `a >= b` and angle `theta` in [0, pi). On the crop
the head is the axis-aligned ellipse centred at ((W-1)/2, (H-1)/2) with
semi-axes (s a, s b), s = head_fraction * W / (2 a).

An ellipse's angle is defined modulo pi, so a head has two canonical
orientations, 180 degrees apart: `flip=True` gives the other one (exactly the
crop of the input image rotated by 180 degrees). Training can draw either
(augmentation), evaluation can average over both (test-time averaging).

`Alignment` holds the affine maps both ways, so that a point or a heatmap on
the crop maps back onto the image (`to_image`, `crop_to_image`).

A stretched image (e.g. FETAL_PLANES_DB's 640x640 copy, feature
`pixel_aspect`: width / height of the area a pixel covers) is undone in the
same warp: with `pixel_aspect` given, the crop shows the head in true
proportions (the ellipse is given in the stored image's pixels).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import cv2
import jax.numpy as jnp
import numpy as np
from jax.scipy import ndimage

from fbjax.geometry import ellipse_fit
from fbjax.geometry.ellipse_fit import Ellipse

# A crop 4:3 wide: a head's BPD/OFD (cephalic index) is 0.74-0.83, so with the
# major axis over 0.8 of the width the minor axis (<= 0.83 * 0.8 * 4/3 = 0.89 of
# the height) and the margin fit.
DEFAULT_SIZE = (96, 128)
DEFAULT_HEAD_FRACTION = 0.8
# Kept outside the ellipse, as a fraction of each semi-axis: the skull's outer
# border is the ellipse, so a few per cent keeps the whole bone and its edge.
DEFAULT_MARGIN = 0.08


@dataclasses.dataclass(frozen=True)
class Alignment:
  """How an image was mapped onto its aligned-head crop.

  `forward` (2x3) maps image (x, y) to crop (x, y); `inverse` maps back.
  `ellipse` is the head on the crop; `scale` is crop px per image px along
  the image's y axis (`scale * pixel_aspect` along its x axis).
  """

  forward: np.ndarray
  inverse: np.ndarray
  scale: float
  image_hw: tuple[int, int]
  crop_hw: tuple[int, int]
  ellipse: Ellipse
  flip: bool
  pixel_aspect: float = 1.0

  def to_crop(self, pts_xy) -> np.ndarray:
    return _apply(self.forward, pts_xy)

  def to_image(self, pts_xy) -> np.ndarray:
    return _apply(self.inverse, pts_xy)


def _apply(m: np.ndarray, pts_xy) -> np.ndarray:
  p = np.asarray(pts_xy, np.float64).reshape(-1, 2)
  return p @ m[:, :2].T + m[:, 2]


def _invert(m: np.ndarray) -> np.ndarray:
  full = np.vstack([m, [0.0, 0.0, 1.0]])
  return np.linalg.inv(full)[:2]


def _stretched(e: Ellipse, sx: float) -> Ellipse:
  """The image of ellipse `e` under x -> sx * x (exact, through its conic)."""
  a, b, c, d, e_, f = e.conic()
  out = ellipse_fit.ellipse_from_conic((a / sx**2, b / sx, c, d / sx, e_, f))
  if out is None:
    raise ValueError(f"cannot stretch {e} by {sx}")
  return out


def alignment(ellipse: Ellipse, image_hw: tuple[int, int], *, size=DEFAULT_SIZE,
              head_fraction: float = DEFAULT_HEAD_FRACTION, flip: bool = False,
              pixel_aspect: float = 1.0) -> Alignment:
  """The affine maps between an image and the aligned crop of its head.

  `pixel_aspect` (width / height of the area one pixel covers; NaN or 1: none)
  undoes a stretch: the head is aligned in true proportions.
  """
  h, w = (int(v) for v in size)
  if not (0 < head_fraction <= 1):
    raise ValueError(f"head_fraction must be in (0, 1], got {head_fraction}")
  if not (ellipse.a > 0 and ellipse.b > 0 and all(map(math.isfinite, (
      ellipse.cx, ellipse.cy, ellipse.a, ellipse.b, ellipse.theta)))):
    raise ValueError(f"not a usable head ellipse: {ellipse}")
  sx = 1.0 if not math.isfinite(pixel_aspect) else float(pixel_aspect)
  if sx <= 0:
    raise ValueError(f"pixel_aspect must be > 0, got {pixel_aspect}")
  true = ellipse if sx == 1.0 else _stretched(ellipse, sx)
  s = head_fraction * w / (2.0 * true.a)
  t = true.theta + (math.pi if flip else 0.0)
  c, sn = math.cos(t), math.sin(t)
  # Undo the stretch, rotate by -t about the head centre, scale, and move the
  # centre to the crop's.
  lin = s * np.array([[c, sn], [-sn, c]]) @ np.diag([sx, 1.0])
  centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
  fwd = np.hstack([lin, (centre - lin @ [ellipse.cx, ellipse.cy])[:, None]])
  on_crop = Ellipse(float(centre[0]), float(centre[1]), s * true.a, s * true.b, 0.0)
  return Alignment(fwd, _invert(fwd), s, (int(image_hw[0]), int(image_hw[1])), (h, w),
                   on_crop, bool(flip), sx)


def head_region(al: Alignment, margin: float = DEFAULT_MARGIN) -> np.ndarray:
  """Bool (H, W): crop pixels within the ellipse grown by `margin` of each semi-axis."""
  h, w = al.crop_hw
  e = al.ellipse
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
  r2 = ((xx - e.cx) / (e.a * (1 + margin))) ** 2 + ((yy - e.cy) / (e.b * (1 + margin))) ** 2
  return r2 <= 1.0


def _warp(image: np.ndarray, m: np.ndarray, out_hw: tuple[int, int],
          scale_xy: tuple[float, float], nearest: bool = False) -> np.ndarray:
  h, w = out_hw
  img = np.ascontiguousarray(image)
  if not nearest and min(scale_xy) < 0.5:
    # Downscaling by more than 2 aliases speckle under bilinear sampling:
    # low-pass first (sigma = (1/scale - 1) / 2 per image axis, as skimage's
    # rescale). A Gaussian blur commutes with the 180-degree rotation, so both
    # canonical orientations stay each other's exact rotation.
    sx, sy = (max(0.0, (1.0 / v - 1.0) / 2.0) for v in scale_xy)
    blurred = cv2.GaussianBlur(img, (0, 0), sigmaX=max(sx, 1e-3), sigmaY=max(sy, 1e-3),
                               borderType=cv2.BORDER_REFLECT)
    img = blurred[..., None] if img.ndim == 3 and blurred.ndim == 2 else blurred
  flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
  out = cv2.warpAffine(img, m, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT,
                       borderValue=0)
  if img.ndim == 3 and out.ndim == 2:
    out = out[..., None]
  return out


def aligned_head(image, ellipse: Ellipse, *, size=DEFAULT_SIZE,
                 head_fraction: float = DEFAULT_HEAD_FRACTION, margin: float = DEFAULT_MARGIN,
                 flip: bool = False, pixel_aspect: float = 1.0) -> tuple[np.ndarray, dict]:
  """The canonical crop of the head in `image` (HxW or HxWxC, any dtype).

  Returns (crop, info): crop has `size` (H, W) (plus the image's channels)
  and the image's dtype, 0 outside the head region and outside the image.
  `pixel_aspect` undoes a stretched image's distortion (see the module notes).
  info: `alignment` (an `Alignment`: `forward`/`inverse` 2x3 matrices,
  `to_image`, `to_crop`), `head` (bool HxW, the region kept) and `valid`
  (bool HxW, crop pixels that come from inside the image).
  """
  img = np.asarray(image)
  if img.ndim not in (2, 3) or min(img.shape[:2]) < 1:
    raise ValueError(f"expected an HxW or HxWxC image, got shape {img.shape}")
  al = alignment(ellipse, img.shape[:2], size=size, head_fraction=head_fraction, flip=flip,
                 pixel_aspect=pixel_aspect)
  scales = (al.scale * al.pixel_aspect, al.scale)
  crop = _warp(img, al.forward, al.crop_hw, scales)
  ones = np.ones(img.shape[:2], np.uint8)
  valid = _warp(ones, al.forward, al.crop_hw, scales, nearest=True).astype(bool)
  head = head_region(al, margin)
  keep = head & valid
  crop = np.where(keep.reshape(keep.shape + (1,) * (crop.ndim - 2)), crop, 0).astype(img.dtype)
  return crop, {"alignment": al, "head": head, "valid": valid}


def head_crop(image, ellipse: Ellipse, *, pixel_aspect: float = 1.0, **kwargs) -> np.ndarray:
  """The classifier's aligned head: `aligned_head(flip=False)` of a grey uint8 image
  (`fbjax.evaluation.heads.crop` brings any image to 8 bits first, so a decoded file and the same
  image read from a data set give the same crop); the crop is uint8 (H, W). The other
  canonical orientation is this crop rotated by 180 degrees. A non-finite
  `pixel_aspect` is 1.
  """
  img = np.asarray(image)
  if img.dtype != np.uint8:
    raise ValueError(f"expected a uint8 image (fbjax.evaluation.heads.crop converts), "
                     f"got {img.dtype}")
  aspect = float(pixel_aspect)
  return aligned_head(img, ellipse, flip=False,
                      pixel_aspect=aspect if math.isfinite(aspect) else 1.0, **kwargs)[0]


def crop_to_image(values, al: Alignment, *, nearest: bool = False) -> np.ndarray:
  """Maps a map on the crop (e.g. an occlusion heatmap, HxW float) onto the image grid."""
  v = np.asarray(values)
  if v.shape[:2] != al.crop_hw:
    raise ValueError(f"expected a map of the crop's size {al.crop_hw}, got {v.shape}")
  if v.dtype == np.float64 or v.dtype == bool:
    v = v.astype(np.float32)
  h, w = al.image_hw
  flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
  return cv2.warpAffine(np.ascontiguousarray(v), al.inverse, (w, h), flags=flags,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def ellipse_from_mask(mask, *, name: str = "<mask>", min_points: int = 20) -> Ellipse:
  """The head ellipse of a ground-truth head mask (HxW, nonzero = head).

  The fit of `ellipse_fit.ellipse_from_mask` (direct least squares on the
  sub-pixel outline of the largest region; outline points on the image border
  are left out, so a head cut by the border is extrapolated), traced on the
  mask's bounding box only. Raises ValueError naming `name` when the mask
  holds no usable head.
  """
  m = np.asarray(mask)
  if m.ndim == 3 and m.shape[2] == 1:
    m = m[..., 0]
  if m.ndim != 2:
    raise ValueError(f"{name}: expected an HxW mask, got shape {m.shape}")
  inside = (m > 0).astype(np.uint8)
  # Trace the outline on the mask's bounding box (plus 3 px, clipped to the
  # image): the same points, several times faster than on the whole image.
  x, y, w, h = cv2.boundingRect(inside)
  x0, y0 = max(0, x - 3), max(0, y - 3)
  x1, y1 = min(m.shape[1], x + w + 3), min(m.shape[0], y + h + 3)
  pts, _ = ellipse_fit.boundary_points(inside[y0:y1, x0:x1].astype(np.float32))
  pts = pts + [x0, y0]
  # Leave out points on the image's border, where the head is cut rather than
  # bounded by the skull (the rule of `ellipse_fit.boundary_points`).
  keep = ((pts[:, 0] > 0.5) & (pts[:, 0] < m.shape[1] - 1.5)
          & (pts[:, 1] > 0.5) & (pts[:, 1] < m.shape[0] - 1.5))
  pts = pts[keep]
  e = ellipse_fit.fit_ellipse(pts, "direct") if len(pts) >= min_points else None
  if e is None:
    raise ValueError(f"{name}: no head ellipse in the mask ({int(inside.sum())} head pixels; "
                     f"an outline of >= {min_points} points is needed)")
  return e


def _per_image(value, n: int, name: str) -> list:
  values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value] * n
  if len(values) != n:
    raise ValueError(f"{n} images but {len(values)} {name} values")
  return values


def aligned_heads(images: Sequence, ellipses: Sequence[Ellipse | None], *,
                  size=DEFAULT_SIZE, flip: bool | Sequence[bool] = False,
                  pixel_aspect: float | Sequence[float] = 1.0,
                  **kwargs) -> tuple[np.ndarray, list[dict | None]]:
  """`aligned_head` over a list of images of any sizes: (N, H, W[, C]) and the infos.

  `flip` and `pixel_aspect` are one value for all or one per image. An image
  whose ellipse is None (no head found) gets an all-zero crop and info None,
  so a batch keeps its length and order.
  """
  n = len(images)
  if len(ellipses) != n:
    raise ValueError(f"{n} images but {len(ellipses)} ellipses")
  flips = _per_image(flip, n, "flip")
  aspects = _per_image(pixel_aspect, n, "pixel_aspect")
  crops, infos = [], []
  for img, e, f, pa in zip(images, ellipses, flips, aspects, strict=True):
    img = np.asarray(img)
    if e is None:
      crops.append(np.zeros((*size, *img.shape[2:]), img.dtype))
      infos.append(None)
      continue
    c, info = aligned_head(img, e, size=size, flip=bool(f), pixel_aspect=float(pa), **kwargs)
    crops.append(c)
    infos.append(info)
  shapes = {c.shape for c in crops}
  if len(shapes) > 1:
    raise ValueError(f"images differ in channels: crops of shapes {sorted(shapes)}")
  return np.stack(crops) if crops else np.zeros((0, *size)), infos


# ---------------------------------------------------------------------------
# On the accelerator: the same crop as a pure jnp function (jit / vmap)


def aligned_head_jnp(image, ellipse, *, size=DEFAULT_SIZE,
                     head_fraction: float = DEFAULT_HEAD_FRACTION,
                     margin: float = DEFAULT_MARGIN, flip=False, pixel_aspect=1.0):
  """`aligned_head` of one grey image (H, W) in jnp, for use inside jit / vmap.

  `ellipse` is an array (cx, cy, a, b, theta) (a >= b, as `Ellipse`); `flip`
  and `pixel_aspect` may be traced. Bilinear sampling without the low-pass
  that `aligned_head` applies before downscaling by more than 2: give it
  images already near the crop's scale (e.g. the network's letterboxed grid).
  Returns the float32 crop (size), 0 outside the head region and the image.
  """

  h, w = (int(v) for v in size)
  cx, cy, a, b, theta = (jnp.asarray(ellipse, jnp.float32)[i] for i in range(5))
  sx = jnp.where(jnp.isfinite(pixel_aspect), jnp.asarray(pixel_aspect, jnp.float32), 1.0)
  # The ellipse in true proportions (x -> sx x), from its conic as in `_stretched`.
  c, s = jnp.cos(theta), jnp.sin(theta)
  ia, ib = 1.0 / a**2, 1.0 / b**2
  qa = (c * c * ia + s * s * ib) / sx**2
  qb = 2.0 * c * s * (ia - ib) / sx
  qc = s * s * ia + c * c * ib
  a_true = 1.0 / jnp.sqrt(0.5 * (qa + qc - jnp.sqrt((qa - qc) ** 2 + qb**2)))
  b_true = 1.0 / jnp.sqrt(0.5 * (qa + qc + jnp.sqrt((qa - qc) ** 2 + qb**2)))
  # The major axis (smallest eigenvalue), in [0, pi) as `Ellipse.theta`.
  t = jnp.mod(0.5 * jnp.arctan2(qb, qa - qc) + jnp.pi / 2, jnp.pi)
  t = t + jnp.where(flip, jnp.pi, 0.0)
  scale = head_fraction * w / (2.0 * a_true)
  # Crop pixel -> image pixel: undo centre, scale, rotation, then the stretch.
  yy, xx = jnp.mgrid[0:h, 0:w].astype(jnp.float32)
  u, v = (xx - (w - 1) / 2.0) / scale, (yy - (h - 1) / 2.0) / scale
  ct, st = jnp.cos(t), jnp.sin(t)
  x_img = cx + (ct * u - st * v) / sx
  y_img = cy + st * u + ct * v
  crop = ndimage.map_coordinates(jnp.asarray(image, jnp.float32), [y_img, x_img], order=1,
                                 mode="constant", cval=0.0)
  inside = ((x_img > -0.5) & (x_img < image.shape[1] - 0.5)
            & (y_img > -0.5) & (y_img < image.shape[0] - 0.5))
  r2 = (u / (a_true * (1 + margin))) ** 2 + (v / (b_true * (1 + margin))) ** 2
  return jnp.where((r2 <= 1.0) & inside, crop, 0.0)
