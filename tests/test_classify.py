"""Heads on the encoder, class weights, label remapping, the anomaly score's statistics."""

import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial import distance
from sklearn import covariance

from configs import common
from fbjax.core import labels, metrics
from fbjax.data import sources
from fbjax.data.mix import MixSource
from fbjax.evaluation import anomaly, networks
from fbjax.models import autoencoder, heads, losses
from fbjax.trainers import classify
from tests import classify_util

AE = classify_util.AE


def test_heads_share_the_autoencoder_layout_and_initialise_from_it():
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 16, 16, 1)).astype(np.float32))
  m = heads.Model(ae=AE, heads=(("plane", 4), ("abnormal", 2), ("condition", 7)), decode=True)
  p = classify_util.random_params(m, (16, 16))
  apply = jax.jit(m.apply)
  logits, aux = apply({"params": p}, x)
  assert {k: v.shape for k, v in logits.items()} == {"plane": (2, 4), "abnormal": (2, 2),
                                                     "condition": (2, 7)}
  assert aux["features"].shape == (2, 8 + 4 + 4)
  ae = autoencoder.Model(**AE)
  ae_p = classify_util.random_params(ae, (16, 16), seed=5)
  p2 = heads.init_from_autoencoder(p, ae_p)
  recon, ae_aux = jax.jit(ae.apply)({"params": ae_p}, x)
  _, aux2 = apply({"params": p2}, x)
  np.testing.assert_allclose(aux2["recon"], recon, atol=1e-6)
  np.testing.assert_allclose(aux2["latent"], ae_aux["latent"], atol=1e-6)
  wrong = classify_util.random_params(autoencoder.Model(**{**AE, "widths": (4, 16)}), (16, 16))
  with pytest.raises(ValueError, match="do not fit"):
    heads.init_from_autoencoder(p, wrong)


def test_frozen_encoder_gets_no_gradient():
  x = jnp.ones((2, 16, 16, 1)) * 0.5
  for frozen in (False, True):
    m = heads.Model(ae=AE, heads=(("plane", 4),), stop_gradient=frozen)
    p = classify_util.random_params(m, (16, 16))
    g = jax.jit(jax.grad(lambda q, m=m: m.apply({"params": q}, x)[0]["plane"][:, 1].sum()))(p)
    enc = sum(float(jnp.abs(v).sum()) for v in jax.tree.leaves(g["ae"]))
    assert (enc == 0.0) == frozen
    assert float(jnp.abs(g["head_plane"]["out"]["kernel"]).sum()) > 0


def test_class_weights():
  w = losses.class_weights(np.array([100, 25, 0, 4]), "inverse_sqrt")
  raw = np.array([1 / 10, 1 / 5, 1 / 2])
  np.testing.assert_allclose(w[[0, 1, 3]], raw / raw.mean(), rtol=1e-6)
  assert w[2] == 1.0
  np.testing.assert_allclose(losses.class_weights(np.array([3, 1]), "inverse"), [0.5, 1.5])
  np.testing.assert_array_equal(losses.class_weights(np.array([3, 1]), "none"), [1, 1])
  with pytest.raises(ValueError, match="class_weighting"):
    losses.class_weights(np.array([1, 1]), "log")


def test_condition_lookup_and_label_counts_over_a_mixture():
  table = networks.condition_lookup(("normal", "arachnoid_cyst", "colpocephaly"))
  assert table[labels.condition_index("arachnoid_cyst")] == 1
  assert table[labels.condition_index("colpocephaly")] == 2
  assert (table >= 0).sum() == 3
  a = sources.ListSource([{"plane": i % 4, "abnormal": -1, "condition": -1} for i in range(8)])
  b = sources.ListSource([{"plane": -1, "abnormal": 1, "condition": 12} for _ in range(2)])
  c = classify_util.tiny_config()
  c.condition_classes = ("normal", "arachnoid_cyst", "colpocephaly")
  mix = MixSource([a, sources.TaskMask(b, ("abnormal", "condition"))], [0.5, 0.5])
  counts = classify.label_counts(c, mix)
  # One epoch: 8 of `a` and 8 of `b` (b repeated 4 times).
  np.testing.assert_allclose(counts["plane"], [2, 2, 2, 2])
  np.testing.assert_allclose(counts["abnormal"], [0, 8])
  np.testing.assert_allclose(counts["condition"], [0, 0, 8])
  masked = sources.TaskMask(a, ("abnormal",))
  assert masked[1]["plane"] == -1 and a[1]["plane"] == 1


def test_label_defaults_and_where():
  src = sources.ListSource([{"abnormal": v, "plane": 0} for v in (-1, 0, 1, -1)])
  block = {"label_defaults": "abnormal=0", "where": "abnormal=0"}
  out = sources.filtered(src, block)
  assert len(out) == 3 and all(out[i]["abnormal"] == 0 for i in range(3))
  with pytest.raises(ValueError, match="bad label spec"):
    sources.parse_labels("colour=1")
  with pytest.raises(ValueError, match="no example"):
    sources.select(src, {"abnormal": 7})


def test_train_groups_keeps_a_stable_nested_share_of_groups():
  # Two examples per patient, bytes or str groups (what tfds and lists give).
  groups = [f"Patient{i:05d}" for i in range(200)]
  rows = [{"group": g.encode() if i % 2 else g, "plane": 0} for i, g in
          enumerate(g for g in groups for _ in range(2))]
  src = sources.ListSource(rows)
  # Reference computed directly: sha1 of the name, first 8 bytes, big-endian.
  share = {g: int(hashlib.sha1(g.encode()).hexdigest()[:16], 16) / 2**64 for g in groups}
  half = sources.group_subset_indices(src, 0.5)
  kept = {g for g in groups if share[g] < 0.5}
  assert [i // 2 for i in half[::2]] == [groups.index(g) for g in groups if g in kept]
  assert len(half) == 2 * len(kept) and 70 < len(kept) < 130   # both copies of each patient
  quarter = set(sources.group_subset_indices(src, 0.25).tolist())
  assert quarter < set(half.tolist())                            # nested
  np.testing.assert_array_equal(sources.group_subset_indices(src, 1.0), np.arange(400))
  with pytest.raises(ValueError, match="train_groups=0"):
    sources.group_subset_indices(src, 0.0)
  with pytest.raises(ValueError, match="keeps no group"):
    sources.group_subset_indices(sources.ListSource(rows[:2]), 1e-9)


def test_block_source_subsets_only_the_training_split():
  block = common.data("toy", source_size=(32, 32), num_examples=64, train_groups=0.5)
  train = sources.block_source(block, block.train_split)
  full = sources.get_source(block, block.train_split)
  want = [full[i]["id"] for i in range(len(full))
          if sources.group_share(full[i]["group"]) < 0.5]
  assert [train[i]["id"] for i in range(len(train))] == want and 0 < len(want) < 64
  val = sources.block_source(block, block.val_split)
  assert len(val) == len(sources.get_source(block, block.val_split))


def test_ledoit_wolf_matches_sklearn_and_mahalanobis_matches_scipy():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(40, 12)) @ rng.normal(size=(12, 12))
  cov, shrink = anomaly.ledoit_wolf(x)
  want_cov, want_shrink = covariance.ledoit_wolf(x)
  np.testing.assert_allclose(cov, want_cov, rtol=1e-10, atol=1e-12)
  assert shrink == pytest.approx(want_shrink)
  g = anomaly.Gaussian.fit(x)
  y = rng.normal(size=(5, 12))
  want = [distance.mahalanobis(v, x.mean(0), np.linalg.inv(want_cov)) for v in y]
  np.testing.assert_allclose(g.distance(y), want, rtol=1e-6)


def test_anomaly_calibration_and_save_load_roundtrip(tmp_path):
  thr = anomaly.calibrate({"mahalanobis": np.arange(1.0, 101.0), "recon": np.arange(20.0)},
                          0.95)
  assert thr == {"mahalanobis": 95.0, "recon": 18.0}
  size = (16, 16)
  ae_p = classify_util.random_params(autoencoder.Model(**AE), size)
  ae = anomaly.Autoencoder(model=dict(AE), params=ae_p, enhance={"chain": "none"}, size=size)
  fn = anomaly.make_score_fn(ae)
  imgs = jnp.asarray(np.random.default_rng(1).uniform(size=(6, *size)).astype(np.float32))
  out = fn(imgs)
  g = anomaly.Gaussian.fit(np.asarray(out["features"]))
  model = anomaly.AnomalyModel(ae, g, thr, 0.95)
  anomaly.save(model, tmp_path)
  back = anomaly.load(tmp_path)
  out2 = anomaly.make_score_fn(back.ae)(imgs)
  for k in ("features", "recon"):
    np.testing.assert_allclose(out2[k], out[k], rtol=1e-6)
  s1, s2 = model.scores(out), back.scores(out2)
  np.testing.assert_allclose(s1["mahalanobis"], s2["mahalanobis"], rtol=1e-6)
  assert back.thresholds == thr
  # Reconstruction error only over the content (non-black) pixels.
  x = np.zeros((1, *size), np.float32)
  x[0, 4:12, 4:12] = 0.5
  o = fn(jnp.asarray(np.repeat(x, 6, axis=0)))
  r = np.asarray(o["recon_image"])[0]
  want = np.mean((r[4:12, 4:12] - 0.5) ** 2)
  assert float(o["recon"][0]) == pytest.approx(want, rel=1e-5)
  assert metrics.threshold_at_specificity([1, 2, 3, 4], 0.75) == 3
