"""fetal_brain_abnormalities builder on dummy_data, its group keys, and its errors."""

import collections
import pathlib

import numpy as np
import pytest

from fbjax.core import labels
from fbjax.data import builder_testing as bt
from fbjax.data import builder_utils, builders, io, splits

DUMMY = pathlib.Path(__file__).parent / "dummy_data"
NAME = "fetal_brain_abnormalities"
module = builders.builder_module(NAME)
H = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("filename, key", [
    (f"Copy-of-arachnoid-cyst35a-image_aug_5_png_jpg.rf.{H}.jpg", "arachnoid-cyst-35a"),
    (f"Copy-of-moderate-ventriculomegaly_22b_aug_1_png_jpg.rf.{H}.jpg",
     "moderate-ventriculomegaly-22b"),
    (f"Copy-of-encephalocele1-23a_aug_0_png_jpg.rf.{H}.jpg", "encephalocele-1-23a"),
    (f"Copy-of-mild-ventriculomegaly-18b-1-_aug_2_png_jpg.rf.{H}.jpg",
     "mild-ventriculomegaly-18b-1"),
    (f"Copy-of-vein-of-galen-40b--2_aug_0_png_jpg.rf.{H}.jpg", "vein-of-galen-40b-2"),
    (f"Patient00709_Plane3_1_of_3_aug_1_png_jpg.rf.{H}.jpg", "Patient00709"),
    (f"Patient01234_Plane3_12_of_15_png_jpg.rf.{H}.jpg", "Patient01234"),
])
def test_source_key(filename, key):
  assert module.source_key(filename) == key


def test_merged_groups():
  g = module.source_group(f"Copy-of-colphocephaly-36c_aug_3_png_jpg.rf.{H}.jpg")
  assert g == "colphocephaly-36c+moderate-ventriculomegaly-36b"
  assert module.source_group(f"Copy-of-moderate-ventriculomegaly-36b_png_jpg.rf.{H}.jpg") == g


def test_every_class_maps_to_a_condition():
  assert sorted(module.CLASS_MAP.values()) == sorted(set(module.CLASS_MAP.values()))
  for name in module.CLASS_MAP.values():
    assert name in labels.CONDITIONS


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  return bt.build(NAME, DUMMY, tmp_path_factory.mktemp("tfds"))


def test_splits_rebuilt_by_source_group(built):
  counts = bt.split_counts(built)
  assert counts == {"train": 16, "validation": 3, "test": 9}
  seen: dict[str, str] = {}
  groups: dict[str, set] = {}
  for split in counts:
    ids, gs = bt.ids_and_groups(built, split)
    groups[split] = set(gs)
    for i in ids:
      assert i not in seen, f"{i} in {seen[i]} and {split}"
      seen[i] = split
  files = sorted(f"{p.parent.name}/{p.name}" for p in DUMMY.glob("*/*.jpg"))
  assert sorted(seen) == files  # every file in exactly one split
  for a in counts:
    for b in counts:
      assert a == b or not groups[a] & groups[b]
  # The export leaks: 35a sits in its train and test folders; here it is one group.
  assert "arachnoid-cyst-35a" in groups["train"] | groups["validation"] | groups["test"]
  # FETAL_PLANES_DB patients have the split they have in every data set.
  patients = {g: s for s in counts for g in groups[s] if g.startswith("Patient")}
  assert len(patients) == 4
  assert all(splits.split_of(g) == s for g, s in patients.items()), patients
  # arachnoid-cyst has 3 groups: one in each split
  for split in counts:
    assert sum(g.startswith("arachnoid-cyst") for g in groups[split]) == 1


def test_labels(built):
  exs = [e for s in ("train", "validation", "test") for e in bt.examples(built, s)]
  planes = {}
  for line in (DUMMY / "normal_brain_planes.csv").read_text().splitlines()[1:]:
    f, _, p = line.split(",")
    planes[f] = p
  short = {"Trans-thalamic": "TT", "Trans-cerebellum": "TC", "Trans-ventricular": "TV",
           "Other": "other"}
  by_cond = collections.Counter()
  for e in exs:
    cond = labels.CONDITIONS[e["condition"]]
    by_cond[cond] += 1
    assert e["abnormal"] == (0 if cond == "normal" else 1)
    if cond == "normal":
      assert e["group"].startswith("Patient")
      assert e["plane"] == labels.plane_index(short[planes[e["id"]]])
    else:
      assert e["plane"] == -1
    assert not e["has_head_mask"] and np.isnan(e["pixel_spacing_mm"])
    assert np.isnan(e["pixel_aspect"])  # stretched to 640x640 from an unrecorded size
    assert e["image"].shape == (48, 48, 1)
  assert by_cond == {"normal": 9, "arachnoid_cyst": 8, "moderate_ventriculomegaly": 5,
                     "mild_ventriculomegaly": 3, "cerebellar_hypoplasia": 2,
                     "vein_of_galen_malformation": 1}
  e = exs[0]
  ref = io.read_image_uint8(DUMMY / e["id"])  # RGB JPEG with equal channels -> grey
  np.testing.assert_array_equal(e["image"][..., 0], ref)


def test_stratified_split_reaches_every_split():
  classes = {f"a{i}": {"a"} for i in range(3)} | {f"b{i}": {"b"} for i in range(20)}
  classes |= {"c0": {"c"}, "c1": {"c"}, "ab": {"a", "b"}}
  s = builder_utils.stratified_group_split(classes, {"validation": 0.15, "test": 0.15}, 0)
  per = collections.defaultdict(collections.Counter)
  for g, split in s.items():
    for c in classes[g]:
      per[c][split] += 1
  assert all(per[c][x] >= 1 for c in "ab" for x in ("train", "validation", "test"))
  assert per["c"] == {"train": 2}  # fewer than 3 groups: all train
  assert per["b"]["test"] == round(0.15 * 21) and per["b"]["validation"] == round(0.15 * 21)
  assert s == builder_utils.stratified_group_split(
      dict(reversed(classes.items())), {"validation": 0.15, "test": 0.15}, 0)


def test_stratified_split_keeps_fixed_groups_and_counts_them():
  classes = {f"b{i}": {"b"} for i in range(20)}
  fixed = {f"b{i}": "test" for i in range(4)}
  s = builder_utils.stratified_group_split(classes, {"validation": 0.15, "test": 0.15}, 0,
                                           fixed=fixed)
  assert all(s[g] == "test" for g in fixed)
  counts = collections.Counter(s.values())
  # The test quota (round(0.15 * 20) = 3) is already met by the 4 fixed groups.
  assert counts == {"test": 4, "validation": 3, "train": 13}


# --- errors ---------------------------------------------------------------------------

def test_missing_manual_files_name_each_expected_path(tmp_path):
  d = tmp_path / "m"
  (d / "train").mkdir(parents=True)
  with pytest.raises(FileNotFoundError) as e:
    bt.build(NAME, d, tmp_path / "tfds")
  for rel in module.EXPECTED:
    assert str(d / rel) in str(e.value)


def test_row_whose_image_is_missing_and_image_without_row(tmp_path):
  d = bt.copy_tree(DUMMY, tmp_path / NAME)
  gone = sorted((d / "valid").glob("*.jpg"))[0]
  gone.unlink()
  extra = d / "test" / "stray.jpg"
  extra.write_bytes(sorted((d / "test").glob("*.jpg"))[0].read_bytes())
  with pytest.raises(builder_utils.DataError) as e:
    bt.build(NAME, d, tmp_path / "tfds")
  assert f"has no image {gone}" in str(e.value)
  assert f"{extra}: image without a row" in str(e.value)


def test_bad_one_hot_row(tmp_path):
  d = bt.copy_tree(DUMMY, tmp_path / NAME)
  csv = d / "train" / "_classes.csv"
  lines = csv.read_text().split("\n")
  lines[1] = lines[1].replace(", 0", ", 1", 1)
  csv.write_text("\n".join(lines))
  with pytest.raises(builder_utils.DataError, match=rf"{csv}:2: .* expected exactly one class"):
    bt.build(NAME, d, tmp_path / "tfds")


def test_corrupt_image_names_the_file(tmp_path):
  d = bt.copy_tree(DUMMY, tmp_path / NAME)
  bad = sorted((d / "train").glob("*.jpg"))[3]
  bad.write_bytes(b"\xff\xd8 this is not a jpeg")
  with pytest.raises(io.ImageReadError, match=str(bad)):
    bt.build(NAME, d, tmp_path / "tfds")


def test_without_planes_csv_planes_are_unknown(tmp_path):
  d = bt.copy_tree(DUMMY, tmp_path / NAME)
  (d / "normal_brain_planes.csv").unlink()
  b = bt.build(NAME, d, tmp_path / "tfds")
  assert all(e["plane"] == -1 for e in bt.examples(b, "validation"))
