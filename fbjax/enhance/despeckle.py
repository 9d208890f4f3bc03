"""A self-supervised despeckler: a small U-Net trained with structured blind spots.

Training needs noisy images only (no clean targets). Noise2Void (Krull et al.
2019) hides a pixel from the network and asks it to predict that pixel's
noisy value from its surroundings; when the noise of the hidden pixel is
independent of everything the network sees and has zero mean, the best
prediction is the clean value, so the MSE to the noisy pixel trains a
denoiser. Ultrasound speckle violates "independent": the point spread function
correlates it over several pixels (on the phantom the correlation is 0.86 at
one pixel laterally, 0.24 at four; 0.65 and 0.06 at one and three pixels
axially). A single hidden pixel would then be predictable from its correlated
neighbours and the network would learn to copy speckle. As in structured
Noise2Void (Broaddus et al. 2020), the whole neighbourhood over which the
noise is correlated is hidden (`mask_hw`, a box around each hidden pixel),
with the box filled by values of random pixels of the same image, and the
loss is taken only at the box centres.

    model = Model()
    x_in, centres = blind_spot(rng, x, fraction=0.01, mask_hw=(5, 9))
    pred = model.apply(variables, x_in)
    loss = masked_mse(pred, x, centres)

At inference the network sees the whole image (`Model.__call__(x)`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fbjax.core import checkpoint


class Model(nn.Module):
  """U-Net on (B, H, W) or (B, H, W, 1) images in [0, 1]; same shape out.

  `features` per level (the last is the bottleneck); two 3x3 convolutions and
  a GELU per level, average pooling down, nearest upsampling plus a 3x3
  convolution up, skip connections by concatenation. Inputs are padded
  (reflect) to a multiple of 2^(levels - 1) and cropped back.
  """

  features: Sequence[int] = (32, 64, 128)

  def _block(self, x, f, name):
    x = nn.gelu(nn.Conv(f, (3, 3), name=f"{name}_a")(x))
    return nn.gelu(nn.Conv(f, (3, 3), name=f"{name}_b")(x))

  @nn.compact
  def __call__(self, x):
    x = jnp.asarray(x, jnp.float32)
    squeeze = x.ndim == 3
    if squeeze:
      x = x[..., None]
    if x.ndim != 4 or x.shape[-1] != 1:
      raise ValueError(f"despeckle.Model: expected (B, H, W) or (B, H, W, 1), got {x.shape}")
    h, w = x.shape[1:3]
    m = 2 ** (len(self.features) - 1)
    ph, pw = (-h) % m, (-w) % m
    y = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge")
    # Centre the intensities so the network sees zero-mean input.
    y = y - 0.5
    skips = []
    for i, f in enumerate(self.features[:-1]):
      y = self._block(y, f, f"down{i}")
      skips.append(y)
      y = nn.avg_pool(y, (2, 2), (2, 2))
    y = self._block(y, self.features[-1], "bottom")
    for i, f in reversed(list(enumerate(self.features[:-1]))):
      b, hh, ww, c = y.shape
      y = jax.image.resize(y, (b, hh * 2, ww * 2, c), "nearest")
      y = nn.gelu(nn.Conv(f, (3, 3), name=f"up{i}")(y))
      y = self._block(jnp.concatenate([y, skips[i]], axis=-1), f, f"dec{i}")
    y = nn.Conv(1, (1, 1), name="out")(y) + 0.5
    y = y[:, :h, :w]
    return y[..., 0] if squeeze else y


def blind_spot(rng: jax.Array, x: jax.Array, *, fraction: float = 0.01,
               mask_hw: tuple[int, int] = (5, 9)):
  """Hides boxes around random pixels. Returns (network input, centre mask).

  Args:
    rng: PRNG key.
    x: (B, H, W) noisy images.
    fraction: probability that a pixel is a (loss) centre.
    mask_hw: (rows, cols) of the hidden box around each centre (odd; (1, 1)
      is plain Noise2Void). Choose it to cover the noise correlation.

  Hidden pixels take the values of uniformly drawn pixels of the same image,
  so the input keeps the image's grey-level distribution but carries no
  information about the hidden noise.
  """
  ky, kx = mask_hw
  if ky % 2 == 0 or kx % 2 == 0 or ky < 1 or kx < 1:
    raise ValueError(f"blind_spot: mask_hw must be odd, got {mask_hw}")
  b, h, w = x.shape
  k1, k2 = jax.random.split(rng)
  centres = jax.random.bernoulli(k1, fraction, (b, h, w))
  hidden = jax.lax.reduce_window(centres, False, jax.lax.bitwise_or, (1, ky, kx), (1, 1, 1),
                                 "SAME")
  src = jax.random.randint(k2, (b, h * w), 0, h * w)
  fill = jnp.take_along_axis(x.reshape(b, h * w), src, axis=1).reshape(b, h, w)
  return jnp.where(hidden, fill, x), centres


def masked_mse(pred: jax.Array, target: jax.Array, centres: jax.Array):
  """(sum of squared errors at the centres, number of centres): reduce once."""
  c = centres.astype(jnp.float32)
  return jnp.sum(jnp.square(pred - target) * c), jnp.sum(c)


class Learned(nn.Module):
  """The trained despeckler as a frozen enhancement stage (no trainable params).

  `params` are constants closed over by the stage, so a chain containing it
  needs no variables (`Enhance.apply({}, x)`) and an optimiser of the
  downstream model never touches them.
  """

  features: Sequence[int] = (32, 64, 128)
  params: dict | None = None

  def __call__(self, x):
    if self.params is None:
      raise ValueError("Learned: no despeckler parameters (set enhance.learned.workdir)")
    y = Model(self.features, parent=None).apply({"params": self.params}, x)
    return jnp.clip(y, 0.0, 1.0)


def load_stage(workdir: str = "", step: int = -1) -> Learned:
  """The despeckler trained in `workdir` (by `configs/despeckle.py`) as a stage.

  Reads `<workdir>/config.json` for the model's features and the checkpoint's
  params (the latest, or `step` >= 0).
  """
  if not workdir:
    raise ValueError("enhance chain 'learned': set enhance.learned.workdir to the workdir of "
                     "a despeckler trained with configs/despeckle.py")
  cfg_path = os.path.join(workdir, "config.json")
  if not os.path.exists(cfg_path):
    raise FileNotFoundError(f"enhance chain 'learned': {cfg_path} not found (is {workdir} a "
                            "despeckler workdir?)")
  with open(cfg_path) as f:
    cfg = json.load(f)
  features = tuple(cfg.get("model", {}).get("features", Model.features))
  state = checkpoint.load_state(workdir, None if step < 0 else step)
  params = jax.tree.map(jnp.asarray, state["params"])
  return Learned(features=features, params=params)
