"""fetal_planes_db builder on dummy_data (both configs) and its errors on broken copies."""

import pathlib

import numpy as np
import pytest

from fbjax.data import builder_testing as bt
from fbjax.data import builder_utils, builders, io, labels

DUMMY = pathlib.Path(__file__).parent / "dummy_data"
NAME = "fetal_planes_db"
module = builders.builder_module(NAME)
SHORT = {"Trans-thalamic": "TT", "Trans-cerebellum": "TC", "Trans-ventricular": "TV",
         "Other": "other", "Not A Brain": "other"}


def _csv_rows():
  lines = (DUMMY / "FETAL_PLANES_DB_data.csv").read_text().splitlines()
  assert lines[0].endswith("Train ")  # the original's quirk is in the dummy data
  return {f[0]: f for f in (line.strip().split(";") for line in lines[1:])}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  d = tmp_path_factory.mktemp("tfds")
  return {c: bt.build(NAME, DUMMY, d, config=c) for c in ("brain", "all")}


@pytest.mark.parametrize("config, counts", [
    ("brain", {"train": 7, "validation": 1, "test": 3}),
    ("all", {"train": 9, "validation": 1, "test": 3}),
])
def test_counts_and_patient_disjoint_splits(built, config, counts):
  b = built[config]
  assert bt.split_counts(b) == counts
  rows = _csv_rows()
  groups = {}
  for split in counts:
    ids, gs = bt.ids_and_groups(b, split)
    groups[split] = set(gs)
    for i, g in zip(ids, gs, strict=True):
      row = rows[i.removeprefix("Images/").removesuffix(".png")]
      assert g == f"Patient{int(row[1]):05d}"
      assert (split == "test") == (row[6] == "0")  # official test split kept
  assert not groups["train"] & groups["validation"]
  assert not groups["test"] & (groups["train"] | groups["validation"])
  kept = [r for r in rows.values() if config == "all" or r[2] == "Fetal brain"]
  assert sum(counts.values()) == len(kept)


def test_features(built):
  rows = _csv_rows()
  exs = [e for s in ("train", "validation", "test") for e in bt.examples(built["all"], s)]
  for e in exs:
    row = rows[e["id"].removeprefix("Images/").removesuffix(".png")]
    assert e["plane"] == labels.plane_index(SHORT[row[3]])
    assert e["abnormal"] == -1 and e["condition"] == -1
    assert np.isnan(e["pixel_spacing_mm"]) and not e["has_head_mask"]
    ref = io.read_image_uint8(DUMMY / e["id"])  # grey or RGB with equal channels
    np.testing.assert_array_equal(e["image"][..., 0], ref)
  assert {e["image"].shape for e in exs} == {(40, 64, 1), (50, 72, 1), (42, 60, 1)}


def test_patient_in_both_official_splits_goes_to_test(tmp_path):
  d = bt.copy_tree(DUMMY, tmp_path / NAME)
  csv = d / "FETAL_PLANES_DB_data.csv"
  text = csv.read_text().replace("Patient00003_Plane3_1_of_1;3;Fetal brain;Trans-thalamic;"
                                 "Op. 1;Voluson E6;1 ",
                                 "Patient00003_Plane3_1_of_1;7;Fetal brain;Trans-thalamic;"
                                 "Op. 1;Voluson E6;1 ")
  csv.write_text(text)
  b = bt.build(NAME, d, tmp_path / "tfds")
  ids, gs = bt.ids_and_groups(b, "test")
  assert "Images/Patient00003_Plane3_1_of_1.png" in ids and set(gs) == {"Patient00007",
                                                                         "Patient00008"}


# --- errors ---------------------------------------------------------------------------

def test_missing_manual_files_name_each_expected_path(tmp_path):
  d = tmp_path / "m"
  d.mkdir()
  with pytest.raises(FileNotFoundError) as e:
    bt.build(NAME, d, tmp_path / "tfds")
  for rel in module.EXPECTED:
    assert str(d / rel) in str(e.value)


def test_row_whose_image_is_missing(tmp_path):
  d = bt.copy_tree(DUMMY, tmp_path / NAME)
  gone = d / "Images" / "Patient00006_Plane3_1_of_1.png"
  gone.unlink()
  with pytest.raises(builder_utils.DataError, match=f"has no image {gone}"):
    bt.build(NAME, d, tmp_path / "tfds")


def test_image_without_row_and_bad_values(tmp_path):
  d = bt.copy_tree(DUMMY, tmp_path / NAME)
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
  d = bt.copy_tree(DUMMY, tmp_path / NAME)
  bad = d / "Images" / "Patient00008_Plane3_1_of_1.png"
  bad.write_bytes(b"")
  with pytest.raises(io.ImageReadError, match=f"{bad}: empty file"):
    bt.build(NAME, d, tmp_path / "tfds")
