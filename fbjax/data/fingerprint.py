"""A data set's fingerprint (nnU-Net style) and a contact sheet, from a built tfds builder.

    b = builders.prepare("hc18", data_dir=..., manual_dir=...)
    fp = fingerprint.fingerprint(b)          # JSON-able dict
    sheet = fingerprint.contact_sheet(b)     # uint8 HxWx3 (BGR) image

The fingerprint holds, per split: counts per label (`plane`, `abnormal`,
`condition`, by name; -1 as "unknown"), how many examples carry each mask,
image sizes, statistics of `pixel_spacing_mm` and of the known biometry,
intensity percentiles of the stored images (all pixels, or a seeded sample
of `pixels_per_image` per image for larger images), and the groups (count and
names). `group_overlap` lists groups found in more than one split (empty for
a leakage-free data set).

`folder_fingerprint` fingerprints a raw folder (its files' names, sizes and contents):
what the release records of the public data it was built from.
"""

from __future__ import annotations

import collections
import hashlib
import math
import os
import pathlib

import cv2
import numpy as np
import tensorflow_datasets as tfds

from fbjax.core import labels
from fbjax.data import builders
from fbjax.data.features import MASKS

PERCENTILES = (0.5, 1, 5, 25, 50, 75, 95, 99, 99.5)
_LABEL_NAMES = {"plane": labels.PLANE_SHORT, "abnormal": labels.ABNORMAL,
                "condition": labels.CONDITIONS}


def _source(b, split):
  skip = {k: tfds.decode.SkipDecoding() for k in builders.IMAGE_FEATURES if k in b.info.features}
  return b.as_data_source(split=split, decoders=skip)


def _decode(png: bytes) -> np.ndarray:
  arr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
  return arr if arr.ndim == 2 else arr[..., 0]


def _stats(values) -> dict:
  v = np.asarray([x for x in values if math.isfinite(x)], np.float64)
  if v.size == 0:
    return {"known": 0}
  p = np.percentile(v, [5, 50, 95])
  return {"known": int(v.size), "min": float(v.min()), "p5": float(p[0]),
          "median": float(p[1]), "p95": float(p[2]), "max": float(v.max()),
          "mean": float(v.mean())}


def _str(v) -> str:
  return v.decode() if isinstance(v, bytes) else str(v)


def split_fingerprint(b, split: str, pixels_per_image: int = 4096, seed: int = 0) -> dict:
  src = _source(b, split)
  rng = np.random.default_rng(seed)
  label_counts = {k: collections.Counter() for k in _LABEL_NAMES}
  has = collections.Counter()
  sizes = collections.Counter()
  measurements = collections.defaultdict(list)
  groups = set()
  samples = []
  for i in range(len(src)):
    ex = src[i]
    for k, names in _LABEL_NAMES.items():
      v = int(ex[k])
      label_counts[k][names[v] if v >= 0 else "unknown"] += 1
    for m in (*MASKS, "clean"):
      has[m] += bool(ex[f"has_{m}"])
    img = _decode(ex["image"])
    sizes[f"{img.shape[1]}x{img.shape[0]}"] += 1
    for m in ("pixel_spacing_mm", "hc_mm", "bpd_mm", "ofd_mm"):
      measurements[m].append(float(ex[m]))
    groups.add(_str(ex["group"]))
    flat = img.reshape(-1)
    samples.append(flat if flat.size <= pixels_per_image
                   else flat[rng.integers(0, flat.size, pixels_per_image)])
  pix = np.concatenate(samples) if samples else np.zeros(0, np.uint8)
  intensity = {"sampled_pixels": int(pix.size)}
  if pix.size:
    intensity.update({f"p{p:g}": float(v) for p, v in
                      zip(PERCENTILES, np.percentile(pix, PERCENTILES), strict=True)})
    intensity.update(mean=float(pix.mean()), std=float(pix.std()),
                     zero_fraction=float((pix == 0).mean()))
  widths = [int(s.split("x")[0]) for s in sizes for _ in range(sizes[s])]
  heights = [int(s.split("x")[1]) for s in sizes for _ in range(sizes[s])]
  return {
      "num_examples": len(src),
      "labels": {k: dict(sorted(c.items())) for k, c in label_counts.items()},
      "with_mask": dict(has),
      "image_sizes": dict(sizes.most_common()),
      "width": _stats(widths), "height": _stats(heights),
      "measurements": {k: _stats(v) for k, v in measurements.items()},
      "intensity_uint8": intensity,
      "num_groups": len(groups),
      "groups": sorted(groups),
  }


def fingerprint(b, splits=None, **kw) -> dict:
  splits = splits or list(b.info.splits)
  per = {s: split_fingerprint(b, s, **kw) for s in splits}
  owners = collections.defaultdict(list)
  for s, fp in per.items():
    for g in fp["groups"]:
      owners[g].append(s)
  return {
      "name": b.name,
      "config": b.builder_config.name if b.builder_config else None,
      "version": str(b.version),
      "manual_dir": (b.info.metadata or {}).get("manual_dir"),
      "num_examples": sum(fp["num_examples"] for fp in per.values()),
      "num_groups": len(owners),
      "group_overlap": {g: s for g, s in sorted(owners.items()) if len(s) > 1},
      "splits": per,
  }


def _thumb(ex, size: int) -> np.ndarray:
  img = _decode(ex["image"])
  h, w = img.shape
  scale = size / max(h, w)
  nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
  tile = np.zeros((size, size, 3), np.uint8)
  small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
  oy, ox = (size - nh) // 2, (size - nw) // 2
  tile[oy:oy + nh, ox:ox + nw] = small[..., None]
  if bool(ex["has_head_mask"]):
    mask = cv2.resize(_decode(ex["head_mask"]), (nw, nh), interpolation=cv2.INTER_NEAREST)
    cs, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(tile[oy:oy + nh, ox:ox + nw], cs, -1, (0, 200, 255), 1)
  parts = []
  if int(ex["plane"]) >= 0:
    parts.append(labels.PLANE_SHORT[int(ex["plane"])])
  if int(ex["condition"]) >= 0:
    parts.append(labels.CONDITIONS[int(ex["condition"])][:18])
  if math.isfinite(float(ex["hc_mm"])):
    parts.append(f"HC {float(ex['hc_mm']):.0f}mm")
  if parts:
    tile[size - 14:] //= 3  # darken behind the text
    cv2.putText(tile, " ".join(parts), (2, size - 4), cv2.FONT_HERSHEY_PLAIN, 0.8,
                (80, 255, 80), 1, cv2.LINE_AA)
  return tile


def contact_sheet(b, per_split: int = 16, columns: int = 8, tile: int = 128,
                  seed: int = 0) -> np.ndarray:
  """A BGR image: `per_split` random examples of each split, split name on the left."""
  rng = np.random.default_rng(seed)
  rows = []
  label_w = 90
  for split in b.info.splits:
    src = _source(b, split)
    idx = np.sort(rng.choice(len(src), min(per_split, len(src)), replace=False))
    tiles = [_thumb(src[int(i)], tile) for i in idx]
    while len(tiles) % columns:
      tiles.append(np.zeros((tile, tile, 3), np.uint8))
    for r in range(0, len(tiles), columns):
      row = np.concatenate(tiles[r:r + columns], axis=1)
      head = np.full((tile, label_w, 3), 40, np.uint8)
      if r == 0:
        cv2.putText(head, split[:10], (4, 20), cv2.FONT_HERSHEY_PLAIN, 1.0, (255, 255, 255), 1,
                    cv2.LINE_AA)
        cv2.putText(head, f"n={len(src)}", (4, 40), cv2.FONT_HERSHEY_PLAIN, 0.9,
                    (200, 200, 200), 1, cv2.LINE_AA)
      rows.append(np.concatenate([head, row], axis=1))
      rows.append(np.full((2, label_w + columns * tile, 3), 90, np.uint8))
  return np.concatenate(rows, axis=0)


def folder_fingerprint(folder: str | os.PathLike) -> dict:
  """Every file under `folder`: count, total bytes, and one SHA-256 over the sorted
  (relative path, size, SHA-256 of the content) lines."""
  root = pathlib.Path(folder)
  if not root.is_dir():
    raise FileNotFoundError(f"{root}: no such folder (the recipe needs the public data "
                            "under --real_data; see each builder's README)")
  lines, total = [], 0
  for p in sorted(root.rglob("*")):
    if not p.is_file():
      continue
    h = hashlib.sha256()
    with open(p, "rb") as f:
      while chunk := f.read(1 << 20):
        h.update(chunk)
    size = p.stat().st_size
    total += size
    lines.append(f"{p.relative_to(root).as_posix()}\t{size}\t{h.hexdigest()}")
  digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
  return {"folder": root.name, "files": len(lines), "bytes": total, "sha256": digest}
