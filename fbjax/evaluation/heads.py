"""The head step: one rule for "is there a usable fetal head here, and where is it".

    head = heads.from_segmentation(grid, probs, geometry, image.shape, method="robust")
    head = heads.with_spacing(head, spacing_mm)     # the plausible HC, where the spacing is known
    crop = heads.crop(image, head.ellipse, size=(96, 128))   # uint8, `align.head_crop`
    ellipses, kinds = head_tables.table(block, split, source, config.input)  # every example

Training's aligned crops (`head_tables.table`, handed to `fbjax.data.aligned`), the
segmentation evaluation (`fbjax.evaluation.segment_eval`, `launch.evaluate`) and
prediction (`fbjax.predict`, `launch.predict`) all decide here, with the same
grid (`grid`: the image as float in [0, 1], letterboxed), the same ellipse fit
(`segment_post.head_ellipse`, the segmenter's `eval_method`), the same gate and
the same crop (`crop`, from the 8-bit image), so an image without a head mask
gets one verdict and one crop wherever it is read. What only a data set knows
stays there: a head mask (training takes its ellipse), the pixel spacing (the HC
range; predict knows it from --spacing_csv or --pixel_spacing_mm) and non-square
pixels (`pixel_aspect`, which training's crop undoes; predict takes a file's
pixels as square).

The verdict (`Head.quality`, `QUALITY`), checked in this order:

  no_head        no head pixels
  fit_failed     head pixels, but no ellipse could be fitted
  no_head        the gate's evidence of a skull fails (`fbjax.geometry.head_gate`); or
                 an implausible ellipse (centre outside the image, major axis
                 under `MIN_MAJOR_FRACTION` of the longer side, minor/major under
                 `MIN_AXIS_RATIO`); then (`with_spacing`), with a known pixel
                 spacing, an HC outside `head_gate.HC_MM_RANGE`. `Head.reason`
                 says which.
  cut_by_border  more than `CUT_FRACTION` of the ellipse lies outside the image
  poor_fit       the ellipse covers the predicted head region with a Dice under
                 `POOR_FIT_DICE`
  ok

A head with an ellipse (`Head.found`: ok, cut_by_border, poor_fit) is
measured and cropped (and an aligned-head classifier classifies it); the
others are not (a whole-image classifier still classifies a `fit_failed`
image, which needs no ellipse). A ground-truth mask
(HC18, the phantom) gives its head by `from_mask` under the same shape rule
(neither gate nor HC range: the annotation says a head is there).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence

import numpy as np

from fbjax.data import io, pipeline
from fbjax.evaluation import inference
from fbjax.geometry import align, biometry, ellipse_fit, head_gate, preprocess, segment_post
from fbjax.geometry.ellipse_fit import Ellipse

QUALITY = ("ok", "no_head", "fit_failed", "poor_fit", "cut_by_border")
# A head shorter than this fraction of the image's longer side, or flatter than this
# minor/major ratio (heads: cephalic index 0.7-0.85), is not taken as a head.
MIN_MAJOR_FRACTION = 0.1
MIN_AXIS_RATIO = 0.45
CUT_FRACTION = 0.02
POOR_FIT_DICE = 0.9
# Bumped whenever the rule above changes: cached tables of another rule are recomputed.
RULE_VERSION = 2


@dataclasses.dataclass(frozen=True)
class Head:
  """One image's head: the verdict (`quality`, `reason`), the ellipse in original pixels
  (None unless `found`) and the gate's evidence (None for a mask's head)."""

  quality: str
  reason: str = ""
  ellipse: Ellipse | None = None
  evidence: head_gate.Evidence | None = None
  source: str = "segmenter"

  @property
  def found(self) -> bool:
    return self.ellipse is not None

  @property
  def area_fraction(self) -> float:
    return self.evidence.area_fraction if self.evidence is not None else math.nan

  @property
  def ellipse_dice(self) -> float:
    return self.evidence.ellipse_dice if self.evidence is not None else math.nan

  def px(self) -> biometry.HeadBiometry:
    """HC, BPD, OFD in original pixels (NaN without an ellipse)."""
    return biometry.biometry_from_ellipse(self.ellipse, 1.0)


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


def as_float(image) -> np.ndarray:
  """A grey image (HxW, HxWx1, or a data set's encoded PNG) as float32 in [0, 1] (uint8 /
  255, uint16 / 65535; float as it is)."""
  img = pipeline.grey(image)
  if img.dtype == np.uint8:
    return img.astype(np.float32) / np.float32(255.0)
  if img.dtype == np.uint16:
    return img.astype(np.float32) / np.float32(65535.0)
  if img.dtype.kind != "f":
    raise ValueError(f"expected a uint8, uint16 or float image, got {img.dtype}")
  return np.asarray(img, np.float32)


def as_uint8(image) -> np.ndarray:
  """A grey image as uint8 (a float image in [0, 1] rounded, as `io.float_to_uint8`)."""
  img = pipeline.grey(image)
  return img if img.dtype == np.uint8 else io.float_to_uint8(as_float(img))


def grid(image, size: Sequence[int]) -> tuple[np.ndarray, preprocess.Geometry]:
  """What a segmenter reads: the image (float in [0, 1]) letterboxed onto `size`."""
  return preprocess.letterbox(as_float(image), tuple(int(v) for v in size))


def crop(image, ellipse: Ellipse, *, pixel_aspect: float = 1.0, **align_kwargs) -> np.ndarray:
  """The aligned head (uint8 (H, W), `align.head_crop`: the function training's data layer
  cuts with) of an image of any grey dtype or a data set's encoded PNG."""
  return align.head_crop(as_uint8(image), ellipse, pixel_aspect=pixel_aspect, **align_kwargs)


# ---------------------------------------------------------------------------
# The rule
# ---------------------------------------------------------------------------


def implausible(e: Ellipse | None, image_hw: Sequence[int]) -> str:
  """Why `e` is no head's ellipse in an image of `image_hw` ("" when it may be one)."""
  if e is None:
    return "no ellipse"
  vals = (e.cx, e.cy, e.a, e.b, e.theta)
  if not all(map(math.isfinite, vals)) or e.b <= 0 or e.a <= 0:
    return "no finite ellipse"
  h, w = image_hw
  if not (0 <= e.cx < w and 0 <= e.cy < h):
    return "ellipse centre outside the image"
  if 2 * e.a < MIN_MAJOR_FRACTION * max(h, w):
    return f"ellipse major axis {2 * e.a:.0f} px < {MIN_MAJOR_FRACTION:g} of the image"
  if e.b / e.a < MIN_AXIS_RATIO:
    return f"ellipse axis ratio {e.b / e.a:.2f} < {MIN_AXIS_RATIO:g}"
  return ""


def cut_by_border(e: Ellipse, box: tuple[int, int, int, int], hw: tuple[int, int]) -> bool:
  """Whether more than `CUT_FRACTION` of ellipse `e` (grid pixels) lies outside the image's
  part of the grid (`box`: y0, x0, y1, x1): rasterised on a canvas wide enough to hold all
  of it, so the image's own edges cut it as the letterbox's padding does."""
  h, w = hw
  pad = min(int(math.ceil(max(e.a, e.b))) + 1, 4 * max(h, w))
  shifted = dataclasses.replace(e, cx=e.cx + pad, cy=e.cy + pad)
  ell = ellipse_fit.rasterize(shifted, (h + 2 * pad, w + 2 * pad))
  y0, x0, y1, x1 = box
  inside = ell[y0 + pad:y1 + pad, x0 + pad:x1 + pad].sum()
  return bool(ell.sum() > (1 + CUT_FRACTION) * max(inside, 1))


def from_segmentation(grid_image: np.ndarray, probs: np.ndarray, geometry: preprocess.Geometry,
                      image_hw: Sequence[int], *, method: str = "robust",
                      gate: dict | None = None) -> Head:
  """The head of one image from a segmenter's output on its grid.

  `grid_image` (H, W) is what the segmenter read (`grid`), `probs` its (H, W, C)
  probabilities (channel 0: head) or (H, W) head probability, `geometry` the
  letterbox, `image_hw` the original image's size and `method` the ellipse fit
  (`segment_post.NETWORK_METHODS`; others fall back to "robust"). `gate`: the
  minimum evidence (None: `head_gate.THRESHOLDS`; {}: no gate nor shape rule).
  """
  gate = dict(head_gate.THRESHOLDS if gate is None else gate)
  head = np.asarray(probs)
  head = head[..., 0] if head.ndim == 3 else head
  box = ellipse_fit.valid_box(geometry, head.shape)
  y0, x0, y1, x1 = box
  e = None
  if (head[y0:y1, x0:x1] > 0.5).any():
    m = method if method in segment_post.NETWORK_METHODS else "robust"
    e = segment_post.head_ellipse(m, prob=head, geometry=geometry)
    if e is not None and not (np.isfinite(e.a) and np.isfinite(e.b) and e.b > 0):
      e = None
  ev = head_gate.evidence(grid_image, head, e.to_grid(geometry) if e else None, box)
  if ev.area_fraction == 0:
    return Head("no_head", "no head pixels", None, ev)
  if e is None:
    return Head("fit_failed", "", None, ev)
  failed = ev.failed(gate)
  if failed:
    return Head("no_head", "; ".join(f"{k} {getattr(ev, k):.3g} < {gate[k]:g}"
                                     for k in failed), None, ev)
  why = implausible(e, image_hw) if gate else ""
  if why:
    return Head("no_head", why, None, ev)
  if cut_by_border(e.to_grid(geometry), box, head.shape):
    quality = "cut_by_border"
  elif ev.ellipse_dice < POOR_FIT_DICE:
    quality = "poor_fit"
  else:
    quality = "ok"
  return Head(quality, "", e, ev)


def from_mask(mask, *, name: str = "<mask>") -> Head:
  """The head of a ground-truth head mask (HxW, nonzero = head): `align.ellipse_from_mask`
  under the shape rule (no gate)."""
  m = pipeline.grey(mask)
  try:
    e = align.ellipse_from_mask(m, name=name)
  except ValueError as err:
    return Head("fit_failed", str(err), None, None, "mask")
  why = implausible(e, m.shape)
  if why:
    return Head("no_head", why, None, None, "mask")
  h, w = m.shape
  quality = "cut_by_border" if cut_by_border(e, (0, 0, h, w), (h, w)) else "ok"
  return Head(quality, "", e, None, "mask")


def with_spacing(head: Head, spacing_mm: float, *, check: bool = True) -> Head:
  """`head`, or "no_head" where a known spacing puts its HC outside `head_gate.HC_MM_RANGE`
  (`check=False`: as it is, the gate being off)."""
  s = float(spacing_mm)
  if not (check and head.found and math.isfinite(s) and s > 0):
    return head
  hc = biometry.biometry_from_ellipse(head.ellipse, s).hc_mm
  lo, hi = head_gate.HC_MM_RANGE
  if lo <= hc <= hi:
    return head
  return dataclasses.replace(head, quality="no_head", ellipse=None,
                             reason=f"hc_mm {hc:.0f} outside [{lo:g}, {hi:g}]")


# ---------------------------------------------------------------------------
# The segmenter
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Segmenter:
  """A segmentation model: (B, H, W) grid images -> (B, H, W, 3) head/skull/brain probs."""

  size: tuple[int, int]
  predict: Callable
  method: str = "robust"
  # False for a host-side composition (the two-stage segmenter runs NumPy between its two
  # networks): it runs outside the predictor's jitted step.
  jittable: bool = True
  # How it runs, when that is not its workdir's own (mirror averaging, stages), else "":
  # training's ellipse tables use the workdir's own.
  not_as_trained: str = ""


def load_segmenter(seg_workdir: str | os.PathLike, *, tta: bool | None = None,
                   stages: int | None = None) -> Segmenter:
  """The segmentation workdir's model (`inference.load`: what the workdir records).

  `tta`: mirror averaging (each network run on the image and its mirror image)
  on or off instead of the workdir's `eval_flip`; off halves the segmenter's
  cost (docs/segment_coarse_fine.md measures its effect on HC). `stages=1` runs
  only the first stage of a two-stage segmenter (faster, less accurate: the
  bundle's model card gives both).
  """

  model = inference.load(seg_workdir, kind="segmenter")
  if stages not in (None, 1, 2):
    raise ValueError(f"segmenter stages must be 1 or 2, got {stages}")
  if stages == 2 and not model.two_stage:
    raise ValueError(f"{seg_workdir}: a single-stage segmenter (no second stage to run)")
  own_flip = bool(model.config.get("eval_flip", False))
  changed = []
  if tta is not None and bool(tta) != own_flip:
    changed.append(f"mirror averaging {'on' if tta else 'off'} (the workdir's: "
                   f"{'on' if own_flip else 'off'})")
  if stages == 1 and model.two_stage:
    model = model.stage1()
    changed.append("stage 1 only (the workdir's: both stages)")
  return Segmenter(size=model.size, predict=model.make_predict(flip=tta),
                   method=model.config.get("eval_method", "robust"),
                   jittable=not model.two_stage, not_as_trained="; ".join(changed))


def judge_images(images: Sequence[np.ndarray], segmenter: Segmenter, *,
                 spacings: Sequence[float] | None = None, gate: dict | None = None,
                 batch_size: int = 16) -> list[Head]:
  """The head of each image (any grey dtype, or a data set's encoded PNG) by `segmenter`,
  batch by batch (every batch padded to `batch_size`: one compiled shape)."""
  out = []
  size = tuple(segmenter.size)
  for i in range(0, len(images), batch_size):
    part = images[i:i + batch_size]
    grids = [grid(img, size) for img in part]
    x = np.zeros((batch_size, *size), np.float32)
    for j, (g, _) in enumerate(grids):
      x[j] = g
    probs = np.asarray(segmenter.predict(x))[: len(part)]
    for k, ((g, geom), p) in enumerate(zip(grids, probs, strict=True)):
      h = from_segmentation(g, p, geom, geom.orig_hw, method=segmenter.method, gate=gate)
      s = spacings[i + k] if spacings is not None else math.nan
      out.append(with_spacing(h, s, check=gate != {}))
  return out
