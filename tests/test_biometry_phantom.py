"""Biometry on exported phantom images with their true masks (launch.phantom)."""

import csv
import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from fbjax.geometry import biometry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def export(tmp_path_factory):
  out = tmp_path_factory.mktemp("phantom")
  r = subprocess.run([sys.executable, "-m", "launch.phantom", "--num", "24", "--seed", "7",
                      "--size", "256", "--out", str(out), "--workers", "1"],
                     cwd=ROOT, capture_output=True, text=True, timeout=600,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert r.returncode == 0, r.stderr[-2000:]
  with open(out / "labels.csv") as f:
    return out, list(csv.DictReader(f))


def test_hc_from_true_head_mask_within_one_percent(export):
  out, rows = export
  assert len(rows) == 24
  errs = {m: [] for m in ("direct", "ransac")}
  for row in rows:
    mask = cv2.imread(str(out / "masks" / "head" / f"{row['id']}.png"), cv2.IMREAD_GRAYSCALE)
    spacing, hc = float(row["pixel_spacing_mm"]), float(row["hc_mm"])
    for m in errs:
      r = biometry.measure(mask / 255.0, spacing, method=m)
      errs[m].append(r.hc_mm / hc - 1)
      assert r.bpd_mm == pytest.approx(float(row["bpd_mm"]), rel=0.02)
      assert r.ofd_mm == pytest.approx(float(row["ofd_mm"]), rel=0.02)
  for m, e in errs.items():
    e = np.abs(e)
    assert np.all(np.isfinite(e)), m
    assert e.max() < 0.01, (m, e.max())  # the requirement: within 1 %
    assert e.max() < 0.003, (m, e.max())  # what it reaches (0.05 % when written)
    assert e.mean() < 0.004, (m, e.mean())
  assert not math.isnan(float(rows[0]["hc_mm"]))
