"""Fingerprint and contact sheet (launch/inspect_data.py) on the hc18 dummy data."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fbjax.data import builder_testing as bt
from fbjax.data import builders, fingerprint, io

DUMMY = builders.ROOT / "hc18" / "dummy_data"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  return bt.build("hc18", DUMMY, tmp_path_factory.mktemp("tfds"))


def test_fingerprint_numbers_match_the_files(built):
  fp = fingerprint.fingerprint(built, pixels_per_image=10**6)
  assert fp["name"] == "hc18" and fp["group_overlap"] == {}
  assert {s: v["num_examples"] for s, v in fp["splits"].items()} == bt.split_counts(built)
  files = sorted(DUMMY.glob("training_set/*HC.png")) + sorted(DUMMY.glob("test_set/*.png"))
  assert len(files) == 9
  # every pixel of every image is counted once (images smaller than pixels_per_image)
  n = sum(v["intensity_uint8"]["sampled_pixels"] for v in fp["splits"].values())
  assert n == sum(io.read_image_uint8(f).size for f in files)
  test_imgs = [io.read_image_uint8(f) for f in sorted(DUMMY.glob("test_set/*.png"))]
  test_pix = np.concatenate([i.reshape(-1) for i in test_imgs])
  t = fp["splits"]["test"]["intensity_uint8"]
  assert t["p50"] == pytest.approx(np.percentile(test_pix, 50))
  assert t["p99"] == pytest.approx(np.percentile(test_pix, 99))
  assert t["mean"] == pytest.approx(test_pix.mean())
  assert fp["splits"]["train"]["image_sizes"] == {"120x90": 6}
  with open(DUMMY / "training_set_pixel_size_and_HC.csv") as f:
    rows = list(csv.DictReader(f))
  spacing = [float(r["pixel size(mm)"]) for r in rows]
  sp = [fp["splits"][s]["measurements"]["pixel_spacing_mm"] for s in ("train", "validation")]
  assert min(s["min"] for s in sp) == pytest.approx(min(spacing), rel=1e-6)
  assert max(s["max"] for s in sp) == pytest.approx(max(spacing), rel=1e-6)
  assert fp["splits"]["test"]["measurements"]["hc_mm"] == {"known": 0}
  assert fp["splits"]["train"]["with_mask"]["head_mask"] == 6
  assert fp["splits"]["train"]["labels"]["plane"] == {"unknown": 6}
  assert fp["num_groups"] == 6 + 2


def test_contact_sheet_shape(built):
  sheet = fingerprint.contact_sheet(built, per_split=4, columns=4, tile=64)
  # 3 splits x (one row of 4 tiles + 2 px separator); 90 px label column
  assert sheet.shape == (3 * (64 + 2), 90 + 4 * 64, 3) and sheet.dtype == np.uint8
  assert sheet.max() > 0


def test_launch_writes_json_and_png(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(builders.ROOT.parent))
  out = tmp_path / "out"
  subprocess.run([sys.executable, "-m", "launch.inspect_data", "--name", "hc18",
                  "--manual_dir", str(DUMMY), "--out", str(out), "--per_split", "2"],
                 check=True, cwd=builders.ROOT.parent, env=env, capture_output=True)
  fp = json.loads((out / "hc18.json").read_text())
  assert fp["num_examples"] == 9
  assert io.read_image(out / "hc18.png").shape[0] > 0
