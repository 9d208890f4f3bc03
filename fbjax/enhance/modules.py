"""Linen wrappers around the filters, and the `Enhance` chain built from a config.

A downstream model puts the chain in front of itself:

    from fbjax.enhance import modules as enhance_lib
    config.enhance = enhance_lib.default_config("srad")      # in configs/<task>.py
    enhance = enhance_lib.make_enhance(config.enhance)       # an `Enhance` module
    x = enhance.apply({}, images)        # no learnable stage: no variables needed
    # or as a submodule (`self.enhance = make_enhance(cfg)`) so learnable
    # stages (`learn=True`) get their params in the model's tree.

`config.chain` is one of "none", "prototype" (histogram equalisation + 5x5
median), "srad", "learned" (the self-supervised despeckler of
`configs/despeckle.py`), or any "+"-joined sequence of stage names (e.g.
"srad+clahe"); each stage reads its parameters from the config entry of the
same name. Images are (B, H, W) or (B, H, W, 1) floats in [0, 1]; the output
has the input's shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fbjax.enhance import despeckle, filters

CHAINS = ("none", "prototype", "srad", "learned")
STAGES = ("srad", "bilateral", "nl_means", "nl_means_2pass", "median", "equalize_hist",
          "clahe", "log_compress", "gamma", "unsharp_mask", "prototype", "learned")


def default_config(chain: str = "none") -> ml_collections.ConfigDict:
  """All stage parameters with their defaults; pick the stages with `chain`."""
  cfg = ml_collections.ConfigDict()
  cfg.chain = chain
  # Defaults of the denoisers: the settings benchmarks/enhance.py chose on the
  # phantom's validation stream (128 px) by SSIM against the clean image.
  cfg.srad = dict(q0=0.1, iterations=100, dt=0.25, rho=0.0, learn=False)
  cfg.bilateral = dict(diameter=11, sigma_color=40 / 255, sigma_space=5.5, learn=False)
  cfg.nl_means = dict(h=20 / 255, patch=7, search=21, sigma=0.0)
  cfg.nl_means_2pass = dict(h1=16 / 255, h2=0.035, patch=7, search=21)
  cfg.median = dict(size=5)
  cfg.equalize_hist = dict()
  cfg.clahe = dict(clip_limit=2.0, tiles=(8, 8))
  cfg.log_compress = dict(c=100.0, learn=False)
  cfg.gamma = dict(g=0.5, learn=False)
  cfg.unsharp_mask = dict(sigma=2.0, amount=1.0, learn=False)
  cfg.prototype = dict()
  cfg.learned = dict(workdir="", step=-1)
  return cfg


def _positive(module: nn.Module, name: str, init: float, learn: bool):
  """A positive scalar: exp of a learned log-parameter, or the constant `init`."""
  if init <= 0:
    raise ValueError(f"{type(module).__name__}: {name} must be > 0, got {init}")
  if not learn:
    return jnp.float32(init)
  log_v = module.param(f"log_{name}", lambda _: jnp.log(jnp.float32(init)))
  return jnp.exp(log_v)


class SRAD(nn.Module):
  """SRAD with fixed time step and iteration count; the speckle scale q0 can be learned."""

  q0: float = 0.1
  iterations: int = 100
  dt: float = 0.25
  rho: float = 0.0
  learn: bool = False

  @nn.compact
  def __call__(self, x):
    q0 = _positive(self, "q0", self.q0, self.learn)
    return filters.srad(x, q0, self.iterations, self.dt, self.rho)


class Bilateral(nn.Module):
  """Bilateral filter; the range sigma can be learned."""

  diameter: int = 5
  sigma_color: float = 0.1
  sigma_space: float = 2.0
  learn: bool = False

  @nn.compact
  def __call__(self, x):
    s = _positive(self, "sigma_color", self.sigma_color, self.learn)
    return filters.bilateral(x, self.diameter, s, self.sigma_space)


class LogCompress(nn.Module):
  c: float = 100.0
  learn: bool = False

  @nn.compact
  def __call__(self, x):
    return filters.log_compress(x, _positive(self, "c", self.c, self.learn))


class Gamma(nn.Module):
  g: float = 0.5
  learn: bool = False

  @nn.compact
  def __call__(self, x):
    return filters.gamma(x, _positive(self, "g", self.g, self.learn))


class UnsharpMask(nn.Module):
  sigma: float = 2.0
  amount: float = 1.0
  learn: bool = False

  @nn.compact
  def __call__(self, x):
    return filters.unsharp_mask(x, self.sigma, _positive(self, "amount", self.amount, self.learn))


class Fixed(nn.Module):
  """A parameter-free filter from `filters`, by name, with static keyword arguments."""

  fn: str = "median"
  kwargs: tuple = ()

  def __call__(self, x):
    return getattr(filters, self.fn)(x, **dict(self.kwargs))


class Enhance(nn.Module):
  """Applies its stages in order to (B, H, W) or (B, H, W, 1) images."""

  stages: Sequence[nn.Module] = ()

  def __call__(self, x):
    x = jnp.asarray(x)
    channel = x.ndim == 4 and x.shape[-1] == 1
    y = x[..., 0] if channel else x
    if y.ndim != 3:
      raise ValueError(f"Enhance: expected (B, H, W) or (B, H, W, 1) images, got {x.shape}")
    for stage in self.stages:
      y = stage(y)
    y = y.astype(x.dtype)
    return y[..., None] if channel else y


def _stage(name: str, cfg: ml_collections.ConfigDict) -> nn.Module:
  p = dict(cfg.get(name, {}) or {})
  if name == "srad":
    return SRAD(**p)
  if name == "bilateral":
    return Bilateral(**p)
  if name == "log_compress":
    return LogCompress(**p)
  if name == "gamma":
    return Gamma(**p)
  if name == "unsharp_mask":
    return UnsharpMask(**p)
  if name == "clahe" and "tiles" in p:
    p["tiles"] = tuple(p["tiles"])
  if name == "learned":
    return despeckle.load_stage(**p)
  return Fixed(fn=name, kwargs=tuple(sorted(p.items())))


def stage_names(chain: str) -> list[str]:
  """"srad+clahe" -> ["srad", "clahe"]; "none" -> []; checks every name."""
  if chain == "none":
    return []
  names = [n.strip() for n in str(chain).split("+")]
  for n in names:
    if n not in STAGES:
      raise ValueError(f"enhance chain {chain!r}: unknown stage {n!r}; choose from "
                       f"{', '.join(CHAINS)} or '+'-joined stages of {', '.join(STAGES)}")
  return names


def make_enhance(cfg) -> Enhance:
  """Builds the `Enhance` chain selected by `cfg.chain` (see `default_config`).

  Missing stage entries fall back to `default_config`'s values.
  """
  if isinstance(cfg, str):
    cfg = default_config(cfg)
  full = default_config()
  full.update(dict(cfg))
  return Enhance(stages=tuple(_stage(n, full) for n in stage_names(full.chain)))


def count_params(variables) -> int:
  return int(sum(np.prod(v.shape) for v in jax.tree.leaves(variables)))


def make_enhance_fn(cfg, size: tuple[int, int]):
  """The enhancement as a fixed function `(B, H, W) -> (B, H, W)` ("none": identity).

  Its variables (if any stage has some) are initialised here and kept fixed:
  enhancement in front of the autoencoder and the classification heads is
  preprocessing, not something learnt jointly with them (a jointly learnt
  stage would drift towards the identity).
  """
  if isinstance(cfg, str):
    cfg = default_config(cfg)
  if dict(cfg).get("chain", "none") in ("none", ""):
    return lambda images: images
  module = make_enhance(cfg)
  variables = module.init(jax.random.key(0), jnp.zeros((1, *size), jnp.float32))
  return lambda images: module.apply(variables, images)
