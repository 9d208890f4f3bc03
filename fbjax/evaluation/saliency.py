"""Where does a classifier look? Occlusion and gradient maps, and how much of them is on the head.

    heat = occlusion_map(score_fn, image, patch=16, stride=8)   # score drop per position
    grad = gradient_map(grad_fn, images)                         # |d score / d pixel|
    inside_fraction(heat, head_mask)                             # share of the map on the head

`score_fn` maps a numpy batch (N, H, W) to (N,) scores (e.g. the abnormal
logit); occlusion replaces a `patch` x `patch` square by `fill` at every
`stride` and records how much the score drops (Zeiler & Fergus 2014).
`gradient_map` is the absolute input gradient, smoothed by a Gaussian
(Simonyan et al. 2014). Both are (H, W) arrays; positive values are evidence for
the class scored.
"""

from __future__ import annotations

import cv2
import numpy as np


def occlusion_map(score_fn, image: np.ndarray, *, patch: int, stride: int, fill: float = 0.0,
                  batch_size: int = 64) -> np.ndarray:
  """(H, W) map: score(image) - score(image with the patch covering each pixel occluded).

  Each pixel gets the mean drop over the occluding patches that cover it.
  """
  img = np.asarray(image, np.float32)
  h, w = img.shape
  if patch < 1 or stride < 1:
    raise ValueError(f"patch and stride must be >= 1, got {patch}, {stride}")
  ys = list(range(0, max(h - patch, 0) + 1, stride))
  xs = list(range(0, max(w - patch, 0) + 1, stride))
  if ys[-1] + patch < h:
    ys.append(h - patch)
  if xs[-1] + patch < w:
    xs.append(w - patch)
  boxes = [(y, x) for y in ys for x in xs]
  base = float(np.asarray(score_fn(img[None]))[0])
  drops = np.zeros(len(boxes), np.float64)
  for i in range(0, len(boxes), batch_size):
    chunk = boxes[i:i + batch_size]
    b = np.repeat(img[None], len(chunk), axis=0)
    for k, (y, x) in enumerate(chunk):
      b[k, y:y + patch, x:x + patch] = fill
    drops[i:i + len(chunk)] = base - np.asarray(score_fn(b), np.float64)[: len(chunk)]
  total = np.zeros((h, w), np.float64)
  count = np.zeros((h, w), np.float64)
  for (y, x), d in zip(boxes, drops, strict=True):
    total[y:y + patch, x:x + patch] += d
    count[y:y + patch, x:x + patch] += 1
  return (total / np.maximum(count, 1)).astype(np.float32)


def gradient_map(grad_fn, images: np.ndarray, sigma: float = 1.5) -> np.ndarray:
  """(N, H, W) absolute input gradients from `grad_fn(images)`, Gaussian-smoothed."""
  g = np.abs(np.asarray(grad_fn(np.asarray(images, np.float32)), np.float32))
  if sigma > 0:
    g = np.stack([cv2.GaussianBlur(x, (0, 0), sigma) for x in g])
  return g


def inside_fraction(heat: np.ndarray, mask: np.ndarray) -> float:
  """Share of the positive mass of `heat` that lies inside `mask` (NaN if none is positive)."""
  h = np.clip(np.asarray(heat, np.float64), 0, None)
  m = np.asarray(mask) > 0
  if h.shape != m.shape:
    h = cv2.resize(h, (m.shape[1], m.shape[0]), interpolation=cv2.INTER_LINEAR)
  total = h.sum()
  return float(h[m].sum() / total) if total > 0 else float("nan")
