"""Contact sheets of the phantom, and HC18 images resampled to its pixel spacing.

`plane_condition_sheet` draws every plane x condition the phantom shows (image
beside its masks: head filled dark grey, brain light grey, skull white).
`hc18_sheet` puts real HC18 images (with their filled ellipse annotation) next
to phantom trans-thalamic images at the same pixel spacing, so speckle grain,
skull and brain can be compared by eye; `fbjax.phantom.realism_table` measures the
same comparison.
"""

from __future__ import annotations

import csv
import math
import os
import pathlib

import cv2
import numpy as np

from fbjax.core import labels
from fbjax.data import io
from fbjax.phantom import simulator as phantom

HC18_CSV = "training_set_pixel_size_and_HC.csv"
MID_GESTATION_HC_MM = (140.0, 240.0)   # HC18 heads of about 18-24 weeks


def mask_panel(sim: dict) -> np.ndarray:
  panel = sim["head_mask"] * np.uint8(70)
  panel[sim["brain_mask"] > 0] = 140
  panel[sim["skull_mask"] > 0] = 255
  return panel


def _label(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.4) -> None:
  cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, 255, 1, cv2.LINE_AA)


def plane_condition_sheet(*, seed: int = 0, size: int = 128) -> np.ndarray:
  """Rows: phantom conditions; columns: TT, TC, TV, other; each cell image | masks."""
  margin_l, margin_t = 190, 24
  planes = range(len(labels.PLANES))
  rows = labels.PHANTOM_CONDITIONS
  sheet = np.zeros((margin_t + len(rows) * (size + 4), margin_l + len(planes) * (2 * size + 8)),
                   np.uint8)
  for j in planes:
    _label(sheet, labels.PLANES[j], (margin_l + j * (2 * size + 8) + 4, 16), 0.45)
  for i, cond in enumerate(rows):
    y = margin_t + i * (size + 4)
    _label(sheet, cond, (4, y + size // 2), 0.45)
    for j in planes:
      x = margin_l + j * (2 * size + 8)
      if j not in phantom.CONDITION_PLANES[cond]:
        _label(sheet, "not shown", (x + size - 30, y + size // 2))
        continue
      sim = phantom.simulate(seed, i * 4 + j, size=size, plane=j, condition=cond,
                             overlays=False)
      sheet[y:y + size, x:x + size] = sim["image"]
      sheet[y:y + size, x + size:x + 2 * size] = mask_panel(sim)
  return sheet


# ---------------------------------------------------------------------------
# HC18 at the phantom's pixel spacing


def hc18_items(real_data: str | os.PathLike,
               hc_range: tuple[float, float] = MID_GESTATION_HC_MM) -> list[tuple]:
  """(image path, annotation path, pixel spacing mm, HC mm) of HC18 images in `hc_range`."""
  root = pathlib.Path(real_data)
  if (root / "hc18").is_dir():
    root = root / "hc18"
  table = root / HC18_CSV
  if not table.exists():
    raise FileNotFoundError(f"{table}: HC18 table not found (expected the Zenodo layout)")
  items = []
  with open(table, newline="", encoding="utf-8-sig") as f:
    rows = list(csv.reader(f))
  head = [h.strip().lower() for h in rows[0]] if rows else []
  want = ("filename", "pixel size(mm)", "head circumference (mm)")
  if any(c not in head for c in want):
    raise ValueError(f"{table}: expected the columns {list(want)}; the columns are "
                     f"{rows[0] if rows else []}")
  cols = [head.index(c) for c in want]
  for row in rows[1:]:
    if not any(v.strip() for v in row):
      continue
    name, spacing, hc = row[cols[0]].strip(), float(row[cols[1]]), float(row[cols[2]])
    if hc_range[0] <= hc <= hc_range[1]:
      stem = name[:-4]
      items.append((root / "training_set" / name,
                    root / "training_set" / f"{stem}_Annotation.png", spacing, hc))
  return items


def read_hc18(item: tuple) -> tuple[np.ndarray, np.ndarray, tuple]:
  """uint8 image, filled head mask {0,1} and the fitted ellipse of one HC18 item."""
  img = io.read_image_uint8(item[0])
  ann = io.read_image(item[1]) > 0.5
  ys, xs = np.nonzero(ann)
  ellipse = cv2.fitEllipse(np.stack([xs, ys], 1).astype(np.float32))
  mask = np.zeros_like(img)
  cv2.ellipse(mask, ellipse, 1, -1)
  return img, mask, ellipse


def resample(img: np.ndarray, spacing_mm: float, target_mm: float, size: int,
             center_xy: tuple[float, float], nearest: bool = False) -> np.ndarray:
  """`img` resampled to `target_mm` per pixel, a size x size window around `center_xy`."""
  s = spacing_mm / target_mm   # output pixels per input pixel
  cx, cy = center_xy
  m = np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]], np.float32)
  if s < 1 and not nearest:   # average before decimating, like INTER_AREA
    k = 0.5 * math.sqrt(max(1.0 / (s * s) - 1.0, 0.0))
    img = cv2.GaussianBlur(img, (0, 0), k) if k > 0.3 else img
  return cv2.warpAffine(img, m, (size, size),
                        flags=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def hc18_pairs(real_data: str | os.PathLike, *, num: int, seed: int = 0, size: int = 256):
  """Yields (hc18 image, hc18 mask, phantom sim, hc18 HC mm) at the phantom's pixel spacing.

  HC18 images are taken evenly over the mid-gestation ones; each phantom image
  is a normal trans-thalamic image and each HC18 image is resampled to its
  spacing and centred on its head like the phantom's head.
  """
  items = hc18_items(real_data)
  picks = [items[int(k)] for k in np.linspace(0, len(items) - 1, num)]
  for k, item in enumerate(picks):
    sim = phantom.simulate(seed, k, size=size, plane="TT", condition="normal",
                           overlays=False)
    img, mask, ellipse = read_hc18(item)
    m = sim["head_mask"]
    ys, xs = np.nonzero(m)
    # the phantom's head centre -> place HC18's head at the same position
    c_sim = (xs.mean(), ys.mean())
    shift = ((c_sim[0] - size / 2), (c_sim[1] - size / 2))
    s = item[2] / sim["pixel_spacing_mm"]
    center = (ellipse[0][0] - shift[0] / s, ellipse[0][1] - shift[1] / s)
    yield (resample(img, item[2], sim["pixel_spacing_mm"], size, center),
           resample(mask, item[2], sim["pixel_spacing_mm"], size, center, nearest=True), sim,
           item[3])


def hc18_sheet(real_data: str | os.PathLike, *, num: int = 6, seed: int = 0,
               size: int = 128) -> np.ndarray:
  """Rows: HC18 image | its head mask | phantom image | its masks, same pixel spacing."""
  top = 24
  sheet = np.zeros((top + num * (size + 4), 4 * size + 12), np.uint8)
  for j, t in enumerate(("HC18", "HC18 head", "phantom", "phantom masks")):
    _label(sheet, t, (j * (size + 4) + 4, 16))
  for i, (img, mask, sim, _) in enumerate(hc18_pairs(real_data, num=num, seed=seed, size=size)):
    y = top + i * (size + 4)
    for j, panel in enumerate((img, mask * np.uint8(255), sim["image"], mask_panel(sim))):
      sheet[y:y + size, j * (size + 4):j * (size + 4) + size] = panel
    _label(sheet, f"{sim['pixel_spacing_mm']:.2f} mm/px", (4, y + size - 6), 0.35)
  return sheet


def write_sheets(path: str | os.PathLike, *, seed: int = 0, size: int = 128,
                 real_data: str | os.PathLike | None = None) -> list[pathlib.Path]:
  """Writes the plane x condition sheet to `path` and, with HC18, `<stem>_hc18.png`."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  written = [path]
  cv2.imwrite(str(path), plane_condition_sheet(seed=seed, size=size),
              [cv2.IMWRITE_PNG_COMPRESSION, 9])
  if real_data and pathlib.Path(real_data).exists():
    p2 = path.with_name(f"{path.stem}_hc18.png")
    cv2.imwrite(str(p2), hc18_sheet(real_data, seed=seed, size=size),
                [cv2.IMWRITE_PNG_COMPRESSION, 9])
    written.append(p2)
  return written
