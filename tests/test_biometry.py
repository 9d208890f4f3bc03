"""Ellipse fitting and head biometry against analytic ellipses."""

import math

import cv2
import numpy as np
import pytest
from scipy import special

from fbjax.core import metrics
from fbjax.geometry import biometry, ellipse_fit, preprocess
from fbjax.geometry.ellipse_fit import Ellipse


@pytest.mark.parametrize("ratio", [1.0, 0.9, 0.75, 0.5])
def test_ramanujan_matches_elliptic_integral(ratio):
  a, b = 10.0, 10.0 * ratio
  exact = 4 * a * special.ellipe(1 - (b / a) ** 2)  # 4a E(e^2)
  assert float(ellipse_fit.ramanujan_perimeter(a, b)) == pytest.approx(exact, rel=1e-5)


def test_conic_round_trip():
  e = Ellipse.make(31.0, -7.5, 20.0, 33.0, 2.0)  # a < b is normalised
  assert e.a == 33.0 and e.b == 20.0
  f = ellipse_fit.ellipse_from_conic(e.conic())
  for k in ("cx", "cy", "a", "b", "theta"):
    assert getattr(f, k) == pytest.approx(getattr(e, k), abs=1e-9)


@pytest.mark.parametrize("method", ellipse_fit.METHODS)
def test_fit_recovers_exact_points(method):
  e = Ellipse.make(120.3, 85.1, 70.0, 55.0, 0.7)
  f = ellipse_fit.fit_ellipse(e.points(200), method)
  tol = 1e-3 if method == "cv2" else 1e-7
  for k in ("cx", "cy", "a", "b", "theta"):
    assert getattr(f, k) == pytest.approx(getattr(e, k), abs=tol * 100)


def test_cv2_full_axes_convention():
  # Drawing `to_cv2()` with OpenCV covers the same pixels as our rasteriser.
  e = Ellipse.make(100.0, 80.0, 60.0, 35.0, 0.4)
  drawn = np.zeros((160, 200), np.uint8)
  cv2.ellipse(drawn, e.to_cv2(), 1, thickness=-1)
  assert float(metrics.dice(drawn, ellipse_fit.rasterize(e, drawn.shape))) > 0.98
  box = cv2.fitEllipse(e.points(100).astype(np.float32))
  assert Ellipse.from_cv2(box).a == pytest.approx(60.0, rel=1e-3)


def test_ransac_ignores_outliers():
  rng = np.random.default_rng(0)
  e = Ellipse.make(200.0, 150.0, 90.0, 70.0, 0.3)
  pts = e.points(300) + rng.normal(0, 0.3, (300, 2))
  blob = rng.normal([300.0, 150.0], 8.0, (80, 2))  # a spurious piece of outline
  allp = np.concatenate([pts, blob])
  robust = ellipse_fit.fit_ransac(allp, threshold=1.0)
  direct = ellipse_fit.fit_direct(allp)
  assert robust.perimeter == pytest.approx(e.perimeter, rel=2e-3)
  assert abs(direct.perimeter / e.perimeter - 1) > 0.02


@pytest.mark.parametrize("seed", range(4))
def test_ellipse_from_mask_within_one_percent(seed):
  rng = np.random.default_rng(seed)
  a = rng.uniform(25, 110)
  e = Ellipse.make(rng.uniform(115, 140), rng.uniform(115, 140), a, a * rng.uniform(0.75, 0.9),
                   rng.uniform(0, math.pi))
  mask = ellipse_fit.rasterize(e, (256, 256))
  for method in ("direct", "ransac"):
    f = ellipse_fit.ellipse_from_mask(mask, method)
    assert f.perimeter == pytest.approx(e.perimeter, rel=0.01 if a < 40 else 0.003)
    assert f.a == pytest.approx(e.a, rel=0.01) and f.b == pytest.approx(e.b, rel=0.01)


def test_head_cut_by_image_border():
  # HC18 heads may run off the image: the border is not the skull, so border
  # points are left out and the ellipse extrapolated.
  e = Ellipse.make(60.0, 100.0, 90.0, 70.0, 0.2)
  mask = ellipse_fit.rasterize(e, (200, 260))
  assert mask[:, 0].any()
  f = ellipse_fit.ellipse_from_mask(mask, "direct")
  assert f.perimeter == pytest.approx(e.perimeter, rel=0.005)
  contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
  naive = ellipse_fit.fit_cv2(max(contours, key=cv2.contourArea).reshape(-1, 2))
  assert abs(naive.perimeter / e.perimeter - 1) > 0.02


@pytest.mark.parametrize("orig_hw,out_hw", [((540, 800), (128, 192)), ((563, 790), (96, 96))])
def test_measure_maps_network_grid_back_to_original(orig_hw, out_hw):
  spacing = 0.137
  e = Ellipse.make(orig_hw[1] * 0.52, orig_hw[0] * 0.47, 230.0, 190.0, 0.35)
  mask = ellipse_fit.rasterize(e, orig_hw)
  soft, g = preprocess.letterbox(mask.astype(np.float32), out_hw)   # area-averaged
  hard, _ = preprocess.letterbox(mask, out_hw, nearest=True, geometry=g)
  want = e.perimeter * spacing
  for m in (soft, hard):
    r = biometry.measure(m, spacing, geometry=g)
    assert r.ok
    assert r.hc_mm == pytest.approx(want, rel=0.01)
    assert r.ofd_mm == pytest.approx(2 * e.a * spacing, rel=0.015)
    assert r.bpd_mm == pytest.approx(2 * e.b * spacing, rel=0.015)
    assert r.ellipse.cx == pytest.approx(e.cx, abs=2.0 / g.scale)
  # The same map measured on the grid with the (nominal, isotropic) grid spacing agrees up to
  # the rounding of the resized size, which the exact per-axis mapping accounts for.
  r2 = biometry.measure(soft, g.spacing_on_grid(spacing))
  exact = biometry.measure(soft, spacing, geometry=g).hc_mm
  rounding = max(abs(s / g.scale - 1) for s in g.scale_xy)
  assert r2.hc_mm == pytest.approx(exact, rel=rounding + 1e-6)


def test_measure_without_head_or_spacing():
  r = biometry.measure(np.zeros((64, 64)), 0.2)
  assert not r.ok and math.isnan(r.hc_mm) and r.reason == "no head region"
  m = ellipse_fit.rasterize(Ellipse.make(32, 32, 20, 15, 0), (64, 64))
  r = biometry.measure(m, math.nan)
  assert r.ellipse is not None and math.isnan(r.hc_mm)
  assert set(r.row()) >= {"hc_mm", "bpd_mm", "ofd_mm", "ellipse_a", "fit_ok"}
  with pytest.raises(ValueError, match="unknown ellipse fit method"):
    biometry.measure(m, 0.2, method="nope")
