r"""Compact copies of the real data sets, in their own layouts, for machines without them.

An accelerator that cannot reach the data (and takes at most a few tens of MB
along) runs the benchmarks on these copies through the same builders:

  python -m benchmarks.shrink_real_data --dataset hc18 --src ../shared/data/hc18 \
      --dst /tmp/small/hc18
  python -m benchmarks.shrink_real_data --dataset fetal_brain_abnormalities \
      --src ../shared/data/fetal_brain_abnormalities --dst /tmp/small/fetal_brain_abnormalities

- hc18: every training image and annotation at 1/`--factor` of the size
  (INTER_AREA; the annotation outline re-thresholded, so it stays closed),
  `pixel size(mm)` multiplied by the factor, `head circumference (mm)` as
  given; of the test set only the first `--test_images` images (the
  benchmarks use the training set's train / validation split only). At
  factor 2 (400x270) the images are still larger than the 256x384 grid.
- fetal_brain_abnormalities: every image resized to at most `--max_side`
  pixels (INTER_AREA), JPEG quality `--quality`, names and CSVs unchanged.
  At 224 it equals what the 224 px benchmarks feed the network, but decoding
  is cheaper than from the 640 px originals: pipeline speed measured on the
  copy is an upper bound.
"""

from __future__ import annotations

import csv
import pathlib
import shutil
import sys

import cv2
import numpy as np
from absl import app, flags

_DATASET = flags.DEFINE_enum("dataset", None, ["hc18", "fetal_brain_abnormalities"],
                             "The data set to copy.")
_SRC = flags.DEFINE_string("src", None, "Its folder.")
_DST = flags.DEFINE_string("dst", None, "The compact copy's folder.")
_FACTOR = flags.DEFINE_integer("factor", 2, "hc18: downscale factor.")
_TEST_IMAGES = flags.DEFINE_integer("test_images", 16, "hc18: test images kept.")
_MAX_SIDE = flags.DEFINE_integer("max_side", 224, "abnormalities: longest side.")
_QUALITY = flags.DEFINE_integer("quality", 95, "abnormalities: JPEG quality.")
flags.mark_flags_as_required(["dataset", "src", "dst"])


def _write(path: pathlib.Path, img: np.ndarray, params=()) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  if not cv2.imwrite(str(path), img, list(params)):
    raise OSError(f"{path}: could not write")


def _read(path: pathlib.Path) -> np.ndarray:
  img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
  if img is None:
    raise ValueError(f"{path}: not a readable image")
  return img


def hc18(src: pathlib.Path, dst: pathlib.Path, factor: int, test_images: int) -> int:
  rows = list(csv.reader(open(src / "training_set_pixel_size_and_HC.csv", newline="")))
  out_rows = [rows[0]]
  for r in rows[1:]:
    if not r:
      continue
    name, spacing, hc = r[0], float(r[1]), r[2]
    img = _read(src / "training_set" / name)
    ann = _read(src / "training_set" / name.replace(".png", "_Annotation.png"))
    size = (img.shape[1] // factor, img.shape[0] // factor)
    small = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    outline = (cv2.resize(ann, size, interpolation=cv2.INTER_AREA) > 0).astype(np.uint8) * 255
    _write(dst / "training_set" / name, small, (cv2.IMWRITE_PNG_COMPRESSION, 9))
    _write(dst / "training_set" / name.replace(".png", "_Annotation.png"), outline)
    out_rows.append([name, repr(spacing * factor), hc])
  with open(dst / "training_set_pixel_size_and_HC.csv", "w", newline="") as f:
    csv.writer(f).writerows(out_rows)
  rows = [r for r in csv.reader(open(src / "test_set_pixel_size.csv", newline="")) if r]
  test_rows = [rows[0]]
  for name, spacing in rows[1:1 + test_images]:
    img = _read(src / "test_set" / name)
    size = (img.shape[1] // factor, img.shape[0] // factor)
    _write(dst / "test_set" / name, cv2.resize(img, size, interpolation=cv2.INTER_AREA),
           (cv2.IMWRITE_PNG_COMPRESSION, 9))
    test_rows.append([name, repr(float(spacing) * factor)])
  with open(dst / "test_set_pixel_size.csv", "w", newline="") as f:
    csv.writer(f).writerows(test_rows)
  return len(out_rows) - 1


def fetal_brain_abnormalities(src: pathlib.Path, dst: pathlib.Path, max_side: int,
                              quality: int) -> int:
  n = 0
  for p in sorted(src.rglob("*")):
    if not p.is_file():
      continue
    q = dst / p.relative_to(src)
    if p.suffix.lower() in (".jpg", ".jpeg", ".png"):
      img = _read(p)
      s = max_side / max(img.shape)
      if s < 1:
        img = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)),
                         interpolation=cv2.INTER_AREA)
      _write(q, img, (cv2.IMWRITE_JPEG_QUALITY, quality))
      n += 1
    else:
      q.parent.mkdir(parents=True, exist_ok=True)
      shutil.copyfile(p, q)
  return n


def main(argv) -> int:
  del argv
  src, dst = pathlib.Path(_SRC.value), pathlib.Path(_DST.value)
  if dst.resolve() == src.resolve():
    raise app.UsageError("--dst must differ from --src")
  if _DATASET.value == "hc18":
    n = hc18(src, dst, _FACTOR.value, _TEST_IMAGES.value)
  else:
    n = fetal_brain_abnormalities(src, dst, _MAX_SIDE.value, _QUALITY.value)
  print(f"wrote {n} images to {dst}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  app.run(main)
