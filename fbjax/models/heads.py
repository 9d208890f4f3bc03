"""Classification heads on the autoencoder's encoder (pure linen, no I/O).

    model = heads.Model(ae=dict(arch="resnet", widths=(16, 32, 64), latent_channels=16,
                                latent_dim=64), heads=(("plane", 4), ("abnormal", 2)))
    params = model.init(rng, x)["params"]        # x: (B, H, W, C) float in [0, 1]
    logits, aux = model.apply({"params": params}, x)
    # logits["plane"] (B, 4), logits["abnormal"] (B, 2); aux["features"] (B, F);
    # aux["recon"] (B, H, W, C) when `decode` is set (joint reconstruction loss)

The encoder is `fbjax.models.autoencoder.Model` itself, as the submodule
`ae`, so its parameters `params["ae"]` have exactly the layout of an
autoencoder checkpoint and a trained autoencoder initialises them as they are
(`init_from_autoencoder`). Features given to the heads (`features`):

  "latent"    the encoder's global feature vector (B, latent_dim)
  "map_mean"  mean over positions of the spatial code (B, latent_channels)
  "map_max"   max over positions of the spatial code (B, latent_channels)

concatenated in the order given. Each head is a linear layer, or an MLP with
one hidden layer (`hidden` > 0) with dropout before its last layer.
`stop_gradient` keeps the heads' gradient out of the encoder (a frozen
encoder; the trainer also leaves the encoder's weights untouched).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fbjax.models import autoencoder

FEATURES = ("latent", "map_mean", "map_max")


class Head(nn.Module):
  num_classes: int
  hidden: int = 0
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    if self.hidden:
      x = nn.swish(nn.Dense(self.hidden, name="hidden")(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name="out")(x)


class Model(nn.Module):
  """Autoencoder encoder + one classification head per task; see the module docstring."""

  ae: dict
  heads: Sequence[tuple[str, int]] = (("plane", 4), ("abnormal", 2))
  features: Sequence[str] = ("latent", "map_mean", "map_max")
  hidden: int = 0
  dropout: float = 0.0
  feature_norm: bool = True       # LayerNorm on the features (scale-free heads)
  decode: bool = False            # also return the reconstruction
  stop_gradient: bool = False     # frozen encoder

  def setup(self):
    unknown = [f for f in self.features if f not in FEATURES]
    if unknown or not self.features:
      raise ValueError(f"unknown features {unknown}; choose from {FEATURES}")
    self.autoencoder = autoencoder.Model(**dict(self.ae), name="ae")
    self.norm = nn.LayerNorm(name="feature_norm") if self.feature_norm else None
    self.head_modules = {name: Head(n, self.hidden, self.dropout, name=f"head_{name}")
                         for name, n in self.heads}

  @property
  def channels(self) -> int:
    return int(dict(self.ae).get("channels", 1))

  def encode(self, x):
    """(B, H, W, C) -> (features (B, F), latent, latent_map)."""
    latent, z_map = self.autoencoder.encoder(x)
    parts = {"latent": latent, "map_mean": z_map.mean(axis=(1, 2)),
             "map_max": z_map.max(axis=(1, 2))}
    f = jnp.concatenate([parts[k] for k in self.features], axis=-1)
    if self.stop_gradient:
      f, latent, z_map = jax.lax.stop_gradient((f, latent, z_map))
    return f, latent, z_map

  def __call__(self, x, *, train: bool = False):
    if x.shape[-1] != self.channels:
      raise ValueError(f"expected {self.channels} input channels, got shape {x.shape}")
    k = self.autoencoder.downsampling()
    if x.shape[1] % k or x.shape[2] % k:
      raise ValueError(f"input size {x.shape[1:3]} must be a multiple of {k}")
    f, latent, z_map = self.encode(x)
    aux = {"features": f, "latent": latent}
    if self.decode:
      aux["recon"] = self.autoencoder.decoder(z_map, latent)
    if self.norm is not None and self.heads:
      f = self.norm(f)
    logits = {name: m(f, train=train) for name, m in self.head_modules.items()}
    return logits, aux


def init_from_autoencoder(params: dict, ae_params: dict) -> dict:
  """`params` with its `ae` subtree replaced by a trained autoencoder's parameters.

  Only the parts present in `params` are taken (the decoder is left out when
  the model does not decode). Shapes must match; a mismatch names the leaf.
  """
  ae_params = dict(ae_params)
  out = dict(params)
  mine = params["ae"]
  taken = {}
  for part, sub in mine.items():
    if part not in ae_params:
      raise ValueError(f"the autoencoder checkpoint has no {part!r} (has {sorted(ae_params)})")
    want = jax.tree_util.tree_flatten_with_path(sub)[0]
    got = jax.tree_util.tree_flatten_with_path(ae_params[part])[0]
    ws = {jax.tree_util.keystr(p): v.shape for p, v in want}
    gs = {jax.tree_util.keystr(p): tuple(v.shape) for p, v in got}
    if ws != gs:
      diff = sorted(set(ws.items()) ^ set(gs.items()))[:4]
      raise ValueError(f"autoencoder {part} parameters do not fit the configured encoder "
                       f"(first differences: {diff}); use the autoencoder's model config")
    taken[part] = jax.tree.map(jnp.asarray, ae_params[part])
  out["ae"] = taken
  return out
