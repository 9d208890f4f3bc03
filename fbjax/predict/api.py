"""The Python API: arrays or files in, rows out, no files written.
"""

from __future__ import annotations

import math
import os
import pathlib

import numpy as np

from fbjax.core import bundle as bundle_lib
from fbjax.data import io
from fbjax.predict.engine import Predictor


def predict_images(images, model=None, seg_model=None, *, pixel_spacing_mm=None,
                   batch_size: int = 8, seg_tta: bool | None = None,
                   gate: dict | None = None, predictor: Predictor | None = None) -> list[dict]:
  """Predictions for images given as arrays or file paths, with the shipped bundle by default.

      rows = predict.predict_images(["scan.png"], pixel_spacing_mm=0.15)
      rows[0]["hc_mm"], rows[0]["plane"], rows[0]["probabilities"]["plane"]

  `images`: one or a list of file paths and/or arrays (HxW grey, HxWx3 RGB or HxWx4;
  uint8, uint16 or float in [0, 1]). `model` / `seg_model`: a classification and a
  segmentation workdir, or a bundle (default: `fbjax.core.bundle.DEFAULT`, both).
  `pixel_spacing_mm`: one value or one per image (None: HC in pixels only).
  Per image: the `predictions.csv` row (`COLUMNS`, `file` is the path or "<array k>")
  plus `ellipse` (cx, cy, a, b, theta in original pixels; None without a head) and
  `probabilities` ({task: {class: calibrated probability}}). An unreadable file raises
  `io.ImageReadError` naming it.
  """

  single = isinstance(images, (str, os.PathLike, np.ndarray))
  images = [images] if single else list(images)
  if predictor is None:
    model = bundle_lib.DEFAULT if model is None and seg_model is None else model
    seg_model = model if seg_model is None and bundle_lib.resolve(model or "") else seg_model
    predictor = Predictor(model, seg_model, batch_size=batch_size, gate=gate,
                          seg_tta=seg_tta)
  spacings = (list(pixel_spacing_mm) if isinstance(pixel_spacing_mm, (list, tuple, np.ndarray))
              else [pixel_spacing_mm] * len(images))
  if len(spacings) != len(images):
    raise ValueError(f"{len(spacings)} pixel spacings for {len(images)} images")
  out = []
  bs = predictor.batch_size
  for start in range(0, len(images), bs):
    items = []
    for k, im in enumerate(images[start:start + bs], start=start):
      if isinstance(im, np.ndarray):
        items.append(predictor.prepare_array(array_to_grey(im, f"<array {k}>"),
                                             f"<array {k}>"))
      else:
        items.append(predictor.prepare(pathlib.Path(im)))
    res = predictor.infer(items)
    for i, item in enumerate(items):
      sp = spacings[start + i]
      details: dict = {}
      row = predictor.finish(item, res, i, math.nan if sp is None else float(sp), None,
                             details=details)
      e = details["ellipse"]
      row["ellipse"] = None if e is None else tuple(float(v) for v in (e.cx, e.cy, e.a, e.b,
                                                                        e.theta))
      row["probabilities"] = {t: dict(zip(predictor.clf.class_names(t),
                                          (float(x) for x in p), strict=True))
                              for t, p in details["probabilities"].items()}
      out.append(row)
  return out


def array_to_grey(arr: np.ndarray, name: str = "<array>") -> np.ndarray:
  """An image array as float32 grey in [0, 1]: uint8 / uint16 (grey, RGB or RGBA, as
  `fbjax.data.io` reads files) or float already in [0, 1]."""
  a = np.asarray(arr)
  if a.ndim == 3 and a.shape[2] in (3, 4):
    a = a[..., [2, 1, 0]] if a.shape[2] == 3 else a[..., [2, 1, 0, 3]]   # RGB -> OpenCV's BGR
  if a.dtype in (np.uint8, np.uint16):
    scale = 65535.0 if a.dtype == np.uint16 else 255.0
    return io.to_grey(a).astype(np.float32) / np.float32(scale)
  if np.issubdtype(a.dtype, np.floating):
    g = io.to_grey(a.astype(np.float32)) if a.ndim == 3 else a.astype(np.float32)
    if g.size and not (np.nanmin(g) >= 0.0 and np.nanmax(g) <= 1.0):
      raise io.ImageReadError(name, "float image outside [0, 1]")
    return g
  raise io.ImageReadError(name, f"unsupported pixel type {a.dtype}")
