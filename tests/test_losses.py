"""Segmentation losses against optax and hand-computed references."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fbjax.models import losses


def _data(seed=0, shape=(3, 8, 10, 2)):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(0, 3, shape), jnp.float32),
          jnp.asarray(rng.random(shape) > 0.6, jnp.float32))


def test_bce_matches_optax():
  logits, t = _data()
  want = optax.sigmoid_binary_cross_entropy(logits, t).mean(axis=(1, 2))
  np.testing.assert_allclose(losses.sigmoid_bce(logits, t), want, rtol=1e-5, atol=1e-6)
  big = jnp.full((1, 2, 2, 1), 200.0)
  assert np.isfinite(losses.sigmoid_bce(big, jnp.zeros_like(big))).all()


def test_soft_dice_by_hand():
  logits, t = _data(1)
  p = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
  tt = np.asarray(t, np.float64)
  want = 1 - (2 * (p * tt).sum((1, 2)) + 1) / (p.sum((1, 2)) + tt.sum((1, 2)) + 1)
  np.testing.assert_allclose(losses.soft_dice_loss(logits, t), want, rtol=1e-5)


def test_perfect_prediction_is_near_zero():
  _, t = _data(2)
  logits = (t * 2 - 1) * 30.0
  per = losses.segmentation_loss(logits, t, jnp.ones((3, 2), bool))[1]["loss"]
  assert float(per.max()) < 1e-3


def test_absent_masks_are_ignored_in_value_and_gradient():
  logits, t = _data(3)
  present = jnp.array([[True, False], [True, True], [False, False]])
  loss, aux = losses.segmentation_loss(logits, t, present)
  per = np.asarray(aux["loss"])
  assert float(loss) == pytest.approx(per[np.asarray(present)].mean(), rel=1e-6)
  assert float(aux["count"]) == 3.0
  g = jax.grad(lambda x: losses.segmentation_loss(x, t, present)[0])(logits)
  g = np.asarray(g)
  assert np.all(g[0, ..., 1] == 0) and np.all(g[2] == 0)
  assert np.any(g[1] != 0)
  none = losses.segmentation_loss(logits, t, jnp.zeros((3, 2), bool))[0]
  assert float(none) == 0.0


def test_shape_errors():
  logits, t = _data()
  with pytest.raises(ValueError, match="present"):
    losses.segmentation_loss(logits, t, jnp.ones((3,), bool))
  with pytest.raises(ValueError, match="differ"):
    losses.segmentation_loss(logits, t[..., :1], jnp.ones((3, 2), bool))


def test_boundary_band_of_a_square_is_the_ring_around_its_edge():
  t = np.zeros((1, 32, 32, 1), np.float32)
  t[0, 10:20, 10:20, 0] = 1.0                    # a 10x10 square
  t[0, 0:4, 26:32, 0] = 1.0                      # a block on the image's corner
  band = np.asarray(losses.boundary_band(jnp.asarray(t), 1))[0, ..., 0]
  want = np.zeros((32, 32), np.float32)
  want[9:21, 9:21] = 1.0                         # dilated by 1: 12x12 ...
  want[11:19, 11:19] = 0.0                       # ... minus eroded by 1: 8x8
  want[0:5, 25:32] = 1.0                         # the corner block: only its two inner
  want[0:3, 27:32] = 0.0                         # edges, not the image border
  np.testing.assert_array_equal(band, want)
  assert band[9:21, 9:21].sum() == 12 * 12 - 8 * 8


def test_boundary_weight_is_a_weighted_pixel_mean_of_the_cross_entropy():
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(2, 16, 16, 1)).astype(np.float32)
  t = np.zeros((2, 16, 16, 1), np.float32)
  t[:, 4:12, 5:11] = 1.0
  present = jnp.ones((2, 1), bool)
  plain = losses.segmentation_loss(logits, t, present)[1]
  assert np.allclose(losses.segmentation_loss(logits, t, present, boundary_weight=0.0)[1]["bce"],
                     plain["bce"])
  aux = losses.segmentation_loss(logits, t, present, boundary_weight=4.0, boundary_width=1)[1]
  # by hand: per-pixel BCE, weight 5 on the ring 1 px either side of the rectangle's edge
  p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
  per_px = -(t * np.log(p) + (1 - t) * np.log(1 - p))
  w = np.ones_like(t)
  w[:, 3:13, 4:12] = 5.0
  w[:, 5:11, 6:10] = 1.0
  want = (per_px * w).sum(axis=(1, 2)) / w.sum(axis=(1, 2))
  np.testing.assert_allclose(aux["bce"], want, rtol=1e-5)
  np.testing.assert_allclose(aux["dice_loss"], plain["dice_loss"], rtol=1e-6)
  assert not np.allclose(aux["bce"], plain["bce"])
