"""HC18: fetal head circumference images with ellipse annotations (tfds builder).

Reads the Zenodo layout (doi:10.5281/zenodo.1327317) from the manual folder
and writes array_record shards in the fbjax data model:

- `image`: the 8-bit grey image; `pixel_spacing_mm` and `hc_mm` from the CSVs;
- `head_mask`: the annotated ellipse, filled: the inside of the thin outline
  (flood fill from the centre of the ellipse fitted to the outline, so an
  ellipse that runs off the image border is filled correctly) plus the
  outline pixels whose centre lies inside the fitted ellipse (the outline is
  ~2.5 px thick and centred on the annotated ellipse);
- `bpd_mm`, `ofd_mm`: minor and major axis of the ellipse fitted to the
  outline (cv2.fitEllipse returns full axis lengths) times the pixel size;
- `group`: `hc18-NNN` from the numeric prefix (`010_HC`, `010_2HC`, ... are
  one pregnancy), `hc18-test-NNN` for the unlabelled test images.

Splits (`fbjax.data.splits.assign`): `train` / `validation` 4:1 by group
(salted-hash rank) from the training set; `test` = the official test set
without annotations (`has_head_mask` False, `hc_mm` NaN). A folder holding
only the labelled part (no `test_set/` and no `test_set_pixel_size.csv`)
builds without the `test` split; one of the two without the other is an
error. `pixel_aspect` is 1 (images on the scanner's grid).

The CSV columns are found by name (`filename`, `pixel size(mm)`,
`head circumference (mm)`), whatever their order; a missing one is an error
listing the header.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import pathlib
import re

import cv2
import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from fbjax.data import builder_utils, features, splits

TRAIN_CSV = "training_set_pixel_size_and_HC.csv"
TEST_CSV = "test_set_pixel_size.csv"
EXPECTED = ("training_set", TRAIN_CSV)                # the labelled part: required
TEST_PART = ("test_set", TEST_CSV)                    # the unlabelled part: both or neither
FILE_COLUMN = "filename"
SPACING_COLUMN = "pixel size(mm)"
HC_COLUMN = "head circumference (mm)"
_STEM = re.compile(r"^(\d+)_(\d*)HC$")


@dataclasses.dataclass(frozen=True)
class Item:
  id: str              # path relative to the manual folder
  group: str
  image: pathlib.Path
  annotation: pathlib.Path | None
  spacing_mm: float
  hc_mm: float


def ellipse_from_outline(outline: np.ndarray, path: pathlib.Path | str = "<array>"):
  """cv2.fitEllipse over all outline pixels: ((cx, cy), (full_w, full_h), angle_deg)."""
  ys, xs = np.nonzero(outline)
  if len(xs) < 5:
    raise ValueError(f"{path}: annotation has {len(xs)} outline pixels; an ellipse needs >= 5")
  return cv2.fitEllipse(np.stack([xs, ys], 1).astype(np.float32))


def fill_outline(outline: np.ndarray, path: pathlib.Path | str = "<array>") -> tuple:
  """Filled head mask (uint8 {0,1}) and the fitted ellipse from a thin outline.

  Raises ValueError naming `path` when the outline is not a closed curve
  around the ellipse centre (the fill would leak outside the ellipse).
  """
  o = (np.asarray(outline) > 127).astype(np.uint8)
  (cx, cy), (w, h), ang = ellipse = ellipse_from_outline(o, path)
  hh, ww = o.shape
  seed = (int(round(cx)), int(round(cy)))
  if not (0 <= seed[0] < ww and 0 <= seed[1] < hh) or o[seed[1], seed[0]]:
    raise ValueError(f"{path}: the ellipse centre {seed} is outside the image or on the outline")
  filled = o.copy()
  cv2.floodFill(filled, np.zeros((hh + 2, ww + 2), np.uint8), seed, 2)
  interior = filled == 2
  # Outline pixels whose centre lies inside the fitted ellipse.
  ys, xs = np.nonzero(o)
  t = math.radians(ang)
  dx, dy = xs - cx, ys - cy
  u = dx * math.cos(t) + dy * math.sin(t)
  v = -dx * math.sin(t) + dy * math.cos(t)
  keep = (u / (w / 2)) ** 2 + (v / (h / 2)) ** 2 <= 1.0
  mask = interior.astype(np.uint8)
  mask[ys[keep], xs[keep]] = 1
  # A gap in the outline lets the fill leak: compare with the ellipse's area.
  expected = math.pi * w * h / 4
  if mask.sum() > 1.05 * expected + 10 * (w + h):
    raise ValueError(f"{path}: the outline is not closed (the fill leaks out of the ellipse: "
                     f"{int(mask.sum())} px filled, ellipse area {expected:.0f} px)")
  return mask, ellipse


def _read_csv(path: pathlib.Path, columns: tuple[str, ...],
              problems: list[str]) -> dict[str, list[float]]:
  """{file name: [values of `columns`]} of an HC18 CSV; columns found by name."""
  rows: dict[str, list[float]] = {}
  with open(path, newline="", encoding="utf-8-sig") as f:
    lines = list(csv.reader(f))
  if not lines:
    problems.append(f"{path}: empty CSV")
    return rows
  head = [h.strip().lower() for h in lines[0]]
  missing = [c for c in (FILE_COLUMN, *columns) if c not in head]
  if missing:
    problems.append(f"{path}:1: missing column(s) {missing}; the columns are {lines[0]}")
    return rows
  fcol, cols = head.index(FILE_COLUMN), [head.index(c) for c in columns]
  for i, row in enumerate(lines[1:], start=2):
    if not row or all(not c.strip() for c in row):
      continue
    if len(row) != len(head):
      problems.append(f"{path}:{i}: expected {len(head)} fields, got {len(row)}: {row}")
      continue
    try:
      vals = [float(row[c]) for c in cols]
    except ValueError:
      problems.append(f"{path}:{i}: non-numeric value in {row}")
      continue
    if not all(math.isfinite(v) and v > 0 for v in vals):
      problems.append(f"{path}:{i}: values must be positive numbers: {row}")
      continue
    name = row[fcol].strip()
    if name in rows:
      problems.append(f"{path}:{i}: duplicate row for {name}")
    rows[name] = vals
  return rows


def _pngs(folder: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png")


def scan(root: pathlib.Path) -> tuple[list[Item], list[Item]]:
  """Lists and cross-checks the manual files; raises `DataError` listing every problem."""
  problems: list[str] = []
  train_rows = _read_csv(root / TRAIN_CSV, (SPACING_COLUMN, HC_COLUMN), problems)
  present = [(root / p).exists() for p in TEST_PART]
  if any(present) and not all(present):
    have, lack = (TEST_PART if present[0] else TEST_PART[::-1])
    problems.append(f"{root / lack}: missing, but {root / have} is there (the unlabelled "
                    "test part needs both, or neither for a labelled-only folder)")
  test_rows = _read_csv(root / TEST_CSV, (SPACING_COLUMN,), problems) if all(present) else {}
  labelled: list[Item] = []
  tdir = root / "training_set"
  files = {p.name: p for p in _pngs(tdir)}
  images = {n: p for n, p in files.items() if not n.endswith("_Annotation.png")}
  annotations = {n: p for n, p in files.items() if n.endswith("_Annotation.png")}
  for name in train_rows:
    if name not in images:
      problems.append(f"{root / TRAIN_CSV}: row {name!r} has no image {tdir / name}")
  for name, path in images.items():
    stem = name[:-4]
    m = _STEM.match(stem)
    ann = tdir / f"{stem}_Annotation.png"
    if not m:
      problems.append(f"{path}: file name does not match NNN_HC.png / NNN_kHC.png")
      continue
    if ann.name not in annotations:
      problems.append(f"{path}: image without its annotation {ann}")
      continue
    if name not in train_rows:
      problems.append(f"{path}: image without a row in {root / TRAIN_CSV}")
      continue
    spacing, hc = train_rows[name]
    labelled.append(Item(f"training_set/{name}", f"hc18-{m.group(1)}", path, ann, spacing, hc))
  for name, path in annotations.items():
    if name.replace("_Annotation", "") not in images:
      problems.append(f"{path}: annotation without its image "
                      f"{tdir / name.replace('_Annotation', '')}")
  unlabelled: list[Item] = []
  sdir = root / "test_set"
  test_images = {p.name: p for p in _pngs(sdir)} if all(present) else {}
  for name in test_rows:
    if name not in test_images:
      problems.append(f"{root / TEST_CSV}: row {name!r} has no image {sdir / name}")
  for name, path in test_images.items():
    m = _STEM.match(name[:-4])
    if not m:
      problems.append(f"{path}: file name does not match NNN_HC.png")
      continue
    if name not in test_rows:
      problems.append(f"{path}: image without a row in {root / TEST_CSV}")
      continue
    unlabelled.append(Item(f"test_set/{name}", f"hc18-test-{m.group(1)}", path, None,
                           test_rows[name][0], math.nan))
  if problems:
    raise builder_utils.DataError("hc18", problems)
  return labelled, unlabelled


def encode(item: Item) -> tuple[str, dict]:
  """Reads one image (and annotation) and returns (key, example)."""
  image = builder_utils.read_grey_uint8(item.image)
  if item.annotation is None:
    return item.id, features.example(id=item.id, group=item.group, image=image,
                                     pixel_spacing_mm=item.spacing_mm, pixel_aspect=1.0)
  ann = builder_utils.read_grey_uint8(item.annotation)
  if ann.shape != image.shape:
    raise ValueError(f"{item.annotation}: annotation size {ann.shape[::-1]} differs from its "
                     f"image {item.image} ({image.shape[::-1]})")
  mask, (_, (w, h), _) = fill_outline(ann, item.annotation)
  s = item.spacing_mm
  return item.id, features.example(
      id=item.id, group=item.group, image=image, head_mask=mask,
      pixel_spacing_mm=s, hc_mm=item.hc_mm, bpd_mm=min(w, h) * s, ofd_mm=max(w, h) * s,
      pixel_aspect=1.0)


class Builder(tfds.core.GeneratorBasedBuilder):
  """HC18 head-circumference images (manual download)."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.0.0": "Filled head masks, BPD/OFD from the fitted ellipse, 4:1 train/validation "
               "by numeric-prefix group, unlabelled test split.",
      "1.1.0": "Splits from fbjax.data.splits (the same assignment as 1.0.0); feature "
               "pixel_aspect (1).",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download from Zenodo (doi:10.5281/zenodo.1327317, https://zenodo.org/records/1327317):
  `training_set.zip`, `training_set_pixel_size_and_HC.csv`, `test_set.zip`,
  `test_set_pixel_size.csv`. Unzip both archives so that the manual folder
  (`--manual_dir`, either this folder or a parent holding it as `hc18/`) holds:

    training_set/NNN_HC.png, NNN_2HC.png, ...       images
    training_set/NNN_HC_Annotation.png, ...         ellipse outlines, one per image
    training_set_pixel_size_and_HC.csv              filename,pixel size(mm),head circumference (mm)
    test_set/NNN_HC.png, ...                        unlabelled test images (optional)
    test_set_pixel_size.csv                         filename,pixel size(mm) (with test_set/)

  The folder is only read (it may be read-only).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=features.features(),
        supervised_keys=None,
        homepage="https://hc18.grand-challenge.org/",
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    root = builder_utils.find_manual_dir(dl_manager, "hc18", EXPECTED,
                                         self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    self.info.metadata[builder_utils.MANUAL_DIR_KEY] = str(root.resolve())
    labelled, unlabelled = scan(root)
    split_of = splits.assign(i.group for i in labelled + unlabelled)
    by_split = {s: [i for i in labelled + unlabelled if split_of[i.group] == s]
                for s in splits.SPLITS}
    logging.info("hc18 from %s: %s", root, {s: len(v) for s, v in by_split.items()})
    if not unlabelled:
      logging.warning("hc18 from %s: no unlabelled test images (%s): built without a test "
                      "split", root, " / ".join(TEST_PART))
    return {s: self._generate_examples(v) for s, v in by_split.items() if v}

  def _generate_examples(self, items):
    yield from builder_utils.ordered_map(encode, items)
