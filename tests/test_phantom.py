"""The fetal head phantom: determinism, biometry and anomaly truth, speckle statistics."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from fbjax.core import labels
from fbjax.phantom import bmode
from fbjax.phantom import simulator as phantom
from fbjax.phantom.anatomy import TC, TV

KEYS = {"id", "group", "image", "clean", "head_mask", "skull_mask", "brain_mask", "plane",
        "condition", "abnormal", "ga_weeks", "pixel_spacing_mm", "hc_mm", "bpd_mm", "ofd_mm",
        "atrial_width_mm", "tcd_mm"}


@pytest.fixture(scope="module")
def cycle256():
  """One full plan cycle (every condition) at 256 px."""
  return [phantom.simulate(7, i, size=256) for i in range(phantom.CYCLE)]


def fitted_axes_mm(sim: dict) -> tuple[float, float]:
  cnts, _ = cv2.findContours(sim["head_mask"], cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
  (_, _), (w, h), _ = cv2.fitEllipse(max(cnts, key=len))
  s = sim["pixel_spacing_mm"]
  return max(w, h) * s, min(w, h) * s


def test_output_keys_types_and_ranges(cycle256):
  for sim in cycle256:
    assert set(sim) == KEYS
    for k in ("image", "clean", "head_mask", "skull_mask", "brain_mask"):
      assert sim[k].shape == (256, 256) and sim[k].dtype == np.uint8, k
    for k in ("head_mask", "skull_mask", "brain_mask"):
      assert set(np.unique(sim[k])) <= {0, 1}
    assert phantom.GA_QUANTILES_WEEKS[0] <= sim["ga_weeks"] <= phantom.GA_QUANTILES_WEEKS[-1]
    assert 0.74 - 1e-6 <= sim["bpd_mm"] / sim["ofd_mm"] <= 0.83 + 1e-6
    # 0.05-0.3 mm per pixel on HC18's 800-px grid
    assert 0.05 <= sim["pixel_spacing_mm"] * 256 / 800 <= 0.3
    assert sim["abnormal"] == int(sim["condition"] != 0)
    # masks: head = skull + brain (the skull may have a defect: encephalocele)
    head, skull, brain = (sim[k].astype(bool) for k in ("head_mask", "skull_mask", "brain_mask"))
    assert not (skull & brain).any()
    assert ((skull | brain) <= head).all()
    if labels.CONDITIONS[sim["condition"]] != "encephalocele":
      assert ((skull | brain) == head).all()
    # the head lies entirely inside the image, and inside a black-cornered sector
    assert not head[0].any() and not head[-1].any() and not head[:, 0].any()
    assert not head[:, -1].any()
  conds = {labels.CONDITIONS[s["condition"]] for s in cycle256}
  assert conds == set(labels.PHANTOM_CONDITIONS)


def test_deterministic_from_seed_and_index():
  a = phantom.simulate(3, 11, size=96)
  b = phantom.simulate(3, 11, size=96)
  for k in ("image", "clean", "head_mask"):
    np.testing.assert_array_equal(a[k], b[k])
  assert a["hc_mm"] == b["hc_mm"] and a["id"] == b["id"]
  c = phantom.simulate(4, 11, size=96)
  assert not np.array_equal(a["image"], c["image"])
  d = phantom.simulate(3, 12, size=96)
  assert not np.array_equal(a["image"], d["image"])


def test_biometry_truth_matches_the_fitted_head_mask(cycle256):
  for sim in cycle256:
    ofd, bpd = fitted_axes_mm(sim)
    hc = phantom.ramanujan_mm(ofd / 2, bpd / 2)
    assert abs(hc / sim["hc_mm"] - 1) < 0.015, sim["id"]
    assert abs(ofd / sim["ofd_mm"] - 1) < 0.02, sim["id"]
    assert abs(bpd / sim["bpd_mm"] - 1) < 0.02, sim["id"]


def test_ramanujan_and_growth_references():
  assert phantom.ramanujan_mm(5.0, 5.0) == pytest.approx(2 * math.pi * 5.0)
  # a = 2, b = 1: the exact perimeter is 9.688448220547675 (complete elliptic integral)
  assert phantom.ramanujan_mm(2.0, 1.0) == pytest.approx(9.688448220547675, rel=1e-4)
  # Hadlock HC by GA as quoted in DESIGN.md: ~151 mm at 18 w, ~177 at 20, ~201 at 22
  for ga, hc in ((18, 151), (20, 177), (22, 201)):
    assert phantom.hadlock_hc_mm(ga) == pytest.approx(hc, abs=1.0)
  # microcephaly cut-off = mean - 3 SD, SD 6.9-8.3 mm over 18-24 weeks
  for ga in (18.0, 21.0, 24.0):
    sd = phantom.hc_sd_mm(ga)
    assert 6.5 < sd < 8.5
    assert phantom.microcephaly_cutoff_mm(ga) == pytest.approx(phantom.hadlock_hc_mm(ga) - 3 * sd)


def _draw(condition: str, plane: str, n: int, size: int = 64):
  return [phantom.simulate(5, i, size=size, plane=plane, condition=condition, overlays=False)
          for i in range(n)]


@pytest.mark.parametrize("condition,lo,hi", [
    ("normal", 0.0, 10.0), ("mild_ventriculomegaly", 10.0, 12.0),
    ("moderate_ventriculomegaly", 12.0, 15.0), ("severe_ventriculomegaly", 15.0, 40.0)])
def test_atrial_width_truth(condition, lo, hi):
  widths = [s["atrial_width_mm"] for s in _draw(condition, "TV", 25)]
  assert all(lo <= w < hi if condition == "normal" else lo < w < hi for w in widths), widths
  if condition == "normal":  # 6.6 +- 1.4 mm
    assert 5.8 < np.mean(widths) < 7.4


def test_atrial_width_and_tcd_only_where_measured():
  tt = _draw("normal", "TT", 3)
  tc = _draw("normal", "TC", 10)
  assert all(math.isnan(s["atrial_width_mm"]) and math.isnan(s["tcd_mm"]) for s in tt)
  assert all(math.isnan(s["atrial_width_mm"]) for s in tc)
  # normal TCD within 2 SD of its mean for GA; hypoplasia below -3.5 SD
  for s in tc:
    ga = s["ga_weeks"]
    assert abs(s["tcd_mm"] - phantom.tcd_mean_mm(ga)) <= 2.0 * phantom.tcd_sd_mm(ga) + 1e-9
  small = _draw("cerebellar_hypoplasia", "TC", 10)
  for s in small:
    ga = s["ga_weeks"]
    assert s["tcd_mm"] <= phantom.tcd_mean_mm(ga) - 3.5 * phantom.tcd_sd_mm(ga) + 1e-9


def test_microcephaly_below_cutoff_and_normal_above():
  for plane in ("TT", "TC", "TV"):
    for s in _draw("microcephaly", plane, 12):
      assert s["hc_mm"] < phantom.microcephaly_cutoff_mm(s["ga_weeks"]), s["id"]
  for s in _draw("normal", "TT", 30):
    assert s["hc_mm"] > phantom.microcephaly_cutoff_mm(s["ga_weeks"]), s["id"]


def test_plan_every_cycle_holds_every_condition_and_groups_share_a_fetus():
  t = phantom.plan_table(9, 5 * phantom.CYCLE)
  for c in range(5):
    block = t["condition"][c * phantom.CYCLE:(c + 1) * phantom.CYCLE]
    assert set(block.tolist()) == set(range(len(labels.PHANTOM_CONDITIONS)))
  # images of one group: same fetus (condition, GA), different planes for normals
  sims = [phantom.simulate(9, i, size=48) for i in range(phantom.CYCLE)]
  by_group: dict = {}
  for s in sims:
    by_group.setdefault(s["group"], []).append(s)
  assert len(by_group) == 14
  for group in by_group.values():
    assert len({s["condition"] for s in group}) == 1
    assert len({round(s["ga_weeks"], 9) for s in group}) == 1
    cond = labels.CONDITIONS[group[0]["condition"]]
    for s in group:
      assert s["plane"] in phantom.CONDITION_PLANES[cond]


def test_overrides_and_bad_input():
  s = phantom.simulate(0, 0, size=48, plane="trans-ventricular",
                       condition="severe_ventriculomegaly")
  assert s["plane"] == labels.plane_index("TV")
  assert labels.CONDITIONS[s["condition"]] == "severe_ventriculomegaly"
  with pytest.raises(ValueError, match="not shown in the trans-cerebellar plane"):
    phantom.simulate(0, 0, plane="TC", condition="mild_ventriculomegaly")
  with pytest.raises(ValueError, match="has no condition 'porencephaly'"):
    phantom.simulate(0, 0, condition="porencephaly")
  with pytest.raises(ValueError, match="size must be >= 32"):
    phantom.simulate(0, 0, size=16)
  with pytest.raises(ValueError, match="index must be >= 0"):
    phantom.simulate(0, -1)


def test_overlays_are_not_in_clean():
  a = phantom.simulate(2, 4, size=128, overlays=True)
  b = phantom.simulate(2, 4, size=128, overlays=False)
  np.testing.assert_array_equal(a["clean"], b["clean"])
  diff = a["image"] != b["image"]
  assert 0 < diff.mean() < 0.1


def test_speckle_envelope_is_rayleigh_in_homogeneous_tissue():
  for index in (0, 1, 2):
    env, mean = phantom.envelope(1, index, size=128, homogeneous=True)
    env, mean = env[10:-10, 10:-10], mean[10:-10, 10:-10]   # away from the grid's edges
    assert np.allclose(mean, 1.0, atol=1e-4)
    ratio = env.mean() / env.std()
    assert ratio == pytest.approx(bmode.RAYLEIGH_MEAN_OVER_STD, abs=0.15), ratio
    # Rayleigh: E|z|^2 = mean power, and |z|^2 / mean ~ Exp(1) (median ln 2)
    assert np.mean(env ** 2) == pytest.approx(1.0, abs=0.1)
    assert np.median(env ** 2) == pytest.approx(math.log(2), abs=0.07)


def test_speckle_is_fully_developed_throughout_the_anatomy():
  env, mean = phantom.envelope(1, 3, size=128, homogeneous=False)
  n = env / np.sqrt(mean)
  assert n.mean() / n.std() == pytest.approx(bmode.RAYLEIGH_MEAN_OVER_STD, abs=0.05)


def test_expected_display_matches_monte_carlo():
  rng = np.random.default_rng(0)
  power = rng.exponential(1.0, 400_000).astype(np.float32)
  for top, dr in ((0.0, 50.0), (20.0, 60.0), (-30.0, 48.0), (45.0, 55.0)):
    mc = bmode.display(power, top, dr).mean()
    ex = float(bmode.expected_display(np.ones(1, np.float32), top, dr)[0])
    assert ex == pytest.approx(mc, abs=0.15), (top, dr)
  # far from clipping the log-Rayleigh bias is Euler's gamma: -2.507 dB (the
  # 0.1 % of samples clipped at 0 add about 0.02 grey levels)
  ex = float(bmode.expected_display(np.ones(1, np.float32), 30.0, 60.0)[0])
  assert ex == pytest.approx(255 * (30 - 10 * np.euler_gamma / math.log(10)) / 60, abs=0.05)


def test_clean_is_the_expectation_of_the_image():
  """Averaging speckle realisations of one scene converges to `clean` (no offset)."""
  k = 24
  runs = [phantom._simulate(6, 2, size=96, plane=None, condition=None, overlays=False,
                            speckle=j) for j in range(k)]
  clean = runs[0]["clean"].astype(np.float64)
  avg = np.mean([r["image"] for r in runs], axis=0)
  inside = clean > 0
  bias = (avg - clean)[inside].mean()
  assert abs(bias) < 0.6, bias
  # the average is k times less noisy than one image (to within the clipping)
  one = np.abs(runs[0]["image"] - clean)[inside].mean()
  assert np.abs(avg - clean)[inside].mean() < 0.35 * one


def test_image_formation_settings_leave_the_truth_unchanged(monkeypatch):
  # the realism settings (PSF, skull echogenicity, display level) change the
  # image only: masks, labels and measurements of every (seed, index) stay
  # those of the previous settings, and the image itself does change
  new = [phantom.simulate(3, i, size=96) for i in range(4)]
  for name, value in (("PSF_AXIAL_MM", (0.48, 0.68)), ("PSF_LATERAL_MM", (1.3, 2.0)),
                      ("TOP_DB_OFFSET", 0.0), ("SKULL_DB", (17.0, 23.0)),
                      ("PSF_LATERAL_FOV", (1.0, 1.0, 1.0)), ("TOP_DB_FOV", (0.0, 0.0, 0.0)),
                      ("SKULL_DB_GA", ((12.0, 40.0), (0.0, 0.0))),
                      ("BRAIN_DB_GA", ((12.0, 40.0), (0.0, 0.0))), ("DR_DB", (40, 57))):
    monkeypatch.setattr(phantom, name, value)
  old = [phantom.simulate(3, i, size=96) for i in range(4)]
  for a, b in zip(new, old, strict=True):
    for k in ("head_mask", "skull_mask", "brain_mask"):
      np.testing.assert_array_equal(a[k], b[k])
    for k in ("plane", "condition", "hc_mm", "bpd_mm", "ofd_mm", "ga_weeks", "pixel_spacing_mm",
              "group", "id"):
      assert a[k] == b[k], k
    assert np.abs(a["clean"].astype(int) - b["clean"]).mean() > 1.0


def _fetuses(condition: str, n: int, seed: int = 11) -> list:
  return [phantom.make_fetus(seed, c, 0, condition) for c in range(n)]


def test_gestational_range_covers_hc18_and_conditions_start_at_16_weeks():
  q = np.linspace(0, 1, 41)
  ga = [phantom.ga_quantile(u) for u in q]
  np.testing.assert_allclose([phantom.ga_cdf(g) for g in ga], q, atol=1e-9)
  normal = _fetuses("normal", 400)
  hc = np.array([f.hc_mm for f in normal])
  # HC18's training heads span 57-346 mm, a third below 166 mm, a third above 182
  assert hc.min() < 70.0 and hc.max() > 300.0
  assert 0.25 < np.mean(hc < 166.0) < 0.42 and 0.25 < np.mean(hc > 182.0) < 0.42
  for cond in labels.PHANTOM_CONDITIONS[1:]:
    assert min(f.ga_weeks for f in _fetuses(cond, 40)) >= phantom.CONDITION_GA_MIN, cond
  # the third-trimester cerebellum: about 50 mm at 40 weeks
  assert phantom.tcd_mean_mm(40.0) == pytest.approx(49.9, abs=0.1)
  assert phantom.tcd_mean_mm(20.0) == 20.0


def test_small_structures_fit_inside_the_smallest_heads():
  """CSP, atria and posterior fossa stay inside the brain of every head (GA 11-40).

  Positions as drawn by `phantom_anatomy`: CSP centred at u = 0.34 ai, atria
  at v = +-0.4 bi (either side of the 0.55-mm falx), cisterna magna and
  cerebellum from the back of the brain at u = -ai.
  """
  for cond in labels.PHANTOM_CONDITIONS:
    for f in _fetuses(cond, 150):
      a, _ = phantom.semi_axes(f.hc_mm * min(phantom.PLANE_SCALE.values()), f.cephalic_index)
      ai = a - f.skull_mm

      assert 0.34 * ai + 0.5 * f.csp_length_mm < 0.92 * ai, f
      if cond == "normal":   # normal atria, in the TV section, clear of the falx
        _, b = phantom.semi_axes(f.hc_mm * phantom.PLANE_SCALE[TV], f.cephalic_index)
        assert 0.55 < 0.4 * (b - f.skull_mm) - 0.5 * f.atrial_width_mm, f
        assert 0.4 * (b - f.skull_mm) + 0.5 * f.atrial_width_mm < b - f.skull_mm, f
      # the TC section: cisterna magna behind the head's centre, cerebellum within its width
      a, b = phantom.semi_axes(f.hc_mm * phantom.PLANE_SCALE[TC], f.cephalic_index)
      assert f.cisterna_magna_mm < (0.7 if cond == "mega_cisterna_magna" else 0.5) * a, f
      assert 0.5 * f.tcd_mm < 0.95 * (b - f.skull_mm), f


def test_small_heads_are_imaged_zoomed_in_with_a_finer_psf():
  fe = _fetuses("normal", 300)
  small = min(fe, key=lambda f: f.hc_mm)
  large = max(fe, key=lambda f: f.hc_mm)
  assert small.ga_weeks < 13.0 and large.ga_weeks > 30.0
  scenes = {}
  for name, f in (("small", small), ("large", large)):
    scenes[name] = [phantom.make_scene(phantom._rng(0, k), f, 0, 800, False) for k in range(20)]
  fov = {k: np.array([s.spacing_mm * 800 for s in v]) for k, v in scenes.items()}
  ofd = {k: np.array([2 * s.a_mm for s in v]) for k, v in scenes.items()}
  # HC18: OFD / FOV has median 0.41 below 100 mm HC and about 0.6 above 140 mm
  r = ofd["small"] / fov["small"]
  assert 0.32 - 1e-6 <= r.min() and r.max() <= 0.52 + 1e-6
  assert 0.45 <= (ofd["large"] / fov["large"]).min()
  lat = {k: np.median([s.psf_mm[1] for s in v]) for k, v in scenes.items()}
  assert lat["small"] < 0.7 * np.median(phantom.PSF_LATERAL_MM) < lat["large"]
  # early skulls echo less (ossification)
  assert small.skull_db < max(phantom.SKULL_DB) + phantom.SKULL_DB_GA[1][0]
