"""U-Net (Ronneberger et al. 2015) for head, skull and brain segmentation.

    model = unet.Model(width=16, depth=4, norm="group")
    params = model.init(rng, images)["params"]      # images (B, H, W) or (B, H, W, 1)
    logits, aux = model.apply({"params": params}, images)
    # logits (B, H, W, 3): channels unet.CLASSES = ("head", "skull", "brain")
    # aux: {"bottleneck": (B, H/2^depth, W/2^depth, F), "features": (B, H, W, width)}

Each level is two 3x3 convolutions + normalisation + ReLU; 2x2 max pooling
down, a stride-2 transposed convolution up, skip connections by
concatenation. Normalisation is per example ("group", "instance", "layer" or
"none"), so the model has no batch statistics and behaves the same in
training and evaluation, at any batch size and under data parallelism.
H and W must be divisible by 2**depth. An `enhance` module, when given, is
applied to the [0, 1] images first.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

CLASSES = ("head", "skull", "brain")
NORMS = ("group", "instance", "layer", "none")


def _norm(kind: str, features: int, groups: int, dtype):
  if kind == "group":
    g = groups
    while features % g:
      g //= 2
    return nn.GroupNorm(num_groups=g, dtype=dtype)
  if kind == "instance":
    return nn.GroupNorm(num_groups=None, group_size=1, dtype=dtype)
  if kind == "layer":
    return nn.LayerNorm(dtype=dtype)
  if kind == "none":
    return lambda x: x
  raise ValueError(f"unknown norm {kind!r}; known: {NORMS}")


class ConvBlock(nn.Module):
  features: int
  norm: str = "group"
  groups: int = 8
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    for _ in range(2):
      x = nn.Conv(self.features, (3, 3), use_bias=self.norm == "none", dtype=self.dtype)(x)
      x = _norm(self.norm, self.features, self.groups, self.dtype)(x)
      x = nn.relu(x)
    return x


class Model(nn.Module):
  """U-Net returning (logits (B, H, W, num_classes), aux dict)."""

  num_classes: int = len(CLASSES)
  width: int = 16           # features at full resolution
  depth: int = 4            # number of 2x downsamplings
  max_width: int = 256      # cap on features per level
  norm: str = "group"
  groups: int = 8
  dtype: jnp.dtype = jnp.float32  # compute dtype (params stay float32)
  # Optional image enhancement in front (e.g. `fbjax.enhance.modules.make_enhance(cfg)`);
  # a submodule, so learnable enhancement parameters train with the U-Net.
  enhance: nn.Module | None = None

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    del train  # no dropout, no batch statistics
    if self.enhance is not None:
      x = self.enhance(x)
    if x.ndim == 3:
      x = x[..., None]
    if x.ndim != 4:
      raise ValueError(f"expected images (B, H, W) or (B, H, W, C), got shape {x.shape}")
    h, w = x.shape[1:3]
    f = 2 ** self.depth
    if h % f or w % f:
      raise ValueError(f"image size {h}x{w} is not divisible by 2**depth = {f}")
    x = (x.astype(self.dtype) - 0.5) * 2.0
    widths = [min(self.width * 2 ** i, self.max_width) for i in range(self.depth + 1)]
    skips = []
    for i in range(self.depth):
      x = ConvBlock(widths[i], self.norm, self.groups, self.dtype, name=f"down_{i}")(x)
      skips.append(x)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = ConvBlock(widths[-1], self.norm, self.groups, self.dtype, name="bottleneck")(x)
    bottleneck = x
    for i in reversed(range(self.depth)):
      x = nn.ConvTranspose(widths[i], (2, 2), strides=(2, 2), dtype=self.dtype,
                           name=f"upconv_{i}")(x)
      x = jnp.concatenate([x, skips[i]], axis=-1)
      x = ConvBlock(widths[i], self.norm, self.groups, self.dtype, name=f"up_{i}")(x)
    logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="logits")(x)
    return logits.astype(jnp.float32), {"bottleneck": bottleneck, "features": x}
