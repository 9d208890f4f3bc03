"""Data augmentation: pure functions of (rng, example).

Each function takes a `np.random.Generator` and an example dict (image
float32 HxW in [0, 1], optional masks HxW uint8, optional
`pixel_spacing_mm`) and returns a new dict; nothing is modified in place and
no global random state is touched. Geometric transforms move the masks with
the image (nearest-neighbour), and a scale change updates the pixel spacing
so millimetre targets stay true.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from fbjax.data.features import MASKS


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  flip_prob: float = 0.5
  max_rotate_deg: float = 10.0
  max_log_scale: float = 0.1          # scale = exp(U(-m, m))
  max_log_gain: float = 0.2           # intensity gain = exp(U(-m, m))
  max_log_gamma: float = 0.25         # gamma = exp(U(-m, m))
  image_keys: tuple[str, ...] = ("image", "clean")  # float images, moved together


def flip(rng: np.random.Generator, ex: dict, prob: float = 0.5, *,
         image_keys=("image", "clean")) -> dict:
  """Left-right flip (an axial head image is plausible mirrored)."""
  if rng.random() >= prob:
    return dict(ex)
  out = dict(ex)
  for k in (*image_keys, *MASKS):
    if k in out:
      out[k] = np.ascontiguousarray(out[k][:, ::-1])
  return out


def affine(rng: np.random.Generator, ex: dict, max_rotate_deg: float = 10.0,
           max_log_scale: float = 0.1, *, image_keys=("image", "clean")) -> dict:
  """Rotation about the centre and isotropic scale; spacing follows the scale."""
  angle = rng.uniform(-max_rotate_deg, max_rotate_deg)
  scale = math.exp(rng.uniform(-max_log_scale, max_log_scale))
  out = dict(ex)
  h, w = ex["image"].shape[:2]
  m = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), angle, scale)
  for k in image_keys:
    if k in out:
      out[k] = cv2.warpAffine(out[k], m, (w, h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
  for k in MASKS:
    if k in out:
      out[k] = cv2.warpAffine(out[k], m, (w, h), flags=cv2.INTER_NEAREST,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
  if "pixel_spacing_mm" in out:
    out["pixel_spacing_mm"] = np.float32(out["pixel_spacing_mm"] / scale)
  return out


def gain_gamma(rng: np.random.Generator, ex: dict, max_log_gain: float = 0.2,
               max_log_gamma: float = 0.25) -> dict:
  """Overall gain and gamma on the noisy image only (the clean target is kept)."""
  gain = math.exp(rng.uniform(-max_log_gain, max_log_gain))
  gamma = math.exp(rng.uniform(-max_log_gamma, max_log_gamma))
  out = dict(ex)
  img = np.clip(ex["image"], 0.0, 1.0)
  out["image"] = np.clip(gain * np.power(img, gamma), 0.0, 1.0).astype(np.float32)
  return out


def augment(rng: np.random.Generator, ex: dict, cfg: AugmentConfig = AugmentConfig()) -> dict:
  """The default chain: flip, rotation + scale, gain + gamma."""
  ex = flip(rng, ex, cfg.flip_prob, image_keys=cfg.image_keys)
  ex = affine(rng, ex, cfg.max_rotate_deg, cfg.max_log_scale, image_keys=cfg.image_keys)
  return gain_gamma(rng, ex, cfg.max_log_gain, cfg.max_log_gamma)
