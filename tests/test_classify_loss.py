"""The classification loss against a direct NumPy computation: unknown labels masked,
class weights, label smoothing, the condition classes a model keeps, the loss weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fbjax.core import labels
from fbjax.enhance import modules as enhance_lib
from fbjax.evaluation import networks
from fbjax.models import autoencoder as ae_lib
from fbjax.trainers import classify
from tests import classify_util


def _log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_loss_is_the_weighted_masked_smoothed_cross_entropy(smoothing):
  c = classify_util.tiny_config((16, 16))
  c.loss.label_smoothing = smoothing
  c.loss.plane, c.loss.abnormal, c.loss.condition = 1.0, 0.5, 2.0
  c.loss.recon = 0.0
  model = networks.classifier_model(c)
  params = classify_util.random_params(model, (16, 16), seed=3)
  rng = np.random.default_rng(0)
  n = 6
  kept = list(c.condition_classes)
  # Raw condition labels are indices of labels.CONDITIONS; -1 unknown; one that the model
  # does not keep (if any) counts as unknown too.
  not_kept = [i for i, name in enumerate(labels.CONDITIONS) if name not in kept]
  cond = [labels.condition_index(kept[1]), -1, labels.condition_index(kept[0]),
          not_kept[0] if not_kept else -1, labels.condition_index(kept[2]), -1]
  batch = {"image": jnp.asarray(rng.uniform(size=(n, 16, 16)).astype(np.float32)),
           "plane": jnp.asarray([0, -1, 2, 1, -1, 3]),
           "abnormal": jnp.asarray([1, 0, -1, 1, 0, -1]),
           "condition": jnp.asarray(cond)}
  sizes = dict(networks.head_sizes(c))
  class_w = {t: jnp.asarray(rng.uniform(0.5, 2.0, size=k).astype(np.float32))
             for t, k in sizes.items()}
  key = jax.random.key(7)
  total, terms = classify.make_loss_fn(c, model, class_w)(params, batch, key)

  # The same logits (same parameters, input and dropout key), then the loss by hand.
  x = ae_lib.to_channels(enhance_lib.make_enhance_fn(c.enhance, (16, 16))(batch["image"]),
                         model.channels)
  logits, _ = model.apply({"params": params}, x, train=True, rngs={"dropout": key})
  want_total = 0.0
  for t, k in sizes.items():
    y = np.asarray(batch[t])
    if t == "condition":
      y = np.array([kept.index(labels.CONDITIONS[v]) if v >= 0 and labels.CONDITIONS[v] in kept
                    else -1 for v in y])
    z = np.asarray(logits[t], np.float64)
    ce = []
    for i in range(n):
      if y[i] < 0:
        continue
      target = np.full(k, smoothing / k)
      target[y[i]] += 1.0 - smoothing
      ce.append((float(class_w[t][y[i]]), -(target * _log_softmax(z[i])).sum()))
    w = np.array([a for a, _ in ce])
    want = float((w * np.array([b for _, b in ce])).sum() / w.sum())
    assert float(terms[t]) == pytest.approx(want, rel=1e-5), t
    want_total += float(c.loss[t]) * want
  assert float(total) == pytest.approx(want_total, rel=1e-5)


def test_a_head_without_any_known_label_adds_nothing():
  c = classify_util.tiny_config((16, 16))
  model = networks.classifier_model(c)
  params = classify_util.random_params(model, (16, 16), seed=1)
  sizes = dict(networks.head_sizes(c))
  batch = {"image": jnp.zeros((2, 16, 16)), "plane": jnp.asarray([-1, -1]),
           "abnormal": jnp.asarray([0, 1]), "condition": jnp.asarray([-1, -1])}
  w = {t: jnp.ones(k) for t, k in sizes.items()}
  _, terms = classify.make_loss_fn(c, model, w)(params, batch, jax.random.key(0))
  assert float(terms["plane"]) == 0.0 and float(terms["condition"]) == 0.0
  assert float(terms["abnormal"]) > 0
