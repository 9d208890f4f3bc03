"""`fbjax.predict.rows`: one CSV row from the engine's outputs, checked against values
computed another way (circle perimeters, a hand-written softmax, entropies of known
distributions)."""

import math

import numpy as np
import pytest

from fbjax.evaluation import heads
from fbjax.geometry.ellipse_fit import Ellipse
from fbjax.predict import rows

NAMES = {"plane": ("TT", "TC", "TV", "other"), "abnormal": ("normal", "abnormal")}


def _head(r: float, quality: str = "ok") -> dict:
  """A head dict as `Predictor.head_of` gives it, for a circle of radius `r` px."""
  e = Ellipse(100.0, 90.0, r, r, 0.0)
  h = heads.Head(quality, "", e if quality != "no_head" else None, None, "segmenter")
  return {"head_area_fraction": 0.3, "ellipse_dice": 0.98, "seg_quality": quality,
          "no_head_reason": "", "hc_px": 2 * math.pi * r, "bpd_px": 2 * r, "ofd_px": 2 * r,
          "_ellipse": h.ellipse, "_head": h}


def test_head_cells_in_mm_are_the_circle_perimeter_times_the_spacing():
  r, s = 50.0, 0.2
  got = rows.head_cells(_head(r), s, segmented=True, gate=True)
  assert got["hc_mm"] == pytest.approx(2 * math.pi * r * s, rel=1e-9)
  assert got["bpd_mm"] == pytest.approx(2 * r * s) and got["ofd_mm"] == pytest.approx(2 * r * s)
  assert got["seg_quality"] == "ok" and "_ellipse" not in got
  # No spacing: pixels only, no mm cells.
  assert "hc_mm" not in rows.head_cells(_head(r), math.nan, segmented=True, gate=True)
  assert rows.head_cells(None, s, segmented=False, gate=True) == {"seg_quality": "no_segmenter"}


def test_an_implausible_hc_in_mm_is_no_head_unless_the_gate_is_off():
  # r = 50 px at 2 mm/px: HC 628 mm, far above any fetal head.
  got = rows.head_cells(_head(50.0), 2.0, segmented=True, gate=True)
  assert got["seg_quality"] == "no_head" and "hc_mm" in got["no_head_reason"]
  assert rows.head_cells(_head(50.0), 2.0, segmented=True, gate=False)["seg_quality"] == "ok"


def test_class_cells_calibrate_decide_and_measure_uncertainty():
  p = np.array([0.7, 0.1, 0.1, 0.1])
  ab = np.array([0.4, 0.6])
  temps = {"plane": 2.0}
  cells, cal = rows.class_cells({"plane": p, "abnormal": ab}, NAMES, temps, 0.5)
  by_hand = np.sqrt(p) / np.sqrt(p).sum()       # softmax(log p / 2)
  np.testing.assert_allclose(cal["plane"], by_hand, rtol=1e-12)
  assert cells["plane"] == "TT" and cells["plane_prob"] == pytest.approx(by_hand[0])
  assert cells["abnormal_prob"] == pytest.approx(0.6) and cells["abnormal"] == 1
  assert rows.class_cells({"abnormal": ab}, NAMES, {}, 0.65)[0]["abnormal"] == 0
  ent = lambda q: -(q * np.log(q)).sum() / math.log(len(q))   # noqa: E731
  assert cells["uncertainty"] == pytest.approx((ent(by_hand) + ent(ab)) / 2)
  assert rows.uncertainty(np.full(4, 0.25)) == pytest.approx(1.0)
  assert rows.uncertainty(np.array([1.0, 0.0, 0.0])) == pytest.approx(0.0, abs=1e-9)


def test_make_row_leaves_classes_empty_without_a_head_and_completes_every_column():
  probs = {"plane": np.array([0.1, 0.7, 0.1, 0.1])}
  kw = dict(gate=True, class_names=NAMES, temperatures={}, abnormal_threshold=0.5,
            anomaly=({"mahalanobis": np.array([3.0]), "recon": np.array([0.01])},
                     "mahalanobis", {"mahalanobis": 2.5}))
  row, no_head, cal = rows.make_row("a.png", (180, 200), 0.2, segmented=True,
                                    head=_head(40.0), aligned=False, probs=probs, **kw)
  assert not no_head and row["plane"] == "TC" and row["width"] == 200
  assert row["anomaly"] == 1 and row["anomaly_score"] == 3.0
  assert row["anomaly_recon_error"] == pytest.approx(0.01)
  # An aligned-head classifier without a crop (no ellipse): no classes, biometry NaN.
  row, no_head, cal = rows.make_row("a.png", (180, 200), 0.2, segmented=True,
                                    head=_head(40.0), aligned=True, probs=probs, **kw)
  assert no_head and "plane" not in row and cal == {} and math.isnan(row["hc_mm"])
  full = rows.complete(row)
  assert tuple(full) == rows.COLUMNS
  assert full["plane"] == "" and math.isnan(full["condition_prob"])
