"""No group in two different splits, across every builder, on the shared real data.

Membership is read from the built data sets (the `group` and `id` of every
example), not from the split rule: every group of HC18, FETAL_PLANES_DB (the
original and 640x640 layouts), the abnormalities set and the phantom is in
exactly one split over all of them, the same source image is in the same
split in every data set that holds it, and the fixed test patients are test.
No image of the 640x640 copy of FETAL_PLANES_DB duplicates another image.
"""

from __future__ import annotations

import collections
import csv

import cv2
import numpy as np
import pytest

from fbjax.data import builder_testing as bt
from fbjax.data import splits

pytestmark = [pytest.mark.real_data, pytest.mark.slow, pytest.mark.xdist_group("real_data")]
BUILDS = (("hc18", None), ("fetal_planes_db", None), ("fetal_planes_db", "brain_combined"),
          ("fetal_brain_abnormalities", None), ("fetal_brain_synth", "tiny"))


@pytest.fixture(scope="module")
def members(real_builder):
  """{"name/config": {split: [(id, group), ...]}} of every build."""
  out = {}
  for name, config in BUILDS:
    b = real_builder(name, config)
    out[f"{name}/{config}"] = {s: list(zip(*bt.ids_and_groups(b, s), strict=True))
                               for s in b.info.splits}
  return out


def test_no_group_in_two_splits_anywhere(members):
  where = collections.defaultdict(set)
  for ds, by_split in members.items():
    for split, pairs in by_split.items():
      for _, g in pairs:
        where[g].add((ds, split))
  conflicts = {g: sorted(w) for g, w in where.items() if len({s for _, s in w}) > 1}
  assert not conflicts, list(conflicts.items())[:5]
  assert splits.check_disjoint({ds: {s: [g for _, g in p] for s, p in by.items()}
                                for ds, by in members.items()}) == []
  # The check has something to check: patients shared between data sets.
  fpdb = {g for p in members["fetal_planes_db/brain_combined"].values() for _, g in p}
  fba = {g for p in members["fetal_brain_abnormalities/None"].values() for _, g in p}
  assert len(fpdb & fba) == 6, sorted(fpdb & fba)


def test_both_fpdb_layouts_and_their_shared_patients(members):
  combined = members["fetal_planes_db/brain_combined"]
  ids = [i for p in combined.values() for i, _ in p]
  assert sum(i.startswith("fetal_planes_db_640/") for i in ids) == 398
  assert sum(i.startswith("fetal_planes_db/") for i in ids) == 104
  layouts = collections.defaultdict(set)
  split_of = {}
  for s, pairs in combined.items():
    for i, g in pairs:
      layouts[g].add(i.split("/")[0])
      split_of[g] = s
  both = [g for g, ls in layouts.items() if len(ls) == 2]
  assert len(both) == 31  # patients with images in both layouts: one split each
  # The original-layout build agrees with the combined one.
  for s, pairs in members["fetal_planes_db/None"].items():
    assert all(split_of[g] == s for _, g in pairs)


def test_the_same_source_image_is_in_the_same_split(members, real_manual_dir):
  with open(real_manual_dir / "fetal_brain_abnormalities" / "normal_brain_planes.csv") as f:
    source = {r["filename"]: r["fetal_planes_db_image_name"] for r in csv.DictReader(f)}
  fba = {i: (s, g) for s, p in members["fetal_brain_abnormalities/None"].items() for i, g in p}
  fpdb = {i.split("/")[-1].rsplit(".", 1)[0]: s
          for s, p in members["fetal_planes_db/brain_combined"].items() for i, _ in p}
  shared = 0
  for fname, image_name in source.items():
    split, group = fba[fname]
    assert group == splits.fpdb_group(image_name.split("_")[0])
    if image_name in fpdb:
      shared += 1
      assert fpdb[image_name] == split, (fname, image_name)
  assert shared >= 8  # the README's eight source images, some uploaded several times


def test_fixed_test_patients_are_test(members):
  for ds, by_split in members.items():
    for split, pairs in by_split.items():
      for i, g in pairs:
        if g in splits.FIXED:
          assert split == "test", (ds, i, g)


def _thumbnails(paths) -> tuple[list[str], np.ndarray]:
  """Zero-mean, unit-norm 48x48 thumbnails (every image squeezed to a square, as the
  640 copy was), for near-duplicate search by normalised correlation."""
  names, rows = [], []
  for p in paths:
    t = cv2.resize(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), (48, 48),
                   interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    t -= t.mean()
    names.append(p.stem)
    rows.append(t / (np.linalg.norm(t) + 1e-6))
  return names, np.stack(rows)


def test_no_image_of_the_640_copy_duplicates_another_image(real_manual_dir):
  """A resized or re-encoded copy of one image correlates > 0.99 with it; consecutive
  frames of one patient in the 640 copy reach 0.96; across the layouts the highest
  is 0.90 (two different patients' Aloka frames), so 0.97 separates."""
  copy = _thumbnails(sorted((real_manual_dir / "fetal_planes_db_640" / "Images").glob("*.jpg")))
  orig = _thumbnails(sorted((real_manual_dir / "fetal_planes_db" / "Images").glob("*.png")))
  fba = _thumbnails(sorted((real_manual_dir / "fetal_brain_abnormalities").glob("*/Patient*.jpg")))
  assert len(copy[0]) == 398 and len(orig[0]) == 104 and len(fba[0]) == 251
  assert not set(copy[0]) & set(orig[0])  # no shared file name
  for other in (orig, fba):
    corr = copy[1] @ other[1].T
    i, j = np.unravel_index(np.argmax(corr), corr.shape)
    assert corr[i, j] < 0.97, (copy[0][i], other[0][j], float(corr[i, j]))
  # The test can see a duplicate: an original stretched to 640x640 and JPEG-encoded.
  img = cv2.imread(str(real_manual_dir / "fetal_planes_db" / "Images" / f"{orig[0][0]}.png"),
                   cv2.IMREAD_GRAYSCALE)
  ok, jpg = cv2.imencode(".jpg", cv2.resize(img, (640, 640)), [cv2.IMWRITE_JPEG_QUALITY, 80])
  t = cv2.resize(cv2.imdecode(jpg, cv2.IMREAD_GRAYSCALE), (48, 48),
                 interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
  t -= t.mean()
  assert float(orig[1][0] @ (t / np.linalg.norm(t))) > 0.99
