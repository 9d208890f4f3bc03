"""fetal_planes_db builder on dummy_data (every config, both layouts) and its errors."""

import math
import pathlib

import numpy as np
import pytest

from fbjax.core import labels
from fbjax.data import builder_testing as bt
from fbjax.data import builder_utils, builders, io, splits

DUMMY = pathlib.Path(__file__).parent / "dummy_data"
ORIG, COPY = DUMMY / "fetal_planes_db", DUMMY / "fetal_planes_db_640"
NAME = "fetal_planes_db"
module = builders.builder_module(NAME)
SHORT = {"Trans-thalamic": "TT", "Trans-cerebellum": "TC", "Trans-ventricular": "TV",
         "Other": "other", "Not A Brain": "other"}
CONFIGS = ("brain", "brain_640", "brain_combined", "all")


def _csv_rows(folder=ORIG):
  lines = (folder / "FETAL_PLANES_DB_data.csv").read_text().splitlines()
  assert lines[0].endswith("Train ")  # the original's quirk is in the dummy data
  return {f[0]: f for f in (line.strip().split(";") for line in lines[1:])}


def _row(example_id: str):
  """(folder, CSV row) of an example id of any config."""
  folder = COPY if example_id.startswith("fetal_planes_db_640/") or \
      example_id.endswith(".jpg") else ORIG
  stem = pathlib.Path(example_id).stem
  return folder, _csv_rows(folder)[stem]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  d = tmp_path_factory.mktemp("tfds")
  return {c: bt.build(NAME, DUMMY, d, config=c) for c in CONFIGS}


@pytest.mark.parametrize("config, counts", [
    ("brain", {"train": 7, "validation": 2, "test": 2}),
    ("brain_640", {"train": 3, "validation": 1, "test": 2}),
    ("brain_combined", {"train": 9, "validation": 3, "test": 4}),
    ("all", {"train": 8, "validation": 2, "test": 3}),
])
def test_counts_and_patient_splits_from_the_shared_rule(built, config, counts):
  b = built[config]
  assert bt.split_counts(b) == counts
  groups = {}
  for split in counts:
    ids, gs = bt.ids_and_groups(b, split)
    groups[split] = set(gs)
    for i, g in zip(ids, gs, strict=True):
      _, row = _row(i)
      assert g == f"Patient{int(row[1]):05d}"
      assert splits.split_of(g) == split
  assert not groups["train"] & groups["validation"]
  assert not groups["test"] & (groups["train"] | groups["validation"])
  # Patient 712 is a fixed test patient; patient 2 is in both layouts, one split.
  if config in ("brain_640", "brain_combined"):
    assert "Patient00712" in groups["test"] and "Patient00002" in groups["train"]


def test_combined_takes_an_image_in_both_layouts_once_from_the_original(built):
  ids = [i for s in splits.SPLITS for i in bt.ids_and_groups(built["brain_combined"], s)[0]]
  assert len(ids) == len(set(ids)) == 16
  assert "fetal_planes_db/Images/Patient00002_Plane3_1_of_2.png" in ids
  assert not any("Patient00002_Plane3_1_of_2.jpg" in i for i in ids)
  assert sum(i.startswith("fetal_planes_db_640/") for i in ids) == 5
  single = [i for s in splits.SPLITS for i in bt.ids_and_groups(built["brain_640"], s)[0]]
  assert all(i.startswith("Images/") and i.endswith(".jpg") for i in single)


def test_features(built):
  exs = [e for s in splits.SPLITS for e in bt.examples(built["all"], s)]
  for e in exs:
    _, row = _row(e["id"])
    assert e["plane"] == labels.plane_index(SHORT[row[3]])
    assert e["abnormal"] == -1 and e["condition"] == -1
    assert np.isnan(e["pixel_spacing_mm"]) and not e["has_head_mask"]
    ref = io.read_image_uint8(ORIG / e["id"])  # grey or RGB with equal channels
    np.testing.assert_array_equal(e["image"][..., 0], ref)
    raw = io.decode_image(io.read_bytes(ORIG / e["id"]))
    if raw.ndim == 2:
      assert e["pixel_aspect"] == 1.0
    else:  # a 3-channel copy: resampled from a Voluson E6 grid (959x661); 1 within 1 %
      h, w = raw.shape[:2]
      expect = (959 / 661) / (w / h)
      expect = 1.0 if abs(expect - 1) < 0.01 else expect
      assert e["pixel_aspect"] == pytest.approx(expect, rel=1e-6)
  assert {e["image"].shape for e in exs} == {(40, 64, 1), (50, 72, 1), (42, 60, 1)}


def test_stretched_layout_records_the_aspect_to_undo(built):
  exs = {e["id"]: e for s in splits.SPLITS for e in bt.examples(built["brain_640"], s)}
  assert len(exs) == 6
  expect = {"Aloka": 640 / 392, "Voluson E6": 959 / 661, "Voluson S10": 959 / 661,
            "Other": 959 / 661}
  for i, e in exs.items():
    _, row = _row(i)
    assert e["pixel_aspect"] == pytest.approx(expect[row[5]], rel=1e-6), i
    assert e["plane"] == labels.plane_index(SHORT[row[3]])
    ref = io.read_image_uint8(COPY / i)  # JPEG, 3 channels or grey
    np.testing.assert_array_equal(e["image"][..., 0], ref)
  assert {e["image"].shape for e in exs.values()} == {(48, 48, 1), (40, 40, 1)}
  assert math.isnan(module.pixel_aspect_of("Unknown scanner", 640, 640, 3, True))


def test_combined_needs_two_folders(tmp_path):
  with pytest.raises(FileNotFoundError, match="fetal_planes_db_640"):
    bt.build(NAME, ORIG, tmp_path / "tfds", config="brain_combined")




# --- errors ---------------------------------------------------------------------------

def test_missing_manual_files_name_each_expected_path(tmp_path):
  d = tmp_path / "m"
  d.mkdir()
  with pytest.raises(FileNotFoundError) as e:
    bt.build(NAME, d, tmp_path / "tfds")
  for rel in module.EXPECTED:
    assert str(d / rel) in str(e.value)


def test_row_whose_image_is_missing(tmp_path):
  d = bt.copy_tree(ORIG, tmp_path / NAME)
  gone = d / "Images" / "Patient00006_Plane3_1_of_1.png"
  gone.unlink()
  with pytest.raises(builder_utils.DataError, match=f"has no image {gone.with_suffix('')}"):
    bt.build(NAME, d, tmp_path / "tfds")


def test_image_without_row_and_bad_values(tmp_path):
  d = bt.copy_tree(ORIG, tmp_path / NAME)
  stray = d / "Images" / "Patient09999_Plane3_1_of_1.png"
  stray.write_bytes((d / "Images" / "Patient00006_Plane3_1_of_1.png").read_bytes())
  csv = d / "FETAL_PLANES_DB_data.csv"
  lines = csv.read_text().splitlines()
  lines[2] = lines[2].replace(";1 ", ";yes ")
  lines[3] = lines[3].replace("Trans-cerebellum", "Trans-cerebelum")
  csv.write_text("\n".join(lines) + "\n")
  with pytest.raises(builder_utils.DataError) as e:
    bt.build(NAME, d, tmp_path / "tfds")
  msg = str(e.value)
  assert f"{stray}: image without a row" in msg
  assert f"{csv}:3: Train must be 0 or 1, got 'yes'" in msg
  assert f"{csv}:4: unknown Brain_plane 'Trans-cerebelum'" in msg


def test_corrupt_image_names_the_file(tmp_path):
  d = bt.copy_tree(ORIG, tmp_path / NAME)
  bad = d / "Images" / "Patient00008_Plane3_1_of_1.png"
  bad.write_bytes(b"")
  with pytest.raises(io.ImageReadError, match=f"{bad}: empty file"):
    bt.build(NAME, d, tmp_path / "tfds")


@pytest.mark.parametrize("config", ["brain_640", "brain_combined"])
def test_rebuilding_from_the_same_folders_reuses_the_build(tmp_path, config):
  b = bt.build(NAME, DUMMY, tmp_path, config=config)
  again = bt.build(NAME, DUMMY, tmp_path, config=config)  # no "built from another folder"
  assert bt.split_counts(again) == bt.split_counts(b)
  other = bt.copy_tree(DUMMY, tmp_path / "copy")
  with pytest.raises(ValueError, match="built from"):
    bt.build(NAME, other, tmp_path, config=config)


def test_an_image_in_both_layouts_with_other_labels_is_an_error(tmp_path):
  d = bt.copy_tree(DUMMY, tmp_path / "m")
  csv = d / "fetal_planes_db_640" / "FETAL_PLANES_DB_data.csv"
  csv.write_text(csv.read_text().replace("Patient00002_Plane3_1_of_2;2;Fetal brain;"
                                         "Trans-ventricular", "Patient00002_Plane3_1_of_2;2;"
                                         "Fetal brain;Trans-thalamic"))
  with pytest.raises(builder_utils.DataError, match="with another plane or patient"):
    bt.build(NAME, d, tmp_path / "tfds", config="brain_combined")
