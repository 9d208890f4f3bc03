"""Synthetic pictures without a fetal head (blank, noise, speckle, gradients, shapes, an
abdomen-like disc, a femur-like bar): the negatives the head gate (`fbjax.geometry.head_gate`)
is measured on.

    img = negatives.negative("abdomen", np.random.default_rng(0))    # uint8 (540, 800)
"""

from __future__ import annotations

import cv2
import numpy as np

KINDS = ("black", "grey", "white", "uniform_noise", "speckle", "gradient", "shapes",
         "abdomen", "femur")


def speckle(rng, shape, scale=0.25):
  """Fully developed speckle: Rayleigh amplitude, low-passed a little as a scanner does."""
  s = rng.rayleigh(scale, shape).astype(np.float32)
  return cv2.GaussianBlur(s, (0, 0), 1.0)


def negative(kind: str, rng: np.random.Generator, hw=(540, 800)) -> np.ndarray:
  """One synthetic picture without a fetal head, uint8 (H, W)."""
  h, w = hw
  if kind == "black":
    img = np.zeros(hw, np.float32)
  elif kind == "grey":
    img = np.full(hw, rng.uniform(0.2, 0.8), np.float32)
  elif kind == "white":
    img = np.ones(hw, np.float32)
  elif kind == "uniform_noise":
    img = rng.uniform(0, 1, hw).astype(np.float32)
  elif kind == "speckle":
    img = speckle(rng, hw)
  elif kind == "gradient":
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = rng.uniform(0, np.pi)
    img = (np.cos(t) * xx / w + np.sin(t) * yy / h)
    img = (img - img.min()) / max(np.ptp(img), 1e-6)
  elif kind == "shapes":
    img = np.zeros(hw, np.float32)
    for _ in range(rng.integers(2, 6)):
      v = float(rng.uniform(0.2, 1.0))
      c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
      if rng.uniform() < 0.5:
        ax = (int(rng.integers(20, 250)), int(rng.integers(20, 200)))
        cv2.ellipse(img, c, ax, float(rng.uniform(0, 180)), 0, 360, v, -1)
      else:
        d = (int(rng.integers(20, 300)), int(rng.integers(20, 200)))
        cv2.rectangle(img, c, (c[0] + d[0], c[1] + d[1]), v, -1)
  elif kind == "abdomen":
    # A round, homogeneous speckled region in a darker field: an abdomen has
    # a thin soft-tissue wall, no bright bony ring.
    img = 0.3 * speckle(rng, hw)
    mask = np.zeros(hw, np.float32)
    ax = (int(rng.integers(120, 220)), int(rng.integers(100, 180)))
    cv2.ellipse(mask, (w // 2 + int(rng.integers(-80, 80)), h // 2 + int(rng.integers(-60, 60))),
                ax, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    img = img + mask * speckle(rng, hw, 0.35)
  elif kind == "femur":
    img = 0.4 * speckle(rng, hw)
    c = (w // 2 + int(rng.integers(-100, 100)), h // 2 + int(rng.integers(-80, 80)))
    length, t = float(rng.uniform(150, 350)), float(rng.uniform(0, np.pi))
    d = (int(length / 2 * np.cos(t)), int(length / 2 * np.sin(t)))
    cv2.line(img, (c[0] - d[0], c[1] - d[1]), (c[0] + d[0], c[1] + d[1]), 1.0,
             int(rng.integers(10, 22)))
    img = cv2.GaussianBlur(img, (0, 0), 1.5)
  else:
    raise ValueError(f"unknown negative kind {kind!r}; known: {KINDS}")
  return np.clip(np.rint(np.clip(img, 0, 1) * 255), 0, 255).astype(np.uint8)
