"""Convolutional autoencoders for B-mode images (pure linen, no I/O).

Two architectures, chosen by `arch`:

- "seed": the prototype this project started from (a Keras model): three
  3x3 conv + ReLU layers of 32/64/128 channels, each followed by 2x2 max
  pooling; a decoder of 3x3 conv + ReLU (128/64/32) each followed by 2x
  nearest upsampling; a linear 3x3 conv to the input channels (3 for RGB).
- "resnet" (the default): a strided-conv stem, residual blocks with
  GroupNorm and swish, strided-conv downsampling to a spatial code of
  `latent_channels` at 1/2^len(widths) resolution; a global feature vector
  (`latent_dim`) pooled after `latent_widths` further strided stages (deeper
  features for classification heads), which the decoder also reads
  (broadcast over the code), so the reconstruction loss trains it; and a
  mirrored decoder (nearest upsampling + conv) with a sub-pixel output.
  GroupNorm keeps each example's forward pass independent of the batch, so
  data parallelism needs no cross-device statistics.

`Model.__call__(x)` returns `(reconstruction, aux)` with `aux["latent"]` the
(B, D) feature vector for classification heads and `aux["latent_map"]` the
spatial code; `Model.encode(x)` returns the feature vector alone:

    model = Model(arch="resnet", widths=(32, 64), latent_channels=8, latent_widths=(128,))
    params = model.init(rng, x)            # x: (B, H, W, C) float in [0, 1]
    recon, aux = model.apply(params, x)
    z = model.apply(params, x, method=Model.encode)

References (CITATIONS.bib): residual blocks he2016resnet (zero-initialised
last conv: goyal2017largebatch), GroupNorm wu2018groupnorm, sub-pixel output
shi2016subpixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def _groups(channels: int, groups: int) -> int:
  g = min(groups, channels)
  while channels % g:
    g -= 1
  return g


def _upsample(x, factor: int = 2):
  b, h, w, c = x.shape
  return jax.image.resize(x, (b, h * factor, w * factor, c), "nearest")


# ---------------------------------------------------------------------------
# The prototype ("seed").
# ---------------------------------------------------------------------------

class SeedEncoder(nn.Module):
  widths: Sequence[int] = (32, 64, 128)

  @nn.compact
  def __call__(self, x):
    for i, w in enumerate(self.widths):
      x = nn.relu(nn.Conv(w, (3, 3), padding="SAME", name=f"conv{i}")(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
    return x.mean(axis=(1, 2)), x


class SeedDecoder(nn.Module):
  widths: Sequence[int] = (128, 64, 32)
  out_channels: int = 3

  @nn.compact
  def __call__(self, z_map, latent=None):
    del latent  # the prototype decodes the spatial code only
    x = z_map
    for i, w in enumerate(self.widths):
      x = nn.relu(nn.Conv(w, (3, 3), padding="SAME", name=f"conv{i}")(x))
      x = _upsample(x)
    return nn.Conv(self.out_channels, (3, 3), padding="SAME", name="out")(x)


# ---------------------------------------------------------------------------
# The default residual autoencoder.
# ---------------------------------------------------------------------------

class ResBlock(nn.Module):
  width: int
  groups: int = 8

  @nn.compact
  def __call__(self, x):
    h = nn.swish(nn.GroupNorm(_groups(x.shape[-1], self.groups))(x))
    h = nn.Conv(self.width, (3, 3), padding="SAME")(h)
    h = nn.swish(nn.GroupNorm(_groups(self.width, self.groups))(h))
    # Zero-initialised last conv: each block starts as the identity.
    h = nn.Conv(self.width, (3, 3), padding="SAME", kernel_init=nn.initializers.zeros)(h)
    if x.shape[-1] != self.width:
      x = nn.Conv(self.width, (1, 1), name="skip")(x)
    return x + h


class Encoder(nn.Module):
  widths: Sequence[int] = (32, 64, 128)
  blocks: int = 1
  latent_channels: int = 32
  latent_dim: int = 256
  latent_widths: Sequence[int] = ()
  groups: int = 8

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(self.widths[0], (3, 3), strides=(2, 2), padding="SAME", name="stem")(x)
    for i, w in enumerate(self.widths):
      if i:
        x = nn.Conv(w, (3, 3), strides=(2, 2), padding="SAME", name=f"down{i}")(x)
      for j in range(self.blocks):
        x = ResBlock(w, self.groups, name=f"stage{i}_block{j}")(x)
    x = nn.swish(nn.GroupNorm(_groups(x.shape[-1], self.groups), name="norm_out")(x))
    z_map = nn.Conv(self.latent_channels, (1, 1), name="to_code")(x)
    # The feature vector: optionally deeper (further strided stages) than the code.
    h = x
    for i, w in enumerate(self.latent_widths):
      h = nn.Conv(w, (3, 3), strides=(2, 2), padding="SAME", name=f"latent_down{i}")(h)
      h = ResBlock(w, self.groups, name=f"latent_block{i}")(h)
    if self.latent_widths:
      h = nn.swish(nn.GroupNorm(_groups(h.shape[-1], self.groups), name="latent_norm")(h))
    latent = nn.Dense(self.latent_dim, name="to_latent")(h.mean(axis=(1, 2)))
    return latent, z_map


class Decoder(nn.Module):
  widths: Sequence[int] = (128, 64, 32)
  blocks: int = 1
  out_channels: int = 1
  groups: int = 8

  @nn.compact
  def __call__(self, z_map, latent):
    x = nn.Conv(self.widths[0], (3, 3), padding="SAME", name="from_code")(z_map)
    x = x + nn.Dense(self.widths[0], name="from_latent")(latent)[:, None, None, :]
    for i, w in enumerate(self.widths):
      if i:
        x = nn.Conv(w, (3, 3), padding="SAME", name=f"up{i}")(_upsample(x))
      for j in range(self.blocks):
        x = ResBlock(w, self.groups, name=f"stage{i}_block{j}")(x)
    x = nn.swish(nn.GroupNorm(_groups(x.shape[-1], self.groups), name="norm_out")(x))
    # Sub-pixel output: predict the 2x2 output pixels of each cell, then interleave.
    x = nn.Conv(4 * self.out_channels, (3, 3), padding="SAME", name="out")(x)
    b, h, w, _ = x.shape
    x = x.reshape(b, h, w, 2, 2, self.out_channels).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, 2 * h, 2 * w, self.out_channels)


class Model(nn.Module):
  """Autoencoder; see the module docstring for `arch`."""

  arch: str = "resnet"
  channels: int = 1                 # input = output channels
  widths: Sequence[int] = (32, 64, 128)
  blocks: int = 1                   # residual blocks per stage ("resnet")
  latent_channels: int = 32         # channels of the spatial code ("resnet")
  latent_dim: int = 256             # size of the feature vector ("resnet")
  latent_widths: Sequence[int] = ()  # extra strided stages before the vector ("resnet")
  groups: int = 8

  def setup(self):
    if self.arch == "seed":
      self.encoder = SeedEncoder(tuple(self.widths))
      self.decoder = SeedDecoder(tuple(reversed(self.widths)), self.channels)
    elif self.arch == "resnet":
      self.encoder = Encoder(tuple(self.widths), self.blocks, self.latent_channels,
                             self.latent_dim, tuple(self.latent_widths), self.groups)
      self.decoder = Decoder(tuple(reversed(self.widths)), self.blocks, self.channels,
                             self.groups)
    else:
      raise ValueError(f"unknown autoencoder arch {self.arch!r}; expected 'seed' or 'resnet'")

  def downsampling(self) -> int:
    """The input size must be a multiple of this."""
    extra = 0 if self.arch == "seed" else len(self.latent_widths)
    return 2 ** (len(self.widths) + extra)

  def encode(self, x):
    return self.encoder(x)[0]

  def __call__(self, x, *, train: bool = False):
    del train  # no dropout or batch statistics
    if x.shape[-1] != self.channels:
      raise ValueError(f"expected {self.channels} input channels, got shape {x.shape}")
    f = self.downsampling()
    if x.shape[1] % f or x.shape[2] % f:
      raise ValueError(f"input size {x.shape[1:3]} must be a multiple of {f}")
    latent, z_map = self.encoder(x)
    recon = self.decoder(z_map, latent)
    return recon, {"latent": latent, "latent_map": z_map}


def to_channels(images: jnp.ndarray, channels: int) -> jnp.ndarray:
  """(B, H, W) grey images -> (B, H, W, C), repeating grey into C channels."""
  return jnp.repeat(images[..., None], channels, axis=-1)
