"""`python -m launch.phantom`: exported files, labels.csv, determinism, contact sheets."""

from __future__ import annotations

import csv
import math
import os
import pathlib
import subprocess
import sys

import cv2
import numpy as np
import pytest

from fbjax.core import labels
from fbjax.phantom import export as phantom_export
from fbjax.phantom import sheet as phantom_sheet
from fbjax.phantom import simulator as phantom

ROOT = pathlib.Path(__file__).resolve().parents[1]
COLUMNS = ["id", "plane", "condition", "abnormal", "ga_weeks", "pixel_spacing_mm", "hc_mm",
           "bpd_mm", "ofd_mm", "atrial_width_mm", "tcd_mm"]


def files(root: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
          if p.is_file()}


def read_labels(root: pathlib.Path) -> list[dict]:
  with open(root / "labels.csv", newline="") as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def export256(tmp_path_factory):
  out = tmp_path_factory.mktemp("export256")
  phantom_export.export(out, num=phantom.CYCLE, seed=3, size=256, workers=1, progress=False)
  return out


def test_same_seed_byte_identical_other_seed_differs(tmp_path):
  a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
  phantom_export.export(a, num=20, seed=1, size=64, workers=1, progress=False)
  phantom_export.export(b, num=20, seed=1, size=64, workers=2, progress=False)  # processes
  phantom_export.export(c, num=20, seed=2, size=64, workers=1, progress=False)
  fa, fb, fc = files(a), files(b), files(c)
  assert len(fa) == 20 * 5 + 1
  assert fa == fb
  assert fa.keys() != fc.keys() or any(fa[k] != fc[k] for k in fa)
  imgs_a = [v for k, v in fa.items() if k.startswith("images/")]
  imgs_c = [v for k, v in fc.items() if k.startswith("images/")]
  assert not set(imgs_a) & set(imgs_c)


def test_layout_and_labels(export256):
  rows = read_labels(export256)
  with open(export256 / "labels.csv", newline="") as f:
    assert next(csv.reader(f)) == COLUMNS
  assert len(rows) == phantom.CYCLE
  for r in rows:
    assert r["plane"] in ("trans-thalamic", "trans-cerebellar", "trans-ventricular", "other")
    assert r["condition"] in labels.PHANTOM_CONDITIONS
    assert r["abnormal"] == ("0" if r["condition"] == "normal" else "1")
    for sub in ("images", "clean", "masks/head", "masks/skull", "masks/brain"):
      img = cv2.imread(str(export256 / sub / f"{r['id']}.png"), cv2.IMREAD_UNCHANGED)
      assert img.shape == (256, 256) and img.dtype == np.uint8
      if sub.startswith("masks"):
        assert set(np.unique(img)) <= {0, 255}
    if r["plane"] == "trans-ventricular":
      aw = float(r["atrial_width_mm"])
      lo, hi = {"normal": (0, 10), "mild_ventriculomegaly": (10, 12),
                "moderate_ventriculomegaly": (12, 15),
                "severe_ventriculomegaly": (15, 99)}.get(r["condition"], (0, 99))
      assert lo <= aw < hi if r["condition"] == "normal" else lo < aw < hi
    else:
      assert math.isnan(float(r["atrial_width_mm"]))
    if r["condition"] == "microcephaly":
      assert float(r["hc_mm"]) < phantom.microcephaly_cutoff_mm(float(r["ga_weeks"]))
  assert {r["condition"] for r in rows} == set(labels.PHANTOM_CONDITIONS)


def test_exported_biometry_matches_fitted_ellipse(export256):
  for r in read_labels(export256):
    mask = cv2.imread(str(export256 / "masks/head" / f"{r['id']}.png"), cv2.IMREAD_GRAYSCALE)
    cnts, _ = cv2.findContours((mask > 127).astype(np.uint8), cv2.RETR_EXTERNAL,
                               cv2.CHAIN_APPROX_NONE)
    (_, _), (w, h), _ = cv2.fitEllipse(max(cnts, key=len))
    s = float(r["pixel_spacing_mm"])
    ofd, bpd = max(w, h) * s, min(w, h) * s
    a, b = ofd / 2, bpd / 2
    hc = math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))
    assert hc == pytest.approx(float(r["hc_mm"]), rel=0.015)
    assert ofd == pytest.approx(float(r["ofd_mm"]), rel=0.02)
    assert bpd == pytest.approx(float(r["bpd_mm"]), rel=0.02)


def test_cli_writes_files_with_a_progress_bar(tmp_path):
  out = tmp_path / "cli"
  proc = subprocess.run(
      [sys.executable, "-m", "launch.phantom", "--num", "3", "--seed", "0", "--size", "64",
       "--out", str(out), "--workers", "1"],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert "3/3" in proc.stderr and "phantom" in proc.stderr     # tqdm on stderr
  assert len(read_labels(out)) == 3
  assert len(list((out / "images").glob("*.png"))) == 3


def test_cli_needs_an_output(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "launch.phantom", "--num", "3"], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert "--out" in proc.stderr


def test_contact_sheet_grid():
  size = 40
  sheet = phantom_sheet.plane_condition_sheet(seed=0, size=size)
  assert sheet.shape == (24 + 11 * (size + 4), 190 + 4 * (2 * size + 8))
  # a cell that the phantom shows (normal TT) holds an image; VM in TC does not
  y, x = 24, 190
  assert sheet[y:y + size, x:x + size].std() > 5
  row = labels.PHANTOM_CONDITIONS.index("mild_ventriculomegaly")
  y, x = 24 + row * (size + 4), 190 + (2 * size + 8)
  assert sheet[y:y + size, x:x + size].mean() < 20


@pytest.mark.real_data
def test_hc18_sheet_at_the_phantom_spacing(tmp_path):
  real = os.environ.get("FBJAX_REAL_DATA")
  if not real:
    from tests.conftest import skip_or_fail

    skip_or_fail("FBJAX_REAL_DATA is not set")
  paths = phantom_sheet.write_sheets(tmp_path / "sheet.png", size=48, real_data=real)
  assert [p.name for p in paths] == ["sheet.png", "sheet_hc18.png"]
  pairs = list(phantom_sheet.hc18_pairs(real, num=4, size=128))
  for img, mask, sim, hc18_hc in pairs:
    assert img.shape == mask.shape == (128, 128)
    # resampled to the phantom's spacing: HC18's head, measured in pixels on the
    # new grid times the phantom's spacing, gives back HC18's reference HC
    cnts, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    (_, _), (w, h), _ = cv2.fitEllipse(max(cnts, key=len))
    hc = phantom.ramanujan_mm(w / 2, h / 2) * sim["pixel_spacing_mm"]
    assert hc == pytest.approx(hc18_hc, rel=0.04)
