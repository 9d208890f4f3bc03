"""Coarse to fine head segmentation: locate the head, then segment it at a fixed head size.

Stage 1 is the letterboxed U-Net (the whole image on a small grid). Its head
ellipse places a square crop of the image around the head, scaled so that
the ellipse's major axis spans `head_fraction` of the crop's side whatever
the head's size in pixels: a 60-mm head gets as many crop pixels as a
300-mm one. Stage 2 is a U-Net trained on such crops (from the reference
ellipse, jittered in centre and scale so that it tolerates stage-1 errors:
`CropSource`). The crop is not rotated (an axis-aligned crop keeps "which
crop pixels hold image data" a box, so outline points on the image border
are dropped exactly as on the letterboxed grid) and nothing outside the
skull is masked.

The crop is an isotropic scale plus a translation of the image, and
`CropGeometry` records it exactly (OpenCV's pixel-centre convention, as
`preprocess.Geometry`): it duck-types `Geometry` for the ellipse fits of
`fbjax.geometry.segment_post` (`to_original_points`, `to_original_affine`, `scale`,
`valid_box`), so a head fitted on the crop maps back to the image exactly,
and a crop's probabilities are pasted back into the image with the same map.

    seg = coarse_fine.TwoStage(stage1_fn, stage2_fn, stage1_size, crop_size, ...)
    probs = seg(fine_images)     # (B, H, W) -> (B, H, W, 3), on the fine grid
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from fbjax.data import pipeline
from fbjax.data.features import MASKS
from fbjax.geometry import align, preprocess, segment_post
from fbjax.geometry.ellipse_fit import Ellipse

# Major axis over this fraction of the crop's side: with the centre and scale
# jitter of training (+-8 % of the semi-axis, +-8 % in scale) the whole skull
# and some context stay inside the crop at any head angle.
DEFAULT_HEAD_FRACTION = 0.75
DEFAULT_CROP = (160, 160)


@dataclasses.dataclass(frozen=True)
class CropGeometry:
  """crop (x, y) = image (x, y) * scale + offset_xy: an isotropic scale and a shift."""

  image_hw: tuple[int, int]
  crop_hw: tuple[int, int]
  scale: float                   # crop px per image px
  offset_xy: tuple[float, float]

  def to_crop_points(self, pts_xy) -> np.ndarray:
    return np.asarray(pts_xy, np.float64) * self.scale + np.asarray(self.offset_xy)

  def to_original_points(self, pts_xy) -> np.ndarray:
    return (np.asarray(pts_xy, np.float64) - np.asarray(self.offset_xy)) / self.scale

  def to_original_affine(self) -> tuple[np.ndarray, np.ndarray]:
    """(scale_xy, offset_xy) with image = crop * scale_xy + offset_xy."""
    s = 1.0 / self.scale
    return np.array([s, s]), -np.asarray(self.offset_xy, np.float64) * s

  def to_crop_affine(self) -> tuple[np.ndarray, np.ndarray]:
    return np.array([self.scale, self.scale]), np.asarray(self.offset_xy, np.float64)

  @property
  def forward(self) -> np.ndarray:
    """2x3 matrix image -> crop (what `cv2.warpAffine` takes)."""
    s, (ox, oy) = self.scale, self.offset_xy
    return np.array([[s, 0.0, ox], [0.0, s, oy]])

  def valid_box(self, shape=None) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1), exclusive end: the crop pixels whose centre lies in the image.

    Outline points at the edge of this box are where the image (not the
    skull) ended: `biometry.boundary_points` drops them.
    """
    h, w = self.crop_hw if shape is None else shape
    (x0, y0), (x1, y1) = self.to_crop_points([[-0.5, -0.5],
                                              [self.image_hw[1] - 0.5, self.image_hw[0] - 0.5]])
    return (int(np.clip(math.ceil(y0), 0, h)), int(np.clip(math.ceil(x0), 0, w)),
            int(np.clip(math.floor(y1) + 1, 0, h)), int(np.clip(math.floor(x1) + 1, 0, w)))

  def spacing_on_crop(self, pixel_spacing_mm: float) -> float:
    return float(pixel_spacing_mm) / self.scale


def crop_geometry(ellipse: Ellipse, image_hw, crop_hw=DEFAULT_CROP, *,
                  head_fraction: float = DEFAULT_HEAD_FRACTION, shift_xy=(0.0, 0.0),
                  zoom: float = 1.0) -> CropGeometry:
  """The crop of `ellipse`'s head: major axis over `head_fraction` of the crop's side.

  `shift_xy` moves the crop's centre by that many semi-major axes and `zoom`
  multiplies the scale (the training jitter; 0 and 1 at inference).
  """
  if not (ellipse.a > 0 and ellipse.b > 0 and all(map(math.isfinite, (
      ellipse.cx, ellipse.cy, ellipse.a, ellipse.b)))):
    raise ValueError(f"not a usable head ellipse: {ellipse}")
  if not 0 < head_fraction <= 1:
    raise ValueError(f"head_fraction must be in (0, 1], got {head_fraction}")
  h, w = (int(v) for v in crop_hw)
  s = zoom * head_fraction * min(h, w) / (2.0 * ellipse.a)
  cx = ellipse.cx + shift_xy[0] * ellipse.a
  cy = ellipse.cy + shift_xy[1] * ellipse.a
  # Image point (cx, cy) lands on the crop's centre.
  return CropGeometry((int(image_hw[0]), int(image_hw[1])), (h, w), float(s),
                      ((w - 1) / 2.0 - s * cx, (h - 1) / 2.0 - s * cy))


def warp(image: np.ndarray, cg: CropGeometry, *, nearest: bool = False) -> np.ndarray:
  """The crop of `image` (HxW, any dtype cv2 handles); zeros outside the image.

  Shrinking averages the pixels it merges (`cv2.resize` INTER_AREA at the
  exact scale `cg.scale`, so speckle does not alias), then a sub-pixel shift
  places the crop; enlarging interpolates bilinearly.
  """
  h, w = cg.crop_hw
  img = np.ascontiguousarray(image)
  interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
  if cg.scale < 1 and not nearest:
    # dsize (0, 0) with fx = fy: OpenCV maps dst x to src (x + 0.5) / fx - 0.5 exactly.
    small = cv2.resize(img, (0, 0), fx=cg.scale, fy=cg.scale, interpolation=cv2.INTER_AREA)
    ox, oy = cg.offset_xy
    m = np.array([[1.0, 0.0, ox + 0.5 - 0.5 * cg.scale],
                  [0.0, 1.0, oy + 0.5 - 0.5 * cg.scale]])
    return cv2.warpAffine(small, m, (w, h), flags=interp, borderMode=cv2.BORDER_CONSTANT)
  return cv2.warpAffine(img, cg.forward, (w, h), flags=interp, borderMode=cv2.BORDER_CONSTANT)


def paste(crop_values: np.ndarray, cg: CropGeometry, base: np.ndarray) -> np.ndarray:
  """`base` (image-sized, HxW or HxWxC float) with the crop's values where the crop covers it."""
  h, w = cg.image_hw
  flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
  back = cv2.warpAffine(np.ascontiguousarray(crop_values, np.float32), cg.forward, (w, h),
                        flags=flags, borderMode=cv2.BORDER_CONSTANT)
  cover = cv2.warpAffine(np.ones(cg.crop_hw, np.float32), cg.forward, (w, h),
                         flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_CONSTANT) > 0.5
  if back.ndim < base.ndim:
    back = back[..., None]
  if base.ndim == 3:
    cover = cover[..., None]
  return np.where(cover, back, base).astype(np.float32)


# ---------------------------------------------------------------------------
# Training crops: a source wrapper
# ---------------------------------------------------------------------------


def _grey(value) -> np.ndarray:

  return pipeline.grey(value)


def reference_ellipse(ex: dict) -> Ellipse:
  """The example's head ellipse, fitted to its head mask (HC18's annotation is an ellipse)."""

  name = ex.get("id", "<example>")
  name = name.decode() if isinstance(name, bytes) else str(name)
  if not bool(ex.get("has_head_mask", False)):
    raise ValueError(f"{name}: no head mask, so no head to crop around (stage-2 training "
                     "needs examples with a head mask)")
  return align.ellipse_from_mask(_grey(ex["head_mask"]), name=name)


class CropSource:
  """Head crops of `source`'s examples, in the same feature layout (a source wrapper).

  Each example appears `copies` times; copy k of example i is cropped around
  its reference ellipse with a centre shift uniform in +-`shift` semi-major
  axes and a scale factor log-uniform in [1/(1+zoom), 1+zoom], deterministic
  from (seed, index). `pixel_spacing_mm` becomes the crop's spacing; HC/BPD/OFD
  (mm) are unchanged. With `shift = zoom = 0` the crops are exactly those
  inference takes around a perfect stage-1 ellipse.
  """

  def __init__(self, source, crop_hw=DEFAULT_CROP, *, head_fraction=DEFAULT_HEAD_FRACTION,
               shift: float = 0.0, zoom: float = 0.0, copies: int = 1, seed: int = 0):
    if copies < 1:
      raise ValueError(f"copies must be >= 1, got {copies}")
    self._source, self.crop_hw = source, tuple(int(v) for v in crop_hw)
    self.head_fraction, self.shift, self.zoom = float(head_fraction), float(shift), float(zoom)
    self.copies, self.seed = int(copies), int(seed)

  def __len__(self) -> int:
    return len(self._source) * self.copies

  def geometry(self, i: int, ex: dict, image_hw) -> CropGeometry:
    rng = np.random.default_rng([self.seed, int(i)])
    shift = rng.uniform(-self.shift, self.shift, 2) if self.shift else (0.0, 0.0)
    zoom = math.exp(rng.uniform(-1, 1) * math.log1p(self.zoom)) if self.zoom else 1.0
    return crop_geometry(reference_ellipse(ex), image_hw, self.crop_hw,
                         head_fraction=self.head_fraction, shift_xy=tuple(shift), zoom=zoom)

  def __getitem__(self, i):
    ex = self._source[int(i) % len(self._source)]
    image = _grey(ex["image"])
    cg = self.geometry(i, ex, image.shape)
    out = dict(ex)
    out["image"] = warp(image, cg)[..., None]
    for k in ("clean", *MASKS):
      if k in ex and bool(ex.get(f"has_{k}", False)):
        out[k] = warp(_grey(ex[k]), cg, nearest=k != "clean")[..., None]
      elif k in ex:
        out[k] = np.zeros((*self.crop_hw, 1), np.uint8)
    sp = float(ex.get("pixel_spacing_mm", math.nan))
    out["pixel_spacing_mm"] = np.float32(cg.spacing_on_crop(sp))
    return out

  def __repr__(self) -> str:
    return (f"CropSource({self.crop_hw}, x{self.copies}, shift {self.shift}, zoom {self.zoom}, "
            f"{self._source!r})")


# ---------------------------------------------------------------------------
# Inference: both stages
# ---------------------------------------------------------------------------


class TwoStage:
  """(B, H, W) images on the fine grid -> (B, H, W, 3) probabilities on the same grid.

  `stage1(x)` maps (B, h1, w1) letterboxed images to probabilities,
  `stage2(x)` (B, ch, cw) crops to probabilities (both e.g. jitted
  `inference.segmenter_probs_fn`). Stage 1's head ellipse (`method`) places
  each crop; stage 2's probabilities replace stage 1's inside the crop. An
  image where stage 1 finds no head keeps stage 1's probabilities.

  `refine` more passes of stage 2: each re-centres and re-scales the crop on
  the head ellipse fitted to the previous pass's crop (mapped back to the
  image exactly), so a crop that stage 1 placed off-centre or at the wrong
  scale (small heads on the coarse grid) converges to the crop stage 2 was
  trained on. A pass that finds no head keeps the previous one.
  `last_crops` holds the crop geometries of the last batch's final pass
  (None: no head).
  """

  def __init__(self, stage1, stage2, stage1_size, crop_size=DEFAULT_CROP, *,
               head_fraction=DEFAULT_HEAD_FRACTION, method: str = "robust", refine: int = 0):
    if refine < 0:
      raise ValueError(f"refine must be >= 0, got {refine}")
    self.stage1, self.stage2 = stage1, stage2
    self.stage1_size, self.crop_size = tuple(stage1_size), tuple(crop_size)
    self.head_fraction, self.method, self.refine = float(head_fraction), method, int(refine)
    self.last_crops: list[CropGeometry | None] = []

  def locate(self, images: np.ndarray):
    """Stage 1: (coarse probabilities on the fine grid, head ellipse or None) per image."""
    images = np.asarray(images, np.float32)
    coarse = [preprocess.letterbox(im, self.stage1_size) for im in images]
    p1 = np.asarray(self.stage1(np.stack([c for c, _ in coarse])))
    out = []
    for p, (_, g) in zip(p1, coarse, strict=True):
      e = segment_post.head_ellipse(self.method, prob=p[..., 0], geometry=g)
      out.append((preprocess.unletterbox(np.ascontiguousarray(p, np.float32), g), e))
    return out

  def _crop(self, image: np.ndarray, e: Ellipse | None) -> CropGeometry | None:
    if e is None or not (e.a > 1 and e.b > 1):
      return None
    return crop_geometry(e, image.shape, self.crop_size, head_fraction=self.head_fraction)

  def _stage2(self, images: np.ndarray, geoms: list) -> list:
    """Stage-2 probabilities on each crop (None where there is no crop)."""
    idx = [i for i, cg in enumerate(geoms) if cg is not None]
    out: list = [None] * len(geoms)
    if not idx:
      return out
    # Padded to the batch: one compiled shape whatever the number of heads found.
    x = np.zeros((len(images), *self.crop_size), np.float32)
    for j, i in enumerate(idx):
      x[j] = warp(images[i], geoms[i])
    p2 = np.asarray(self.stage2(x))
    for j, i in enumerate(idx):
      out[i] = p2[j]
    return out

  def __call__(self, images):
    images = np.asarray(images, np.float32)
    located = self.locate(images)
    geoms = [self._crop(im, e) for im, (_, e) in zip(images, located, strict=True)]
    probs = self._stage2(images, geoms)
    for _ in range(self.refine):
      moved = list(geoms)
      for i, (cg, p) in enumerate(zip(geoms, probs, strict=True)):
        if cg is not None:
          e = segment_post.head_ellipse(self.method, prob=p[..., 0], geometry=cg)
          moved[i] = self._crop(images[i], e) or cg
      again = self._stage2(images, [m if m is not g else None
                                    for m, g in zip(moved, geoms, strict=True)])
      probs = [q if q is not None else p for p, q in zip(probs, again, strict=True)]
      geoms = moved
    out = np.stack([p for p, _ in located]).astype(np.float32)
    for i, (cg, p) in enumerate(zip(geoms, probs, strict=True)):
      if cg is not None:
        out[i] = paste(p, cg, out[i])
    self.last_crops = geoms
    return out


def head_in_crop(e: Ellipse | None, cg: CropGeometry | None) -> Ellipse | None:
  """An image ellipse on the crop (exact: the map is a scale and a shift)."""
  if e is None or cg is None:
    return None
  return e.affine(*cg.to_crop_affine())
