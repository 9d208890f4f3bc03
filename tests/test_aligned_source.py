"""Aligned heads as the classifier's input: ellipses from masks (cached), the source
wrapper, examples without a head, test-time averaging over both orientations, and the
classify trainer end to end with `input="aligned_head"`."""

import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import classify as classify_config
from configs import common
from fbjax.data import aligned, device_augment, sources
from fbjax.evaluation import evaluators, head_tables, heads, inference, networks
from fbjax.geometry import align, ellipse_fit
from fbjax.geometry.ellipse_fit import Ellipse
from fbjax.trainers import classify
from tests import classify_util

ALIGN = common.model_input("aligned_head", (24, 32), head_fraction=0.8, margin=0.08,
                           seg_workdir="")


def _example(i: int, e: Ellipse | None, hw=(90, 120)) -> dict:
  rng = np.random.default_rng(i)
  image = rng.integers(0, 255, (*hw, 1), dtype=np.uint8)
  mask = ellipse_fit.rasterize(e, hw).astype(np.uint8)[..., None] if e is not None else \
      np.zeros((*hw, 1), np.uint8)
  return {"id": f"ex{i}", "group": f"g{i}", "image": image, "head_mask": mask,
          "has_head_mask": e is not None, "skull_mask": mask, "has_skull_mask": False,
          "plane": i % 4, "abnormal": 0, "condition": 0, "pixel_aspect": np.float32(1.0)}


HEADS = [Ellipse(60.0, 45.0, 40.0, 30.0, 0.3), Ellipse(55.0, 40.0, 35.0, 28.0, 2.0), None,
         Ellipse(62.0, 47.0, 30.0, 24.0, 1.2)]


def test_mask_ellipses_are_the_drawn_heads_and_cached(tmp_path, monkeypatch):
  src = sources.ListSource([_example(i, e) for i, e in enumerate(HEADS)])
  block = common.data("toy")
  ell, kinds = head_tables.table(block, "train", src, ALIGN, cache_dir=str(tmp_path))
  assert list(kinds) == [1, 1, 0, 1]             # mask, mask, none, mask
  assert np.isnan(ell[2]).all()
  for got, want in zip(ell[[0, 1, 3]], [HEADS[0], HEADS[1], HEADS[3]], strict=True):
    np.testing.assert_allclose(got[:4], [want.cx, want.cy, want.a, want.b], atol=0.7)
    d = abs(got[4] - want.theta) % math.pi
    assert min(d, math.pi - d) < 0.03
  # Cached: a second read does not compute; another split is another file.
  monkeypatch.setattr(head_tables, "compute_table", lambda *a, **k: pytest.fail("recomputed"))
  again, _ = head_tables.table(block, "train", src, ALIGN, cache_dir=str(tmp_path))
  np.testing.assert_array_equal(again, ell)
  assert len(list(tmp_path.glob("*.npz"))) == 1
  with pytest.raises(pytest.fail.Exception, match="recomputed"):
    head_tables.table(block, "validation", src, ALIGN, cache_dir=str(tmp_path))


def test_aligned_source_crops_from_the_original_and_counts_no_head(tmp_path):
  examples = [_example(i, e) for i, e in enumerate(HEADS)]
  src = sources.ListSource(examples)
  block = common.data("toy")
  ell, kinds = head_tables.table(block, "train", src, ALIGN, cache_dir=str(tmp_path))
  out, counts = aligned.aligned_source(src, ell, ALIGN, kinds=kinds, name="toy train")
  assert counts == {"total": 4, "no_head": 1, "mask": 3, "segmenter": 0}
  assert len(out) == 3 and [out[i]["id"] for i in range(3)] == ["ex0", "ex1", "ex3"]
  ex = out[2]
  want, _ = align.aligned_head(examples[3]["image"][..., 0], Ellipse(*ell[3]), size=(24, 32),
                               head_fraction=0.8, margin=0.08)
  np.testing.assert_array_equal(ex["image"][..., 0], want)
  assert ex["image"].shape == (24, 32, 1) and ex["image"].dtype == np.uint8
  assert not ex["has_head_mask"] and not ex["has_skull_mask"]
  # The corners lie outside the head: zero (the surroundings cannot carry a decision).
  assert ex["image"][0, 0, 0] == 0 and ex["image"][-1, -1, 0] == 0
  with pytest.raises(ValueError, match="toy nothing: no example has a usable head"):
    aligned.aligned_source(src, np.full((4, 5), np.nan), ALIGN, name="toy nothing")


def test_train_groups_subsets_aligned_heads_with_their_own_ellipses(tmp_path):
  # The ellipses are computed (and cached) for the whole split, then subset with the
  # examples: each kept crop must be the crop of the same example in the full split.
  block = common.data("toy", source_size=(24, 32), num_examples=48, data_dir=str(tmp_path),
                      train_groups=0.5)
  half = sources.block_source(block, "train", model_input=ALIGN, head_table=head_tables.table)
  full = sources.block_source(ml_collections.ConfigDict({**block.to_dict(),
                                                         "train_groups": 1.0}), "train",
                              model_input=ALIGN, head_table=head_tables.table)
  by_id = {full[i]["id"]: full[i] for i in range(len(full))}
  want = [k for k, ex in by_id.items() if sources.group_share(ex["group"]) < 0.5]
  got = [half[i]["id"] for i in range(len(half))]
  assert got == want and 0 < len(got) < len(full)
  for i in range(len(half)):
    np.testing.assert_array_equal(half[i]["image"], by_id[half[i]["id"]]["image"])


def test_the_shape_rule_rejects_implausible_ellipses():
  assert heads.implausible(Ellipse(50, 40, 30, 25, 0.0), (80, 100)) == ""
  assert heads.implausible(None, (80, 100)) == "no ellipse"
  assert "axis ratio" in heads.implausible(Ellipse(50, 40, 30, 5, 0.0), (80, 100))  # a sliver
  assert "major axis" in heads.implausible(Ellipse(50, 40, 4, 3, 0.0), (80, 100))   # tiny
  assert "centre" in heads.implausible(Ellipse(150, 40, 30, 25, 0.0), (80, 100))    # outside


def test_segmenter_checkpoint_and_data_version_are_part_of_the_cache_key(tmp_path, monkeypatch):
  seg = classify_util.fake_seg_workdir(tmp_path / "seg")
  block = common.data("toy")
  ident = head_tables.checkpoint_identity(str(seg))
  assert ident.endswith(ident.split("@")[1]) and "@0:" in ident
  k1 = head_tables.cache_key(block, "train", ["a", "b"], str(seg))
  k0 = head_tables.cache_key(block, "train", ["a", "b"], "")
  assert k1 != k0 and k0 != head_tables.cache_key(block, "test", ["a", "b"], "")
  # The builder's version is part of the key: a new phantom version redraws its images
  # under the same ids, and the old version's ellipses must not be read for them.
  synth = common.data("fetal_brain_synth:small")
  version = head_tables.data_version("fetal_brain_synth")
  assert version.count(".") == 2
  before = head_tables.cache_key(synth, "train", ["a", "b"], "")
  monkeypatch.setattr(head_tables, "data_version", lambda name: version + "-other")
  assert head_tables.cache_key(synth, "train", ["a", "b"], "") != before
  with pytest.raises(FileNotFoundError, match="not a trained segmentation workdir"):
    head_tables.checkpoint_identity(str(tmp_path / "nothing"))
  # The rule's constants are part of the key.
  monkeypatch.setattr(heads, "MIN_AXIS_RATIO", 0.5)
  assert head_tables.cache_key(block, "train", ["a", "b"], "") != k0


def test_a_table_takes_the_mask_else_the_segmenters_head_else_none():
  from tests.test_head_step import _ellipse_segmenter, _image
  from tests.test_head_step import _example as head_example

  masked = head_example(_image(9.0, 7.5), "masked")
  e = Ellipse(200.0, 150.0, 80.0, 60.0, 0.2)
  masked["head_mask"] = ellipse_fit.rasterize(e, (300, 400)).astype(np.uint8)[..., None]
  masked["has_head_mask"] = True
  src = sources.ListSource([masked, head_example(_image(9.0, 7.5), "skull"),
                            head_example(np.zeros((300, 400), np.uint8), "blank")])
  ell, kinds = head_tables.compute_table(src, segmenter=_ellipse_segmenter(9.0, 7.5))
  assert [head_tables.KINDS[k] for k in kinds] == ["mask", "segmenter", "none"]
  np.testing.assert_allclose(ell[0, :4], [e.cx, e.cy, e.a, e.b], atol=0.7)
  assert np.isfinite(ell[1]).all() and np.isnan(ell[2]).all()


def test_rot180_test_time_averaging_makes_predictions_orientation_free():
  c = classify_util.tiny_config(size=(24, 32))
  c.eval_rot180 = True
  model = networks.classifier_model(c)
  params = classify_util.random_params(model, (24, 32))
  fn = jax.jit(evaluators.classification_fn(c, networks.classifier_probs_fn(c, model)))
  x = np.random.default_rng(0).uniform(size=(2, 24, 32)).astype(np.float32)
  batch = {"image": x, "plane": np.zeros(2, np.int32), "abnormal": np.zeros(2, np.int32),
           "condition": np.zeros(2, np.int32), "_mask": np.ones(2, np.float32)}
  a = fn(params, batch)
  b = fn(params, {**batch, "image": x[:, ::-1, ::-1].copy()})
  np.testing.assert_allclose(a["plane"], b["plane"], atol=1e-5)
  c.eval_rot180 = False
  plain = jax.jit(evaluators.classification_fn(c, networks.classifier_probs_fn(c, model)))
  assert not np.allclose(plain(params, batch)["plane"], a["plane"], atol=1e-4)


def test_random_rot180_turns_about_half_the_batch():
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(64, 6, 8)), jnp.float32)
  out = np.asarray(device_augment.random_rot180(jax.random.key(3), {"image": x})["image"])
  turned = np.all(out == np.asarray(x)[:, ::-1, ::-1], axis=(1, 2))
  same = np.all(out == np.asarray(x), axis=(1, 2))
  assert np.all(turned ^ same) and 20 <= turned.sum() <= 44


def test_config_input_aligned_head():
  c = classify_config.get_config("runlocal,input=aligned_head")
  assert c.input.kind == "aligned_head" and tuple(c.input.size) == (24, 32)
  assert (c.input.head_fraction, c.input.margin) == (0.8, 0.08)
  assert "image_size" not in c and "align" not in c     # the input is named once
  assert all("size" not in b for b in c.sources.values())
  assert c.augment_on == "device" and c.rot180 and c.eval_rot180
  assert classify_config.get_config("runlocal").input.to_dict() == {"kind": "image",
                                                                    "size": (32, 32)}
  with pytest.raises(KeyError, match="unknown input"):
    classify_config.get_config("runlocal,input=crop")


@pytest.mark.slow
def test_trainer_on_aligned_heads_records_input_and_calibration(tmp_path):
  c = classify_util.tiny_config(size=(32, 32))
  classify_config.set_input(c, "aligned_head")
  c.input.size = (24, 32)
  c.data_cache = False
  classify.train_and_evaluate(c, str(tmp_path))
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["input"]["kind"] == "aligned_head" and saved["input"]["size"] == [24, 32]
  assert "image_size" not in saved and "align" not in saved
  cal = json.loads((tmp_path / "calibration.json").read_text())
  assert cal["tasks"]["plane"]["temperature"] > 0
  assert cal["tasks"]["plane"]["nll_calibrated"] <= cal["tasks"]["plane"]["nll"] + 1e-9
  decision = json.loads((tmp_path / "decision.json").read_text())
  # Toy labels are all normal: the one source's threshold is the pooled one.
  assert decision["per_source"]["phantom"]["abnormal_threshold"] == pytest.approx(
      decision["abnormal_threshold"])
  # The loaded model is a function of (B, H, W) crops of `input.size`.
  clf = inference.load(str(tmp_path), kind="classifier")
  assert clf.size == (24, 32)
  out = clf.make_predict()(np.zeros((3, 24, 32), np.float32))
  assert out["plane"].shape == (3, 4)


def test_pretrain_variant_and_ablation_sweep():
  c = classify_config.get_config("data=real,variant=pretrain")
  assert c.tasks == () and c.loss.recon == 1.0
  assert all(b.weight > 0 and b.where == "" for b in c.sources.values())
  assert c.sources.hc18.train_split == "train+test"
  assert c.sources.fpdb.config == "brain_combined"
  runs = classify_config.ablation("/seg")
  args = [r["arg"] for r in runs]
  assert len(runs) == 4 and sum("init_from=" in a for a in args) == 2
  assert sum("input=aligned_head,seg_workdir=/seg" in a for a in args) == 2
  for r in runs:   # every entry is a valid config
    cfg = classify_config.get_config(r["arg"])
    assert cfg.input.kind in ("image", "aligned_head")
    assert not cfg.init_from or cfg.init_from.endswith(cfg.input.kind)


def test_block_source_reads_aligned_heads_through_the_config(tmp_path, monkeypatch):
  monkeypatch.setenv("FBJAX_DATA_DIR", str(tmp_path))
  c = classify_util.tiny_config(size=(32, 32))
  classify_config.set_input(c, "aligned_head")
  c.input.size = (24, 32)
  block = c.sources.phantom
  with pytest.raises(ValueError, match="head_table"):
    # the data layer finds no heads itself
    sources.block_source(block, "validation", model_input=c.input)
  src = sources.block_source(block, "validation", model_input=c.input, head_table=head_tables.table)
  assert src.head_counts["total"] == len(src) + src.head_counts["no_head"]
  assert src[0]["image"].shape == (24, 32, 1)
  assert list(tmp_path.glob("fbjax_ellipses/toy_*_validation_*.npz"))
  plain = sources.block_source(block, "validation")   # no input given: the whole image
  assert plain[0]["image"].shape == (32, 32, 1)
  bad = ml_collections.ConfigDict(dict(c.input.to_dict(), kind="crop"))
  with pytest.raises(ValueError, match="input='crop'"):
    sources.block_source(block, "validation", model_input=bad)


def test_phantom_planes_join_real_data_at_their_share_when_asked():
  real = classify_config.get_config("data=real,input=aligned_head")   # default: none
  assert real.sources.phantom.weight == 0.0
  c = classify_config.get_config("data=real,input=aligned_head,phantom_planes=0.25")
  w = {n: b.weight for n, b in c.sources.items()}
  assert w["phantom"] / sum(w.values()) == pytest.approx(0.25)
  assert tuple(c.sources.phantom.tasks) == ("plane",) and not c.sources.phantom.eval
  for n in ("fba", "fpdb", "hc18"):   # the real sources keep their weights
    assert c.sources[n].weight == real.sources[n].weight and c.sources[n].tasks == real.sources[
        n].tasks
  more = classify_config.get_config("data=real,phantom_planes=0.4")
  w = {n: b.weight for n, b in more.sources.items()}
  assert w["phantom"] / sum(w.values()) == pytest.approx(0.4)
  pre = classify_config.get_config("data=real,input=aligned_head,variant=pretrain,"
                                   "phantom_planes=0.25")
  assert pre.sources.phantom.tasks == ()   # the pretraining mixture is its own
  with pytest.raises(ValueError, match="phantom_planes"):
    classify_config.get_config("data=real,phantom_planes=1.0")
