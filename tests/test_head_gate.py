"""The "not a fetal head" gate: its evidence on drawn heads and non-heads, real heads, predict."""

import csv
import os
import pathlib

import cv2
import numpy as np
import pytest

from fbjax import predict
from fbjax.data import io, splits
from fbjax.geometry import align, ellipse_fit, head_gate, preprocess
from fbjax.geometry.ellipse_fit import Ellipse
from fbjax.phantom import negatives
from tests.test_predict import _circle_segmenter

ROOT = pathlib.Path(__file__).resolve().parents[1]

HW = (96, 128)
E = Ellipse(63.5, 47.5, 40.0, 30.0, 0.3)


def _radius(shape, e):
  """Normalised elliptical radius of every pixel (1 on the ellipse)."""
  yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
  c, s = np.cos(e.theta), np.sin(e.theta)
  u = c * (xx - e.cx) + s * (yy - e.cy)
  v = -s * (xx - e.cx) + c * (yy - e.cy)
  return np.sqrt((u / e.a) ** 2 + (v / e.b) ** 2)


def _head_prob(e=E):
  return (_radius(HW, e) <= 1).astype(np.float32)


def _evidence(img, prob=None, e=E):
  return head_gate.evidence(img, _head_prob(e) if prob is None else prob, e, (0, 0, *HW))


def test_ring_contrast_of_a_drawn_skull_is_its_analytic_value():
  # Brain 0.2, skull (r in [0.85, 1.05]) 0.9, outside 0.35 (a brighter field
  # than the brain): the ridge stands (0.9 - max(0.2, 0.35)) / (0.9 - 0.2) above.
  r = _radius(HW, E)
  img = np.where(r < 0.85, 0.2, np.where(r <= 1.05, 0.9, 0.35)).astype(np.float32)
  ev = _evidence(img)
  assert ev.ring_contrast == pytest.approx((0.9 - 0.35) / (0.9 - 0.2), abs=1e-6)
  assert ev.ring_support == 1.0
  assert ev.ellipse_dice == pytest.approx(1.0)
  assert ev.area_fraction == pytest.approx(np.pi * E.a * E.b / (HW[0] * HW[1]), rel=0.02)
  assert not ev.failed()


def test_non_heads_fail_and_say_why():
  rng = np.random.default_rng(0)
  r = _radius(HW, E)
  blank = np.zeros(HW, np.float32)
  assert _evidence(blank).failed() == ["spread", "ring_contrast", "ring_support"]
  noise = rng.uniform(0, 1, (540, 800)).astype(np.float32)
  grid, g = preprocess.letterbox(noise, HW)
  box = ellipse_fit.valid_box(g, HW)                   # the letterbox's padding is no image
  assert "spread" in head_gate.evidence(grid, _head_prob(), E, box).failed()
  # An abdomen: a homogeneous speckled disc (the segmenter's "head") in a darker
  # field, no bony ring; a step at the outline, not a ridge.
  # (Speckle smoothed as a letterboxed scan's is.)
  abdomen = np.where(r <= 1, 0.6, 0.2) * rng.rayleigh(1.0, HW) / 1.25
  ev = _evidence(cv2.GaussianBlur(np.clip(abdomen, 0, 1).astype(np.float32), (0, 0), 1.5))
  assert "ring_contrast" in ev.failed() and "spread" not in ev.failed()
  # A femur: a bright bar; the region a segmenter outlines around it has no ring.
  femur = np.full(HW, 0.2, np.float32)
  cv2.line(femur, (30, 60), (100, 35), 1.0, 6)
  ev = _evidence(femur)
  assert "ring_contrast" in ev.failed()
  # A head of 4 pixels is no measurable head.
  tiny = Ellipse(63.5, 47.5, 1.5, 1.0, 0.0)
  assert "area_fraction" in _evidence(blank + (r < 0.95) * 0.8, e=tiny).failed()
  # A region that is no ellipse (a cross) fits badly.
  cross = np.zeros(HW, np.float32)
  cross[40:56, 10:118] = cross[5:90, 56:72] = 1
  assert "ellipse_dice" in _evidence(np.where(r <= 1, 0.9, 0.2).astype(np.float32),
                                     prob=cross).failed()


@pytest.mark.parametrize("kind", negatives.KINDS)
def test_benchmark_negatives_around_a_head_shaped_region_are_rejected(kind):
  img = negatives.negative(kind, np.random.default_rng(3)) / 255.0
  grid, g = preprocess.letterbox(img.astype(np.float32), (128, 192))
  e = Ellipse(95.5, 63.5, 50.0, 38.0, 0.2)           # where a segmenter might put a head
  prob = (_radius(grid.shape, e) <= 1).astype(np.float32)
  assert head_gate.evidence(grid, prob, e, (0, 0, *grid.shape)).failed()


def _read(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def test_a_black_image_gets_no_head_and_no_answer(tmp_path):
  """A segmenter that always finds a head (as the U-Net does on a black image) is overruled."""
  from tests import classify_util

  d = tmp_path / "in"
  d.mkdir()
  cv2.imwrite(str(d / "black.png"), np.zeros((540, 800), np.uint8))
  wd = classify_util.fake_workdir(tmp_path / "cls")
  kw = dict(segmenter=_circle_segmenter(), batch_size=2)
  p = predict.Predictor(wd, **kw)
  [(kind, row)] = list(predict.iterate(p, [d / "black.png"], spacing=lambda _: 0.15))
  assert row["seg_quality"] == "no_head"
  assert row["no_head_reason"].startswith("spread 0 < 0.15")
  assert row["plane"] == row["condition"] == ""
  assert all(np.isnan(row[k]) for k in ("abnormal_prob", "plane_prob", "hc_mm", "hc_px",
                                         "bpd_mm", "uncertainty"))
  # Without the gate the same picture gets a head and a confident answer.
  p = predict.Predictor(wd, gate={}, **kw)
  [(kind, row)] = list(predict.iterate(p, [d / "black.png"], spacing=lambda _: 0.15))
  assert row["seg_quality"] == "ok" and row["plane"] and row["hc_mm"] > 0
  # Through a U-Net (configs/segment.py:runlocal, random weights) as well.
  p = predict.Predictor(wd, classify_util.fake_seg_workdir(tmp_path / "seg"), batch_size=2)
  [(kind, row)] = list(predict.iterate(p, [d / "black.png"], spacing=lambda _: 0.15))
  assert row["seg_quality"] == "no_head" and row["plane"] == "" and np.isnan(row["hc_mm"])


REAL = os.environ.get("FBJAX_REAL_DATA")


@pytest.mark.skipif(not REAL, reason="FBJAX_REAL_DATA not set")
def test_real_heads_pass_the_gate():
  """HC18 training images with their annotated head (the evidence, not a segmenter)."""
  root = pathlib.Path(REAL) / "hc18"
  split = splits.hc18_split(root)
  paths = list(np.random.default_rng(0).permutation(split["train"])[:12])
  for path in paths:
    img = io.read_image(path)
    ann = cv2.imread(str(path).replace(".png", "_Annotation.png"), cv2.IMREAD_GRAYSCALE)
    filled = np.zeros_like(ann)
    contours, _ = cv2.findContours((ann > 0).astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(filled, contours, -1, 1, cv2.FILLED)
    grid, g = preprocess.letterbox(img, (128, 192))
    mask, _ = preprocess.letterbox(filled, (128, 192), nearest=True, geometry=g)
    e = align.ellipse_from_mask(mask, name=str(path))
    ev = head_gate.evidence(grid, mask.astype(np.float32), e,
                            ellipse_fit.valid_box(g, grid.shape))
    assert not ev.failed(), (path, ev)


def test_phantom_heads_pass_the_gate():
  """The phantom's heads (what `make demo` predicts on) with their ground-truth head masks.

  On the demo's 128 x 192 segmentation grid: at 64 x 96 a third-trimester
  head (HC 300 mm, 0.8 mm per pixel at 256 px) has its 3-4-mm skull within
  one grid pixel.
  """
  from fbjax.phantom import simulator as phantom

  for i in range(6):
    o = phantom.simulate(0, i)
    img = np.asarray(o["image"], np.float32) / (255.0 if o["image"].dtype == np.uint8 else 1.0)
    grid, g = preprocess.letterbox(img, (128, 192))
    mask, _ = preprocess.letterbox(o["head_mask"], (128, 192), nearest=True, geometry=g)
    e = align.ellipse_from_mask(mask, name=o["id"])
    ev = head_gate.evidence(grid, mask.astype(np.float32), e,
                            ellipse_fit.valid_box(g, grid.shape))
    assert not ev.failed(), (o["id"], ev)
