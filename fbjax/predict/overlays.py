"""The pictures of a row: the overlay (image, masks, head ellipse, caption, the aligned
head inset) and the crop PNG.
"""

from __future__ import annotations

import os
import pathlib

import cv2
import numpy as np

from fbjax.core import plots
from fbjax.geometry import preprocess
from fbjax.predict import rows


def crop_path(overlay_path: pathlib.Path) -> pathlib.Path:
  """Where the aligned head of an overlay goes: `<out>/crops/<overlay name>`."""
  return overlay_path.parent.parent / "crops" / overlay_path.name


def crop_picture(crop: np.ndarray, height: int) -> np.ndarray:
  """The classifier's input crop as an RGB picture `height` px high (white frame)."""
  c = plots.to_rgb_uint8(crop)
  w = max(1, round(c.shape[1] * height / c.shape[0]))
  c = cv2.resize(c, (w, height), interpolation=cv2.INTER_LINEAR if height < c.shape[0]
                 else cv2.INTER_NEAREST)
  return cv2.copyMakeBorder(c, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=(255, 255, 255))


def write_crop(path: pathlib.Path, crop: np.ndarray) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  pic = crop_picture(crop, max(crop.shape[0], 96))
  cv2.imwrite(os.fspath(path), pic[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])


def write_overlay(path: pathlib.Path, image: np.ndarray, masks, ellipse, text: str,
                  max_side: int = 512, crop: np.ndarray | None = None) -> None:
  """The image with masks, head ellipse and caption; `crop` (the aligned head the
  classifier read) is inset in the bottom-right corner."""
  img, m, e = image, masks, ellipse
  s = max_side / max(image.shape)
  if s < 1:
    size = (max(1, round(image.shape[1] * s)), max(1, round(image.shape[0] * s)))
    img = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    m = {k: cv2.resize(v, size, interpolation=cv2.INTER_NEAREST) for k, v in (masks or {}).items()}
    # Exact per-axis scales and pixel centres of the resize (as in `preprocess.Geometry`).
    sx, sy = size[0] / image.shape[1], size[1] / image.shape[0]
    e = ellipse.affine((sx, sy), (0.5 * sx - 0.5, 0.5 * sy - 0.5)) if ellipse is not None \
        else None
  rgb = plots.overlay(img, masks=m, ellipse=e, text=text)
  if crop is not None:
    hh, ww = rgb.shape[:2]
    inset = crop_picture(crop, max(8, min(hh // 3, round(ww / 3 * crop.shape[0]
                                                         / crop.shape[1]))))
    ih, iw = inset.shape[:2]
    if ih < hh and iw < ww:
      rgb[hh - ih:, ww - iw:] = inset
  cv2.imwrite(os.fspath(path), rgb[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])


def draw(path: pathlib.Path, image: np.ndarray, row: dict, *, head: dict | None,
         no_head: bool, probs: np.ndarray | None, geometry, max_side: int) -> None:
  """The overlay of one row (and the crop beside it); sets `row["overlay"]`.

  Skull and brain masks from the segmenter's `probs` (its grid, `geometry`), the head
  ellipse unless the head step found none, the aligned head the classifier read, and
  the row's `rows.caption`.
  """
  masks, ellipse, crop = None, None, None
  if head is not None:
    masks = {c: preprocess.unletterbox((probs[..., j] > 0.5).astype(np.uint8), geometry,
                                       nearest=True)
             for j, c in enumerate(("head", "skull", "brain")) if c != "head"}
    ellipse = None if row["seg_quality"] == "no_head" else head["_ellipse"]
    crop = None if no_head else head.get("_crops", [None])[0]
  text = rows.caption(row)
  if row["seg_quality"] == "no_head":
    text = "no fetal head" + (f"\n{text}" if text else "")
  write_overlay(path, image, masks, ellipse, text, max_side, crop=crop)
  if crop is not None:
    write_crop(crop_path(path), crop)
  row["overlay"] = path.name
