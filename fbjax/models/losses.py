"""Training losses: pure jnp functions, one value per example (and channel).

A data set may lack a mask (HC18 has a head but no skull or brain mask), so
the segmentation loss takes a `present` (B, C) flag and averages only over
(example, channel) pairs that have a target. `masked_mean` returns the
(sum, count) pair as well, so it can be summed across devices before the
division. `class_weights` turns training label counts into per-class weights
of a classification loss. `boundary_band` marks the pixels near a target's
edge, where `segmentation_loss` can weight the cross-entropy up
(`boundary_weight`): a 1-pixel shift of a head's contour changes its Dice
little but its circumference by 2 pi pixels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def sigmoid_bce(logits, targets, weights=None):
  """Binary cross-entropy with logits, mean over pixels: (B, H, W, C) -> (B, C).

  `weights` (B, H, W, C), if given, makes it the weighted mean over pixels.
  """
  logits = logits.astype(jnp.float32)
  t = targets.astype(jnp.float32)
  # log(1 + exp(-|x|)) + max(x, 0) - x t: stable for large |x|.
  per_px = jnp.maximum(logits, 0.0) - logits * t + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  if weights is None:
    return per_px.mean(axis=(1, 2))
  return (per_px * weights).sum(axis=(1, 2)) / jnp.maximum(weights.sum(axis=(1, 2)), 1e-9)


def boundary_band(targets, width: int):
  """1 where a binary target's (2 width + 1)-square neighbourhood holds both 0 and 1.

  (B, H, W, C) -> (B, H, W, C) float: the pixels within `width` (chessboard
  distance) of the boundary, on either side; the image border is not a boundary.
  """
  t = targets.astype(jnp.float32)
  k = 2 * int(width) + 1
  window, strides = (1, k, k, 1), (1, 1, 1, 1)
  dilated = lax.reduce_window(t, -jnp.inf, lax.max, window, strides, "SAME")
  eroded = -lax.reduce_window(-t, -jnp.inf, lax.max, window, strides, "SAME")
  return dilated - eroded


def soft_dice_loss(logits, targets, smooth: float = 1.0):
  """1 - soft Dice of sigmoid(logits) per example and channel: -> (B, C).

  `smooth` (in pixels) keeps the loss defined for empty targets, where it
  drives the prediction towards empty.
  """
  p = jax.nn.sigmoid(logits.astype(jnp.float32))
  t = targets.astype(jnp.float32)
  inter = (p * t).sum(axis=(1, 2))
  total = p.sum(axis=(1, 2)) + t.sum(axis=(1, 2))
  return 1.0 - (2.0 * inter + smooth) / (total + smooth)


def masked_mean(values, present):
  """(mean, sum, count) of `values` where `present`; mean is 0 when nothing is."""
  w = present.astype(jnp.float32)
  s = (values * w).sum()
  n = w.sum()
  return s / jnp.maximum(n, 1.0), s, n


def segmentation_loss(logits, targets, present, *, dice_weight: float = 1.0,
                      bce_weight: float = 1.0, smooth: float = 1.0,
                      boundary_weight: float = 0.0, boundary_width: int = 2):
  """Dice + BCE per (example, channel), averaged where a target is present.

  Args:
    logits: (B, H, W, C).
    targets: (B, H, W, C) in {0, 1}.
    present: (B, C) bool, False where the example has no mask for a channel.
    boundary_weight: the BCE's pixel weight is 1 + `boundary_weight` within
      `boundary_width` pixels of the target's boundary (`boundary_band`), a
      weighted mean per (example, channel); 0 is the plain mean.
  Returns:
    (loss, aux) where aux holds per-(example, channel) `dice_loss`, `bce`
    and `loss` (B, C), and the (sum, count) of the masked mean.
  """
  if logits.shape != targets.shape:
    raise ValueError(f"logits {logits.shape} and targets {targets.shape} differ")
  if present.shape != (logits.shape[0], logits.shape[-1]):
    raise ValueError(f"present {present.shape} must be (batch, channels) "
                     f"= {(logits.shape[0], logits.shape[-1])}")
  d = soft_dice_loss(logits, targets, smooth)
  weights = None
  if boundary_weight:
    weights = 1.0 + boundary_weight * boundary_band(targets, boundary_width)
  b = sigmoid_bce(logits, targets, weights)
  per = dice_weight * d + bce_weight * b
  loss, s, n = masked_mean(per, present)
  return loss, {"dice_loss": d, "bce": b, "loss": per, "sum": s, "count": n}


def class_weights(counts: np.ndarray, mode: str) -> np.ndarray:
  """Weights with mean 1 over the classes present: none, inverse or inverse_sqrt frequency."""
  c = np.asarray(counts, np.float64)
  present = c > 0
  if mode == "none" or not present.any():
    return np.ones_like(c, np.float32)
  if mode == "inverse":
    w = np.where(present, 1.0 / np.maximum(c, 1e-9), 0.0)
  elif mode == "inverse_sqrt":
    w = np.where(present, 1.0 / np.sqrt(np.maximum(c, 1e-9)), 0.0)
  else:
    raise ValueError(f"unknown class_weighting {mode!r}; expected none, inverse, inverse_sqrt")
  w = w / w[present].mean()
  return np.where(present, w, 1.0).astype(np.float32)
