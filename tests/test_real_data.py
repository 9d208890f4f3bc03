"""The three real-data builders on the shared samples in $FBJAX_REAL_DATA.

Counts equal the files present, every file is in exactly one split, no group
spans two splits; HC18 masks reproduce the CSV's head circumference.
"""

from __future__ import annotations

import collections
import csv
import math

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from fbjax.core import labels
from fbjax.data import builder_testing as bt
from fbjax.data import builders, pipeline, splits
from fbjax.geometry import biometry, ellipse_fit

SPLITS = ("train", "validation", "test")
# One xdist group: the builds (~10-30 s each on 2 busy cores) happen once, on one worker.
pytestmark = [pytest.mark.real_data, pytest.mark.slow, pytest.mark.xdist_group("real_data")]


def _splits(b):
  """{split: (ids, groups)} and checks: no id twice, no group in two splits."""
  out = {s: bt.ids_and_groups(b, s) for s in SPLITS}
  seen = collections.Counter(i for ids, _ in out.values() for i in ids)
  assert max(seen.values()) == 1, [i for i, n in seen.items() if n > 1][:5]
  groups = {s: set(gs) for s, (_, gs) in out.items()}
  for a in SPLITS:
    for c in SPLITS:
      if a < c:
        assert not groups[a] & groups[c], f"groups in {a} and {c}: {groups[a] & groups[c]}"
  return out


def test_hc18_every_file_in_exactly_one_split(real_builder, real_manual_dir):
  b = real_builder("hc18")
  out = _splits(b)
  root = real_manual_dir / "hc18"
  files = sorted([f"training_set/{p.name}" for p in (root / "training_set").glob("*.png")
                  if not p.name.endswith("_Annotation.png")]
                 + [f"test_set/{p.name}" for p in (root / "test_set").glob("*.png")])
  assert sorted(i for ids, _ in out.values() for i in ids) == files
  counts = bt.split_counts(b)
  assert counts["train"] + counts["validation"] == 798 and counts["test"] == 99
  groups = {s: len(set(g)) for s, (_, g) in out.items()}
  # 4:1 by numeric-prefix group
  assert groups["validation"] == round((groups["train"] + groups["validation"]) / 5)
  assert all(i.startswith("test_set/") for i in out["test"][0])


def _hc18_mask_errors(b):
  """Relative HC error of the ellipse fitted to each head_mask vs the CSV (two fitters)."""
  skip = {k: tfds.decode.SkipDecoding() for k in builders.IMAGE_FEATURES}
  errs = []
  for split in ("train", "validation"):
    src = b.as_data_source(split=split, decoders=skip)
    for i in range(len(src)):
      ex = src[i]
      mask = cv2.imdecode(np.frombuffer(ex["head_mask"], np.uint8), cv2.IMREAD_UNCHANGED)
      s, hc = float(ex["pixel_spacing_mm"]), float(ex["hc_mm"])
      direct = biometry.measure(mask, s, method="direct").hc_mm
      cs, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
      pts = max(cs, key=cv2.contourArea)[:, 0]
      h, w = mask.shape
      inner = pts[(pts[:, 0] > 0) & (pts[:, 1] > 0) & (pts[:, 0] < w - 1) & (pts[:, 1] < h - 1)]
      (_, _), (fw, fh), _ = cv2.fitEllipse(inner.astype(np.float32))
      contour = ellipse_fit.ramanujan_perimeter(fw / 2, fh / 2) * s
      errs.append((ex["id"].decode(), (direct - hc) / hc, (contour - hc) / hc))
  return errs


def test_hc18_mask_gives_the_csv_head_circumference(real_builder):
  errs = _hc18_mask_errors(real_builder("hc18"))
  assert len(errs) == 798
  worst_direct = max(errs, key=lambda e: abs(e[1]))
  worst_contour = max(errs, key=lambda e: abs(e[2]))
  print(f"\nHC18 head_mask HC vs CSV over {len(errs)} images: worst "
        f"{100 * worst_direct[1]:+.3f} % ({worst_direct[0]}, biometry.measure direct fit); "
        f"worst {100 * worst_contour[2]:+.3f} % ({worst_contour[0]}, cv2 contour fit)")
  assert abs(worst_direct[1]) < 0.01
  assert abs(worst_contour[2]) < 0.01


def test_hc18_bpd_ofd_and_spacing_match_the_csv(real_builder, real_manual_dir):
  b = real_builder("hc18")
  rows = {r["filename"]: r for r in
          csv.DictReader(open(real_manual_dir / "hc18" / "training_set_pixel_size_and_HC.csv"))}
  skip = {k: tfds.decode.SkipDecoding() for k in builders.IMAGE_FEATURES}
  src = b.as_data_source(split="validation", decoders=skip)
  for i in range(len(src)):
    ex = src[i]
    row = rows[ex["id"].decode().split("/")[1]]
    s = float(row["pixel size(mm)"])
    assert ex["pixel_spacing_mm"] == pytest.approx(s, rel=1e-6)
    assert ex["hc_mm"] == pytest.approx(float(row["head circumference (mm)"]), rel=1e-6)
    # HC of the ellipse with axes BPD, OFD is the CSV's HC (the CSV's HC is that ellipse's)
    hc = ellipse_fit.ramanujan_perimeter(ex["ofd_mm"] / 2, ex["bpd_mm"] / 2)
    assert hc == pytest.approx(float(row["head circumference (mm)"]), rel=0.002)
    assert 0.6 < ex["bpd_mm"] / ex["ofd_mm"] <= 1.0


def test_fetal_planes_db_every_file_in_exactly_one_split(real_builder, real_manual_dir):
  b = real_builder("fetal_planes_db")
  out = _splits(b)
  files = sorted(f"Images/{p.name}" for p in (real_manual_dir / "fetal_planes_db" /
                                              "Images").glob("*.png"))
  assert sorted(i for ids, _ in out.values() for i in ids) == files
  rows = {}
  with open(real_manual_dir / "fetal_planes_db" / "FETAL_PLANES_DB_data.csv") as f:
    for line in f.read().splitlines()[1:]:
      v = [x.strip() for x in line.split(";")]
      rows[f"Images/{v[0]}.png"] = v
  for split, (ids, gs) in out.items():
    for i, g in zip(ids, gs, strict=True):
      assert g == f"Patient{int(rows[i][1]):05d}"
      assert splits.split_of(g) == split  # the shared rule, not the paper's Train column
  assert bt.split_counts(b) == {"train": 71, "validation": 14, "test": 19}


def test_fetal_brain_abnormalities_every_file_in_exactly_one_split(real_builder,
                                                                   real_manual_dir):
  b = real_builder("fetal_brain_abnormalities")
  out = _splits(b)
  root = real_manual_dir / "fetal_brain_abnormalities"
  files = sorted(f"{p.parent.name}/{p.name}" for p in root.glob("*/*.jpg"))
  assert len(files) == 1535
  assert sorted(i for ids, _ in out.values() for i in ids) == files
  assert len({g for _, gs in out.values() for g in gs}) == 118
  # every class with >= 3 groups reaches every split
  skip = {k: tfds.decode.SkipDecoding() for k in builders.IMAGE_FEATURES}
  groups_of = collections.defaultdict(lambda: collections.defaultdict(set))
  for split in SPLITS:
    src = b.as_data_source(split=split, decoders=skip)
    for i in range(len(src)):
      ex = src[i]
      groups_of[labels.CONDITIONS[ex["condition"]]][split].add(ex["group"].decode())
  assert len(groups_of) == 16
  for cond, per in groups_of.items():
    n = len(set().union(*per.values()))
    if n >= 3:
      assert all(per[s] for s in SPLITS), (cond, {s: len(per[s]) for s in SPLITS})


def test_shared_patients_carry_the_same_group_in_both_data_sets(real_builder, real_manual_dir):
  fba = real_builder("fetal_brain_abnormalities")
  fpdb = real_builder("fetal_planes_db")
  with open(real_manual_dir / "fetal_brain_abnormalities" / "normal_brain_planes.csv") as f:
    source_of = {r["filename"]: r["fetal_planes_db_image_name"] for r in csv.DictReader(f)}
  fba_group = {}
  for s in SPLITS:
    for i, g in zip(*bt.ids_and_groups(fba, s), strict=True):
      if i in source_of:
        fba_group[source_of[i]] = g
  fpdb_group = {}
  for s in SPLITS:
    for i, g in zip(*bt.ids_and_groups(fpdb, s), strict=True):
      fpdb_group[i.removeprefix("Images/").removesuffix(".png")] = g
  shared = sorted(set(fba_group) & set(fpdb_group))
  assert len(shared) == 8
  assert all(fba_group[n] == fpdb_group[n] for n in shared)


def test_pipeline_reads_real_data(real_data_dir):
  src = builders.data_source("hc18", "validation", data_dir=real_data_dir, decode_images=False)
  batch = next(iter(pipeline.make_dataset(src, size=(128, 128), batch_size=8, seed=0,
                                          train=False)))
  assert batch["image"].shape == (8, 128, 128) and batch["has_head_mask"].all()
  assert batch["head_mask"].sum(axis=(1, 2)).min() > 100
  assert np.isfinite(batch["pixel_spacing_mm"]).all()
  # spacing on the grid: original spacing / scale, scale = 128 / 800 for 800x540 images
  src_dec = builders.data_source("hc18", "validation", data_dir=real_data_dir)
  ex = src_dec[0]
  assert ex["image"].ndim == 3 and math.isfinite(float(ex["pixel_spacing_mm"]))
