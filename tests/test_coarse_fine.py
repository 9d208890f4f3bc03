"""Coarse to fine segmentation: exact crop geometry, training crops, both stages at inference."""

import dataclasses
import json
import math
import os

import numpy as np
import pytest

from configs import segment as segment_config
from fbjax.core import metrics
from fbjax.data import sources
from fbjax.evaluation import coarse_fine, inference
from fbjax.geometry import ellipse_fit, preprocess, segment_post
from fbjax.geometry.ellipse_fit import Ellipse


def _mask(e, hw):
  return ellipse_fit.rasterize(e, hw).astype(np.float32)


@pytest.mark.parametrize("crop", [(160, 160), (24, 24)])
def test_crop_maps_the_head_exactly_both_ways(crop):
  # Shrinking (scale 0.33) and a tiny crop (scale 0.05): the crop of a filled
  # ellipse has its centroid where the map sends the centre, and the ellipse
  # fitted on the crop, mapped back, is the original one.
  e = Ellipse.make(300.3, 250.7, 180.0, 140.0, 0.4)
  cg = coarse_fine.crop_geometry(e, (540, 800), crop)
  c = coarse_fine.warp(_mask(e, (540, 800)), cg)
  yy, xx = np.mgrid[:crop[0], :crop[1]]
  centroid = [(c * xx).sum() / c.sum(), (c * yy).sum() / c.sum()]
  np.testing.assert_allclose(centroid, cg.to_crop_points([[e.cx, e.cy]])[0], atol=0.01)
  on_crop = coarse_fine.head_in_crop(e, cg)
  assert on_crop.a * 2 == pytest.approx(coarse_fine.DEFAULT_HEAD_FRACTION * crop[1])
  back = ellipse_fit.ellipse_from_mask(c, "direct").affine(*cg.to_original_affine())
  tol = 1e-3 if crop[0] > 100 else 5e-3   # a 24-px crop quantises the outline
  assert back.perimeter / e.perimeter - 1 == pytest.approx(0, abs=tol)
  assert math.hypot(back.cx - e.cx, back.cy - e.cy) < tol * e.a
  np.testing.assert_allclose(cg.to_original_points(cg.to_crop_points([[3.0, 7.0]])),
                             [[3.0, 7.0]], atol=1e-12)


def test_enlarging_crop_and_paste_back():
  # A small head (major axis 40 px) is enlarged 3x into the crop; pasting the
  # crop's values back reproduces the image's mask (Dice against the rasterised ellipse).
  e = Ellipse.make(100.0, 80.0, 20.0, 15.0, 1.0)
  cg = coarse_fine.crop_geometry(e, (200, 300), (160, 160))
  assert cg.scale == pytest.approx(0.75 * 160 / 40)
  m = _mask(e, (200, 300))
  crop = coarse_fine.warp(m, cg)
  pasted = coarse_fine.paste(crop, cg, np.zeros_like(m))
  assert metrics.dice(pasted > 0.5, m > 0.5) > 0.98
  outside = np.ones_like(m) * 0.25
  kept = coarse_fine.paste(crop, cg, outside)
  assert kept[0, 0] == 0.25 and kept[199, 299] == 0.25   # outside the crop: the base


def test_head_cut_by_the_border_is_fitted_from_its_visible_arc():
  # Half the head lies outside the image: in the crop the image ends at the
  # valid box, and the robust fit on the crop ignores the cut (the ellipse
  # leaves the image) and recovers the head.
  e = Ellipse.make(40.0, 150.0, 120.0, 95.0, 0.2)
  hw = (300, 400)
  cg = coarse_fine.crop_geometry(e, hw, (160, 160))
  y0, x0, y1, x1 = cg.valid_box()
  assert (y0, x0, y1, x1) == (5, 60, 155, 160)   # scale 0.5: rows 4.25-154.25, cols from 59.25
  prob = coarse_fine.warp(_mask(e, hw), cg)
  got = segment_post.fitted_ellipse(prob, cg, method="robust")
  assert got.perimeter / e.perimeter - 1 == pytest.approx(0, abs=0.01)
  naive = segment_post.fitted_ellipse(prob, None, method="direct")   # border points kept
  naive = naive.affine(*cg.to_original_affine())
  assert abs(naive.perimeter / e.perimeter - 1) > 0.05


def test_crop_source_jitter_spacing_and_errors():
  toy = sources.toy_source("train", 6, (64, 96))
  cs = coarse_fine.CropSource(toy, (48, 48), shift=0.1, zoom=0.1, copies=3, seed=0)
  assert len(cs) == 18
  seen = []
  for i in range(len(cs)):
    ex, orig = cs[i], toy[i % 6]
    assert ex["image"].shape == (48, 48, 1) and ex["head_mask"].shape == (48, 48, 1)
    ref = coarse_fine.reference_ellipse(orig)
    cg = cs.geometry(i, orig, (64, 96))
    on = coarse_fine.head_in_crop(ref, cg)
    # Centre within the shift, major axis within the zoom of 0.75 * 48.
    assert abs(on.cx - 23.5) <= 0.1 * on.a / 0.9 + 1e-6
    assert 36 / 1.1 - 1e-6 <= 2 * on.a <= 36 * 1.1 + 1e-6
    # HC in mm is the same measured on the crop with the crop's spacing.
    # (Some toy heads are cut by the image border: the fit leaves those points out.)
    fit = ellipse_fit.ellipse_from_mask(ex["head_mask"][..., 0], "direct", box=cg.valid_box())
    hc_crop = fit.perimeter * float(ex["pixel_spacing_mm"])
    hc_orig = ref.perimeter * float(orig["pixel_spacing_mm"])
    assert hc_crop == pytest.approx(hc_orig, rel=0.02)
    seen.append((round(on.cx, 6), round(on.a, 6)))
  assert len(set(seen)) == len(seen)     # every copy has its own jitter
  np.testing.assert_array_equal(cs[4]["image"], cs[4]["image"])   # deterministic
  exact = coarse_fine.CropSource(toy, (48, 48))
  on = coarse_fine.head_in_crop(coarse_fine.reference_ellipse(toy[0]),
                                exact.geometry(0, toy[0], (64, 96)))
  assert (on.cx, on.cy, 2 * on.a) == pytest.approx((23.5, 23.5, 36.0))
  bad = dict(toy[0], has_head_mask=False)
  with pytest.raises(ValueError, match="toy_00000: no head mask"):
    coarse_fine.CropSource(sources.ListSource([bad]), (48, 48))[0]


def _identity(x):
  """A 'network' that returns its input as head/skull/brain probabilities."""
  x = np.asarray(x, np.float32)
  return np.stack([x, x, x], axis=-1)


def test_two_stage_recovers_resolution_the_coarse_grid_loses():
  # Perfect networks (identity on a mask image): stage 1 sees a small head at
  # 32x48, stage 2 a 64x64 crop of it at the fine grid's resolution, so the
  # two-stage probabilities on the fine grid match the head far better.
  e = Ellipse.make(130.0, 90.0, 26.0, 20.0, 0.7)
  fine = _mask(e, (240, 360))
  seg = coarse_fine.TwoStage(_identity, _identity, (32, 48), (64, 64))
  two = seg(fine[None])[0, ..., 0]
  one = seg.locate(fine[None])[0][0][..., 0]
  assert seg.last_crops[0] is not None
  d_two, d_one = metrics.dice(two > 0.5, fine > 0.5), metrics.dice(one > 0.5, fine > 0.5)
  assert d_two > 0.995 and d_one < 0.99
  g = preprocess.letterbox_geometry((240, 360), (240, 360))
  hc = segment_post.head_ellipse("robust", prob=two, geometry=g).perimeter
  assert hc / e.perimeter - 1 == pytest.approx(0, abs=0.01)
  # No head found by stage 1: stage 1's (empty) probabilities are kept.
  empty = seg(np.zeros((1, 240, 360), np.float32))
  assert seg.last_crops == [None] and not empty.any()


def test_refinement_recentres_a_crop_stage1_placed_off_the_head():
  # Stage 1 sees the head shifted by 30 px and shrunk (a localisation error);
  # stage 2 (identity) sees whatever the crop holds. One refinement pass puts
  # the crop back on the head (the crop stage 2 is trained on), so the final
  # crop's centre and scale are those of the true head's crop.
  e = Ellipse.make(150.0, 110.0, 40.0, 30.0, 0.3)
  fine = _mask(e, (240, 360))
  wrong = _mask(Ellipse.make(180.0, 110.0, 34.0, 25.0, 0.3), (240, 360))

  def stage1(x):
    del x
    return _identity(preprocess.letterbox(wrong, (60, 90))[0][None])

  exact = coarse_fine.crop_geometry(e, fine.shape, (64, 64))
  for refine, tol in ((0, None), (1, 1.0)):
    seg = coarse_fine.TwoStage(stage1, _identity, (60, 90), (64, 64), refine=refine)
    probs = seg(fine[None])[0, ..., 0]
    cg = seg.last_crops[0]
    centre = cg.to_original_points([[(64 - 1) / 2, (64 - 1) / 2]])[0]
    off = float(np.hypot(*(centre - [e.cx, e.cy])))
    if tol is None:
      assert off > 20                      # stage 1's crop: far from the head's centre
    else:
      assert off < tol and cg.scale == pytest.approx(exact.scale, rel=0.02)
      inside = coarse_fine.paste(np.ones((64, 64), np.float32), cg,
                                 np.zeros(fine.shape, np.float32)) > 0
      assert metrics.dice(np.where(inside, probs, 0) > 0.5, fine > 0.5) > 0.995
  with pytest.raises(ValueError, match="refine"):
    coarse_fine.TwoStage(stage1, _identity, (60, 90), refine=-1)


def test_stage2_config_needs_a_stage1_workdir(tmp_path):
  from fbjax.trainers import segment

  c = segment_config.get_config("runlocal,stage=2")
  assert c.input.to_dict() == {"kind": "head_crop", "size": (32, 32)} and c.stage == 2
  assert tuple(c.sources.hc18.source_size) == (32, 48)   # toy images: letterbox-shaped
  # the crop model's cross-entropy is boundary-weighted; stage 1's is not
  assert c.loss.boundary_weight > 0 and segment_config.get_config("").loss.boundary_weight == 0
  with pytest.raises(ValueError, match="stage1_workdir"):
    segment.check_stage1(c)
  c.stage1_workdir = str(tmp_path / "nothing")
  with pytest.raises(FileNotFoundError, match="nothing"):
    segment.check_stage1(c)
  with pytest.raises(KeyError, match="unknown stage"):
    segment_config.get_config("stage=3")
  # Randomised stage 2: the crop fixes the head's size, so no device scaling;
  # the rest of RANDOMIZE as in stage 1 (stage 1's own table is left alone).
  c = segment_config.get_config("runlocal,stage=2,augment=randomize")
  assert c.augment_on == "device" and c.augment_params.max_log_scale == 0.0
  assert c.augment_params.max_rotate_deg == segment_config.RANDOMIZE["max_rotate_deg"]
  assert segment_config.RANDOMIZE["max_log_scale"] > 0
  assert segment_config.get_config("augment=randomize").augment_params.max_log_scale == (
      segment_config.RANDOMIZE["max_log_scale"])


@pytest.mark.slow
def test_two_stage_workdir_trains_loads_and_evaluates(tmp_path):
  from fbjax import predict
  from fbjax.jobs import evaluate
  from fbjax.trainers import segment

  os.environ.setdefault("WANDB_MODE", "disabled")
  c1 = segment_config.get_config("runlocal")
  c1.total_steps, c1.wandb.mode = 4, "disabled"
  segment.train_and_evaluate(c1, str(tmp_path / "s1"))
  c2 = segment_config.get_config("runlocal,stage=2")
  c2.total_steps, c2.wandb.mode = 4, "disabled"
  c2.stage1_workdir = str(tmp_path / "s1")
  segment.train_and_evaluate(c2, str(tmp_path / "s2"))
  model = inference.load(tmp_path / "s2", kind="segmenter")
  assert model.two_stage and model.size == (48, 64)
  assert model.config.stage1_workdir == str(tmp_path / "s1")
  x = np.random.default_rng(0).uniform(size=(3, 48, 64)).astype(np.float32)
  probs = model.make_predict()(x)
  assert probs.shape == (3, 48, 64, 3) and np.all((probs >= 0) & (probs <= 1))
  # Folder prediction takes both stages through its usual interface.
  seg = predict.load_segmenter(tmp_path / "s2")
  assert seg.size == (48, 64)
  np.testing.assert_allclose(np.asarray(seg.predict(x)), probs, atol=1e-6)
  summary = evaluate.evaluate_workdir(str(tmp_path / "s2"), c2, split="validation",
                                      methods=("robust",), num_overlays=0)
  # By default every block validated on in training: HC18's (here toy) and the phantom's.
  assert set(summary["sources"]) == {"hc18", "phantom"}
  entry = summary["sources"]["hc18"]
  assert entry["grid"] == {} and len(entry["rows"]) == 12
  assert entry["original_resolution"]["num_images"] == 12
  assert summary["eval_flip"] is True
  # `launch.evaluate --config configs/segment.py` (a stage-1 config file, as in the README)
  # on the two-stage workdir measures what the workdir recorded: the same numbers.
  c1_file = segment_config.get_config("runlocal")
  assert c1_file.input.to_dict() != model.config.input.to_dict()
  same = evaluate.evaluate_workdir(str(tmp_path / "s2"), c1_file, data="hc18",
                                   split="validation", methods=("robust",), num_overlays=0,
                                   strict=False)
  timeless = (lambda d: json.dumps({k: v for k, v in d.items() if k != "seconds"},
                                    sort_keys=True, default=str))
  assert (timeless(same["sources"]["hc18"]["original_resolution"])
          == timeless(entry["original_resolution"]))
  # (From random weights stage 1 finds few heads: the size stage 2 crops to, directly.)
  merged = dataclasses.replace(model, config=evaluate.merged_config(model.config, c1_file,
                                                                    strict=False))
  assert merged.make_predict().crop_size == model.make_predict().crop_size == (32, 32)
  # Mirror averaging on / off reaches both stages: with it each network's output is
  # exactly mirror-equivariant, without it (a few steps from random weights) it is not.
  rng = np.random.default_rng(1)
  for flip in (True, False):
    two = model.make_predict(flip=flip)
    for fn, hw in ((two.stage1, two.stage1_size), (two.stage2, two.crop_size)):
      x = rng.uniform(size=(2, *hw)).astype(np.float32)
      same = np.allclose(np.asarray(fn(x[:, :, ::-1]))[:, :, ::-1], np.asarray(fn(x)),
                         atol=1e-5)
      assert same == flip, (flip, hw)
  off = evaluate.evaluate_workdir(str(tmp_path / "s2"), c2, data="hc18", split="validation",
                                  methods=("robust",), num_overlays=0, tta=False)
  # Stage 2 records the stage-1 checkpoint it was paired with: training stage 1 further
  # later does not change what the two-stage workdir runs.
  assert json.loads((tmp_path / "s2" / "stage1.json").read_text())["step"] == 4
  c1.total_steps = 6
  segment.train_and_evaluate(c1, str(tmp_path / "s1"))
  again = inference.load(tmp_path / "s2", kind="segmenter")
  x0 = np.random.default_rng(0).uniform(size=(3, 48, 64)).astype(np.float32)   # as above
  np.testing.assert_array_equal(np.asarray(again.make_predict()(x0)), np.asarray(probs))
  assert off["eval_flip"] is False
  assert off["sources"]["hc18"]["original_resolution"]["num_images"] == 12
