"""The data model every builder yields (DESIGN.md, "Data model").

Unknowns are explicit: -1 for labels, NaN for measurements, an all-zero mask
with its `has_*` flag False for a missing mask or clean image. Masks are
stored with values {0, 1}. Images are PNG-encoded here because tfds cannot
encode numpy arrays without TensorFlow.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np
import tensorflow_datasets as tfds

from fbjax.core import labels
from fbjax.data import io

MASKS = ("head_mask", "skull_mask", "brain_mask")
# `pixel_aspect`: width / height of the area one stored pixel covers (1 for an
# image on its scanner's grid; e.g. ~1.45 for a 959x661 scan stretched to
# 640x640; NaN unknown). Resizing the width by it restores the true shape.
MEASUREMENTS = ("pixel_spacing_mm", "hc_mm", "bpd_mm", "ofd_mm", "ga_weeks",
                "atrial_width_mm", "tcd_mm", "pixel_aspect")


def _image():
  return tfds.features.Image(shape=(None, None, 1), dtype=np.uint8, encoding_format="png")


def features() -> tfds.features.FeaturesDict:
  spec = {
      "id": tfds.features.Text(),
      "group": tfds.features.Text(),
      "image": _image(),
      "clean": _image(),
      "has_clean": np.bool_,
      "plane": tfds.features.ClassLabel(names=labels.PLANES),
      "abnormal": tfds.features.ClassLabel(names=labels.ABNORMAL),
      "condition": tfds.features.ClassLabel(names=labels.CONDITIONS),
  }
  for m in MASKS:
    spec[m] = _image()
    spec[f"has_{m}"] = np.bool_
  for m in MEASUREMENTS:
    spec[m] = np.float32
  return tfds.features.FeaturesDict(spec)


# PNG settings of the stored features (shards are written once, read many
# times). Measured with OpenCV on HC18 images: the default adaptive filters
# (libpng often picks Paeth, the slowest to undo) decode ~1.5x slower than
# the "up" filter at level 1, which also encodes ~3x faster for ~10 % more
# bytes; {0, 1} masks decode fastest unfiltered.
IMAGE_PNG = (cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP)
MASK_PNG = (cv2.IMWRITE_PNG_COMPRESSION, 3, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE)


def _png(arr: np.ndarray, params=IMAGE_PNG) -> bytes:
  arr = np.asarray(arr)
  if arr.ndim == 3 and arr.shape[2] == 1:
    arr = arr[..., 0]
  if arr.ndim != 2 or arr.dtype != np.uint8:
    raise ValueError(f"expected a uint8 HxW image, got {arr.dtype} {arr.shape}")
  return io.encode_png(arr, params)


@functools.lru_cache(maxsize=64)
def _zeros_png(shape: tuple[int, int]) -> bytes:
  # Absent masks are all-zero images of the image's size: encode each size once.
  return _png(np.zeros(shape, np.uint8), MASK_PNG)


def example(*, id: str, group: str, image: np.ndarray,  # noqa: A002
            clean: np.ndarray | None = None,
            head_mask: np.ndarray | None = None,
            skull_mask: np.ndarray | None = None,
            brain_mask: np.ndarray | None = None,
            plane: int = labels.UNKNOWN, abnormal: int = labels.UNKNOWN,
            condition: int = labels.UNKNOWN, **measurements: float) -> dict:
  """One example in the shared data model; anything not given is 'unknown'.

  `image` and `clean` are uint8 HxW; masks are any HxW array, nonzero = inside.
  Measurements are keyword arguments named as in `MEASUREMENTS`.
  """
  unknown = set(measurements) - set(MEASUREMENTS)
  if unknown:
    raise KeyError(f"unknown measurement(s) {sorted(unknown)}; known: {MEASUREMENTS}")
  image = np.asarray(image)
  hw = tuple(int(d) for d in image.shape[:2])
  ex = {"id": id, "group": group, "image": _png(image),
        "plane": int(plane), "abnormal": int(abnormal), "condition": int(condition)}
  ex["has_clean"] = clean is not None
  ex["clean"] = _zeros_png(hw) if clean is None else _png(clean)
  given = {"head_mask": head_mask, "skull_mask": skull_mask, "brain_mask": brain_mask}
  for name, mask in given.items():
    ex[f"has_{name}"] = mask is not None
    if mask is None:
      ex[name] = _zeros_png(hw)
      continue
    if mask.shape[:2] != image.shape[:2]:
      raise ValueError(f"{id}: {name} shape {mask.shape} != image shape {image.shape}")
    ex[name] = _png((np.asarray(mask) > 0).astype(np.uint8), MASK_PNG)
  for m in MEASUREMENTS:
    v = measurements.get(m)
    ex[m] = np.float32(math.nan if v is None else v)
  return ex
