"""fetal_brain_synth builder: the `tiny` config built into a tmp dir, and the split plans."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fbjax.core import labels
from fbjax.data import builders, features
from fbjax.phantom import simulator as phantom

NAME = "fetal_brain_synth"
LABELLED = ("train", "validation", "test")


def _module():
  return builders.builder_module(NAME)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  d = tmp_path_factory.mktemp("tfds")
  b = builders.prepare(NAME, data_dir=d, config="tiny")
  return b, {s: b.as_data_source(split=s) for s in (*LABELLED, "unlabelled")}


def test_split_counts(tiny):
  b, src = tiny
  cfg = b.builder_config
  assert {s: len(src[s]) for s in src} == cfg.counts() == {
      "train": 132, "validation": 33, "test": 33, "unlabelled": 16}
  assert b.info.splits["train"].num_examples == 4 * b.info.splits["validation"].num_examples
  for name in ("small", "full"):
    counts = next(c for c in _module().Builder.BUILDER_CONFIGS if c.name == name).counts()
    assert counts["train"] == 4 * counts["validation"]
    assert counts["unlabelled"] == 2949


def test_features_of_labelled_examples(tiny):
  b, src = tiny
  assert set(b.info.features.keys()) == set(features.features().keys())
  for split in LABELLED:
    for i in (0, len(src[split]) - 1):
      ex = src[split][i]
      assert ex["image"].shape == (64, 64, 1) and ex["image"].dtype == np.uint8
      for m in (*features.MASKS, "clean"):
        assert ex[f"has_{m}"]
      for m in features.MASKS:
        assert set(np.unique(ex[m])) <= {0, 1} and ex[m].any()
      assert 0 <= ex["plane"] < 4 and 0 <= ex["condition"] < len(labels.PHANTOM_CONDITIONS)
      assert ex["abnormal"] == int(ex["condition"] != 0)
      for k in ("pixel_spacing_mm", "hc_mm", "bpd_mm", "ofd_mm", "ga_weeks"):
        assert math.isfinite(ex[k]) and ex[k] > 0


def test_examples_are_the_phantom_images(tiny):
  """Determinism: an example equals simulate() of its split's seed and index."""
  _, src = tiny
  seeds = _module().SPLIT_SEEDS
  for split in ("validation", "test"):
    for i in range(0, 33, 8):
      ex = src[split][i]
      index = int(ex["id"].decode().rsplit("-", 1)[1])
      sim = phantom.simulate(seeds[split], index, size=64)
      np.testing.assert_array_equal(ex["image"][..., 0], sim["image"])
      np.testing.assert_array_equal(ex["clean"][..., 0], sim["clean"])
      np.testing.assert_array_equal(ex["head_mask"][..., 0], sim["head_mask"])
      assert ex["hc_mm"] == pytest.approx(sim["hc_mm"], rel=1e-6)
      assert ex["group"].decode() == sim["group"]


def test_unlabelled_examples_carry_no_labels(tiny):
  b, src = tiny
  seed = _module().SPLIT_SEEDS["unlabelled"]
  for i in range(len(src["unlabelled"])):
    ex = src["unlabelled"][i]
    ident = ex["id"].decode() if isinstance(ex["id"], bytes) else str(ex["id"])
    index = int(ident.rsplit("-", 1)[1])   # tfds orders examples by key, not by index
    sim = phantom.simulate(seed, index, size=b.builder_config.size)
    assert sim["id"] == ident
    assert ex["image"].any()
    assert ex["plane"] == ex["abnormal"] == ex["condition"] == -1
    for m in (*features.MASKS, "clean"):
      assert not ex[f"has_{m}"] and not ex[m].any()
    for k in features.MEASUREMENTS:
      if k == "pixel_spacing_mm":   # acquisition metadata, kept
        assert ex[k] == pytest.approx(sim["pixel_spacing_mm"], rel=1e-6)
      elif k == "pixel_aspect":   # image geometry, kept: square pixels
        assert ex[k] == 1.0
      else:
        assert math.isnan(ex[k])


def test_groups_are_disjoint_across_splits(tiny):
  _, src = tiny
  groups = {s: {src[s][i]["group"] for i in range(len(src[s]))} for s in src}
  splits = list(groups)
  for i, a in enumerate(splits):
    for b_ in splits[i + 1:]:
      assert not groups[a] & groups[b_], (a, b_)
  # ... and each group is in the split that the shared rule gives it.
  from fbjax.data import splits as shared
  for s, gs in groups.items():
    assert {shared.split_of(g.decode() if isinstance(g, bytes) else str(g)) for g in gs} == {s}


def test_every_condition_in_every_split(tiny):
  _, src = tiny
  want = set(range(len(labels.PHANTOM_CONDITIONS)))
  for s in LABELLED:
    assert {int(src[s][i]["condition"]) for i in range(len(src[s]))} == want, s
  # the bigger configs' index plans, without building them
  seeds = _module().SPLIT_SEEDS
  for cfg in _module().Builder.BUILDER_CONFIGS:
    for s in LABELLED:
      n = cfg.counts()[s]
      plan = phantom.plan_table(seeds[s], n)
      assert set(plan["condition"].tolist()) == want, (cfg.name, s)
      assert set(plan["plane"].tolist()) == {0, 1, 2, 3}, (cfg.name, s)
