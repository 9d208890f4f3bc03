"""hc18 builder on dummy_data (no real data needed), and its errors on broken copies."""

import math
import pathlib

import cv2
import numpy as np
import pytest

from fbjax.data import builder_testing as bt
from fbjax.data import builder_utils, builders, io

DUMMY = pathlib.Path(__file__).parent / "dummy_data"
module = builders.builder_module("hc18")


def _fit_mask(mask):
  """Ellipse fitted to the mask's outer contour, ignoring points on the image border."""
  cs, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
  pts = max(cs, key=cv2.contourArea)[:, 0]
  h, w = mask.shape
  keep = (pts[:, 0] > 0) & (pts[:, 1] > 0) & (pts[:, 0] < w - 1) & (pts[:, 1] < h - 1)
  return cv2.fitEllipse(pts[keep].astype(np.float32))


def _ramanujan(a, b):
  h = ((a - b) / (a + b)) ** 2
  return math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  return bt.build("hc18", DUMMY, tmp_path_factory.mktemp("tfds"))


def test_splits_and_counts(built):
  assert bt.split_counts(built) == {"train": 6, "validation": 1, "test": 2}
  groups = {s: set(bt.ids_and_groups(built, s)[1]) for s in ("train", "validation", "test")}
  assert not groups["train"] & groups["validation"]
  assert not (groups["train"] | groups["validation"]) & groups["test"]
  ids = {s: bt.ids_and_groups(built, s)[0] for s in ("train", "validation")}
  # 001_HC and 001_2HC are one pregnancy: same group, same split
  together = [s for s in ids if "training_set/001_HC.png" in ids[s]]
  assert "training_set/001_2HC.png" in ids[together[0]]
  assert built.info.metadata["manual_dir"] == str(DUMMY.resolve())


def test_features_of_labelled_examples(built):
  rows = {r.split(",")[0]: [float(v) for v in r.split(",")[1:]] for r in
          (DUMMY / "training_set_pixel_size_and_HC.csv").read_text().splitlines()[1:]}
  exs = bt.examples(built, "train") + bt.examples(built, "validation")
  assert len(exs) == 7
  for ex in exs:
    name = ex["id"].split("/")[1]
    spacing, hc = rows[name]
    img = io.read_image_uint8(DUMMY / ex["id"])
    np.testing.assert_array_equal(ex["image"][..., 0], img)
    assert ex["has_head_mask"] and not ex["has_skull_mask"] and not ex["has_clean"]
    assert ex["group"] == "hc18-" + name[:3]
    assert ex["pixel_spacing_mm"] == pytest.approx(spacing)
    assert ex["pixel_aspect"] == 1.0  # on the scanner grid
    assert ex["hc_mm"] == pytest.approx(hc)
    (_, _), (w, h), _ = _fit_mask(ex["head_mask"][..., 0])
    # tiny 120x90 images: pixelisation allows a few percent
    assert _ramanujan(w / 2, h / 2) * spacing == pytest.approx(hc, rel=0.03)
    assert ex["bpd_mm"] < ex["ofd_mm"]
    assert ex["plane"] == -1 and ex["abnormal"] == -1 and ex["condition"] == -1
  by_id = {ex["id"]: ex for ex in exs}
  # 001_HC: axes 40 x 30 px (semi) at 0.25 mm -> OFD 20 mm, BPD 15 mm (outline fit)
  assert by_id["training_set/001_HC.png"]["ofd_mm"] == pytest.approx(20.0, rel=0.02)
  assert by_id["training_set/001_HC.png"]["bpd_mm"] == pytest.approx(15.0, rel=0.02)


def test_mask_running_off_the_border_is_filled_from_the_centre(built):
  ex = {e["id"]: e for e in bt.examples(built, "train") + bt.examples(built, "validation")}
  mask = ex["training_set/004_HC.png"]["head_mask"][..., 0]
  truth = np.zeros_like(mask)
  cv2.ellipse(truth, (50, 40), (52, 34), 5, 0, 360, 1, -1)
  assert mask[:, 0].any()  # touches the left border
  iou = (mask & truth).sum() / (mask | truth).sum()
  assert iou > 0.95
  assert mask[0, -1] == 0 and mask[-1, -1] == 0  # corners outside stay empty


def test_unlabelled_test_split(built):
  exs = bt.examples(built, "test")
  assert sorted(e["id"] for e in exs) == ["test_set/000_HC.png", "test_set/001_HC.png"]
  for e in exs:
    assert not e["has_head_mask"] and not e["head_mask"].any()
    assert math.isnan(e["hc_mm"]) and math.isnan(e["bpd_mm"])
    assert e["group"].startswith("hc18-test-")
  assert {e["id"]: float(e["pixel_spacing_mm"]) for e in exs} == pytest.approx(
      {"test_set/000_HC.png": 0.21, "test_set/001_HC.png": 0.26})


def test_fill_outline_rejects_an_open_outline():
  ann = np.zeros((90, 120), np.uint8)
  cv2.ellipse(ann, (60, 45), (40, 30), 0, 20, 340, 255, 2)  # a gap on the right
  with pytest.raises(ValueError, match="not closed"):
    module.fill_outline(ann, "x_Annotation.png")


# --- errors on broken manual folders ---------------------------------------------------

def test_missing_manual_files_name_each_expected_path(tmp_path):
  empty = tmp_path / "manual"
  empty.mkdir()
  with pytest.raises(FileNotFoundError) as e:
    bt.build("hc18", empty, tmp_path / "tfds")
  for rel in module.EXPECTED:
    assert str(empty / rel) in str(e.value)


def test_csv_row_whose_image_is_missing(tmp_path):
  d = bt.copy_tree(DUMMY, tmp_path / "hc18")
  (d / "training_set" / "002_HC.png").unlink()
  with pytest.raises(builder_utils.DataError) as e:
    bt.build("hc18", d, tmp_path / "tfds")
  assert f"has no image {d / 'training_set' / '002_HC.png'}" in str(e.value)


def test_image_without_its_annotation(tmp_path):
  d = bt.copy_tree(DUMMY, tmp_path / "hc18")
  (d / "training_set" / "003_HC_Annotation.png").unlink()
  with pytest.raises(builder_utils.DataError) as e:
    bt.build("hc18", d, tmp_path / "tfds")
  assert f"{d / 'training_set' / '003_HC.png'}: image without its annotation" in str(e.value)


def test_image_without_csv_row(tmp_path):
  d = bt.copy_tree(DUMMY, tmp_path / "hc18")
  csv = d / "test_set_pixel_size.csv"
  csv.write_text("\n".join(csv.read_text().splitlines()[:-1]) + "\n")
  with pytest.raises(builder_utils.DataError, match="001_HC.png: image without a row"):
    bt.build("hc18", d, tmp_path / "tfds")


def test_corrupt_image_names_the_file(tmp_path):
  d = bt.copy_tree(DUMMY, tmp_path / "hc18")
  bad = d / "training_set" / "005_HC.png"
  bad.write_bytes(bad.read_bytes()[:200])
  with pytest.raises(io.ImageReadError, match=str(bad)):
    bt.build("hc18", d, tmp_path / "tfds")


def test_read_only_parent_folder_is_found_and_left_untouched(tmp_path):
  parent = tmp_path / "shared"
  bt.copy_tree(DUMMY, parent / "hc18")
  before = bt.snapshot(parent)
  bt.make_read_only(parent)
  try:
    b = bt.build("hc18", parent, tmp_path / "tfds")
  finally:
    bt.make_writable(parent)
  assert bt.split_counts(b)["test"] == 2
  assert bt.snapshot(parent) == before
  # the same data_dir may not silently serve another copy of the data
  other = bt.copy_tree(DUMMY, tmp_path / "other")
  with pytest.raises(ValueError, match="separate data_dir"):
    bt.build("hc18", other, tmp_path / "tfds")


def test_labelled_only_folder_builds_without_a_test_split(tmp_path):
  import shutil  # noqa: PLC0415

  d = bt.copy_tree(DUMMY, tmp_path / "hc18")
  shutil.rmtree(d / "test_set")
  (d / "test_set_pixel_size.csv").unlink()
  b = bt.build("hc18", d, tmp_path / "tfds")
  assert bt.split_counts(b) == {"train": 6, "validation": 1}
  # Half of the test part is a mistake, named as such.
  (d / "test_set").mkdir()
  with pytest.raises(builder_utils.DataError, match=r"test_set_pixel_size.csv: missing, but "
                     r".*test_set is there"):
    bt.build("hc18", d, tmp_path / "tfds2")


def test_csv_columns_are_found_by_name(tmp_path):
  d = bt.copy_tree(DUMMY, tmp_path / "hc18")
  csv = d / "training_set_pixel_size_and_HC.csv"
  rows = [r.split(",") for r in csv.read_text().splitlines()]
  csv.write_text("\n".join(",".join((r[2], r[0], r[1])) for r in rows) + "\n")   # reordered
  b = bt.build("hc18", d, tmp_path / "tfds")
  exs = {ex["id"]: ex for ex in bt.examples(b, "train") + bt.examples(b, "validation")}
  for r in rows[1:]:
    ex = exs[f"training_set/{r[0]}"]
    assert (ex["pixel_spacing_mm"], ex["hc_mm"]) == pytest.approx((float(r[1]), float(r[2])))
  csv.write_text("name,spacing,hc\n001_HC.png,0.1,100\n")
  with pytest.raises(builder_utils.DataError, match=r"missing column\(s\) \['filename', "
                     r"'pixel size\(mm\)', 'head circumference \(mm\)'\]; the columns are "):
    bt.build("hc18", d, tmp_path / "tfds2")
