"""Every `seg_quality` a row can hold, each produced by a segmentation made for it."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from fbjax import predict

SIZE = (64, 64)


def _segmenter(head: np.ndarray):
  probs = jnp.asarray(np.stack([head, np.zeros_like(head), np.zeros_like(head)], -1))
  return predict.Segmenter(size=SIZE, predict=lambda x: jnp.broadcast_to(
      probs, (x.shape[0], *probs.shape)), method="direct")


def _disc(cy, cx, r, a=None):
  yy, xx = np.mgrid[0:SIZE[0], 0:SIZE[1]].astype(np.float32)
  a = r if a is None else a
  return (((yy - cy) / r) ** 2 + ((xx - cx) / a) ** 2 <= 1).astype(np.float32)


def _row(head, gate, spacing=math.nan):
  p = predict.Predictor(None, segmenter=_segmenter(head), batch_size=1, gate=gate)
  item = p.prepare_array(np.full(SIZE, 0.5, np.float32))
  out = p.infer([item])
  return p.finish(item, out, 0, spacing, None)


# Every feature of the gate accepted (0 thresholds): the gate is on (the HC range too),
# so what is left is the quality of the head itself.
OPEN = {"spread": 0.0}


def test_no_head_pixels():
  r = _row(np.zeros(SIZE, np.float32), OPEN)
  assert r["seg_quality"] == "no_head" and r["no_head_reason"] == "no head pixels"
  assert math.isnan(r["hc_px"])


def test_fit_failed():
  head = np.zeros(SIZE, np.float32)
  head[30, 30] = 1.0                      # one pixel: no ellipse can be fitted
  r = _row(head, OPEN)
  assert r["seg_quality"] == "fit_failed" and math.isnan(r["hc_px"])


def test_ok_and_the_biometry_of_a_disc():
  r = _row(_disc(31.5, 31.5, 12.0), OPEN, spacing=2.0)
  assert r["seg_quality"] == "ok"
  assert r["ellipse_dice"] > 0.95
  # A circle of radius ~12 px: HC = 2 pi r; the grid is the image (64 x 64, no padding).
  assert r["hc_px"] == pytest.approx(2 * math.pi * 12.0, rel=0.05)
  assert r["hc_mm"] == pytest.approx(2.0 * r["hc_px"], rel=1e-6)


def test_cut_by_border():
  r = _row(_disc(31.5, 4.0, 14.0), OPEN)        # a third of the disc lies outside
  assert r["seg_quality"] == "cut_by_border"


def test_poor_fit():
  head = np.zeros(SIZE, np.float32)
  head[14:50, 28:36] = 1.0                      # a plus: far from any ellipse
  head[28:36, 14:50] = 1.0
  r = _row(head, OPEN)
  assert r["seg_quality"] == "poor_fit" and r["ellipse_dice"] < 0.9


def test_an_implausible_head_circumference_is_no_head():
  r = _row(_disc(31.5, 31.5, 12.0), OPEN, spacing=10.0)     # HC ~ 750 mm
  assert r["seg_quality"] == "no_head"
  assert r["no_head_reason"].startswith("hc_mm ") and "outside [40, 450]" in r["no_head_reason"]
  assert math.isnan(r["hc_mm"])
  # Without a gate there is no plausible range either.
  assert _row(_disc(31.5, 31.5, 12.0), {}, spacing=10.0)["seg_quality"] == "ok"


def test_the_gate_names_the_evidence_that_failed():
  r = _row(_disc(31.5, 31.5, 12.0), {"ring_contrast": 0.5})   # a flat picture: no skull
  assert r["seg_quality"] == "no_head" and r["no_head_reason"].startswith("ring_contrast ")
