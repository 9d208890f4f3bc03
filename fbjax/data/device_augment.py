"""Data augmentation on the device: jnp, per example, inside the jitted train step.

    aug = device_augment.make_batch_fn(config)             # identity unless augment_on="device"
    batch = aug(jax.random.fold_in(step_rng, device_augment.RNG_SALT), batch)

The same transforms as the host chain of fbjax/data/augment.py (left-right
flip, rotation + isotropic scale about the centre with bilinear images,
nearest-neighbour masks and a zero border, pixel spacing divided by the
scale, gain and gamma on the noisy image only), with the same parameter
names (`AugmentConfig`), computed as one inverse-affine gather per example
instead of an OpenCV warp per image on the host. Extra ultrasound-style
transforms, each off by default (so the default chain is the host one):

  max_log_aspect       anisotropic scale: x by exp(a), y by exp(-a), a ~ U(-m, m)
                       (area kept; `pixel_spacing_mm` follows the isotropic part
                       only, so leave it off for millimetre targets);
  max_depth_log_gain   depth-dependent gain (a time-gain-compensation error):
                       exp(g * (2 r - 1)), r the distance from the probe apex
                       (top centre) over the image height, g ~ U(-m, m);
  shadow_prob          an acoustic shadow: a soft-edged angular band from the
                       apex, from a random depth down, attenuated by up to
                       `max_shadow_strength`;
  max_speckle_sigma    multiplicative unit-mean log-normal noise,
                       exp(s z - s^2 / 2), z ~ N(0, 1) per pixel, s ~ U(0, m)
                       (speckle is multiplicative: burckhardt1978speckle,
                       wagner1983speckle in CITATIONS.bib);
  max_blur_sigma       a Gaussian blur of sigma ~ U(0, m) grid pixels before the
                       intensity transforms: a wider or narrower point-spread
                       function (resolution cell) than the source images'.
                       Off in `configs/segment.py`'s `RANDOMIZE`: in its
                       phantom-to-HC18 ablation (README, "Phantom-only
                       transfer") it did not improve the transfer.

`config.augment_on` chooses where the training augmentation runs:

  "host"    (default) the grain pipeline applies `augment.augment` per example
            with numpy / OpenCV; `make_batch_fn` returns the identity.
  "device"  the host pipeline does no augmentation (`host_augment` returns
            `lambda rng, ex: ex` for `pipeline.make_dataset(augment=...)`) and
            the update step calls the function `make_batch_fn` returns on each
            global batch before the forward pass.

`config.augment = False` turns augmentation off in both places;
`config.augment_params` (optional dict) overrides `DeviceAugmentConfig`
fields by name.

Determinism: example `i` of the global batch draws from
`fold_in(rng, i)`, and each transform from `fold_in` of that with its own
constant, so the output depends only on (rng, example index, example): not
on the number of devices, the sharding or the batch split, and not on which
other transforms are enabled. With `rng` folded from the train state's RNG
and step, a resumed run draws what the uninterrupted one did. The random
streams differ from the host chain's (numpy), so switching `augment_on`
changes which augmented images a run sees, not their distribution.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

from fbjax.data import augment as augment_lib
from fbjax.data.features import MASKS

RNG_SALT = 0x5A6  # folded into the step RNG for augmentation (dropout uses the step RNG itself)
AUGMENT_ON = ("host", "device")
SPACING = "pixel_spacing_mm"

# One constant per transform: enabling one does not change the draws of another.
_FLIP, _ROTATE, _SCALE, _ASPECT, _GAIN, _GAMMA, _DEPTH, _SHADOW, _SPECKLE, _BLUR = range(10)


@dataclasses.dataclass(frozen=True)
class DeviceAugmentConfig(augment_lib.AugmentConfig):
  """`AugmentConfig`'s fields (same meaning) plus the ultrasound extras, all off."""
  max_log_aspect: float = 0.0
  max_depth_log_gain: float = 0.0
  shadow_prob: float = 0.0
  max_shadow_strength: float = 0.6
  max_speckle_sigma: float = 0.0
  max_blur_sigma: float = 0.0


def from_config(data_cfg) -> DeviceAugmentConfig:
  """`config.augment_params` (a dict, optional) -> `DeviceAugmentConfig`."""
  params = data_cfg.get("augment_params", None) or {}
  params = dict(params.to_dict() if hasattr(params, "to_dict") else params)
  names = {f.name for f in dataclasses.fields(DeviceAugmentConfig)}
  unknown = sorted(set(params) - names)
  if unknown:
    raise KeyError(f"config.augment_params: unknown field(s) {unknown}; known: "
                   f"{sorted(names)}")
  if "image_keys" in params:
    params["image_keys"] = tuple(params["image_keys"])
  return DeviceAugmentConfig(**params)


def _where(data_cfg) -> str:
  where = data_cfg.get("augment_on", "host")
  if where not in AUGMENT_ON:
    raise ValueError(f"config.augment_on={where!r}; expected one of {AUGMENT_ON}")
  return where


def host_augment(data_cfg) -> Callable | None:
  """What the trainer passes as `pipeline.make_dataset(augment=...)` for training.

  None (the pipeline's default host chain, with `augment_params` applied when
  given) when augmenting on the host; the identity when augmentation is off or
  runs on the device.
  """
  if not data_cfg.get("augment", True) or _where(data_cfg) == "device":
    return lambda rng, ex: ex
  cfg, default = from_config(data_cfg), DeviceAugmentConfig()
  if cfg == default:
    return None
  host_fields = [f.name for f in dataclasses.fields(augment_lib.AugmentConfig)]
  device_only = sorted(f.name for f in dataclasses.fields(cfg) if f.name not in host_fields
                       and getattr(cfg, f.name) != getattr(default, f.name))
  if device_only:
    raise ValueError(f"config.augment_params {device_only} exist on the device only; "
                     "set config.augment_on='device'")
  host_cfg = augment_lib.AugmentConfig(**{k: getattr(cfg, k) for k in host_fields})
  return lambda rng, ex: augment_lib.augment(rng, ex, host_cfg)


def make_batch_fn(data_cfg) -> Callable[[jax.Array, dict], dict]:
  """(rng, batch) -> batch for the update step; the identity unless augment_on="device"."""
  if not data_cfg.get("augment", True) or _where(data_cfg) == "host":
    return lambda rng, batch: batch
  cfg = from_config(data_cfg)
  return lambda rng, batch: augment_batch(rng, batch, cfg)


# -----------------------------------------------------------------------------
# Geometry.
# -----------------------------------------------------------------------------
def source_coords(hw: tuple[int, int], angle_deg, scale, flip=False, aspect=1.0):
  """Where each output pixel reads the input: (y, x) arrays of shape `hw`.

  The inverse of the host chain "flip, then `cv2.getRotationMatrix2D(centre,
  angle, scale)`" (angle counter-clockwise in degrees, centre (w/2 - 0.5,
  h/2 - 0.5)), with x scaled by `scale * aspect` and y by `scale / aspect`.
  """
  h, w = hw
  cy, cx = h / 2 - 0.5, w / 2 - 0.5
  y, x = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                      indexing="ij")
  theta = jnp.deg2rad(jnp.asarray(angle_deg, jnp.float32))
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  ux = (x - cx) / (scale * aspect)
  uy = (y - cy) * aspect / scale
  sx = cx + cos * ux - sin * uy
  sy = cy + sin * ux + cos * uy
  sx = jnp.where(flip, 2 * cx - sx, sx)
  return sy, sx


def sample(stack: jax.Array, sy: jax.Array, sx: jax.Array, order: int) -> jax.Array:
  """`stack` (H, W, K) read at (sy, sx) (each (H, W)); zero outside the image.

  order 1: bilinear, an outside neighbour counts as 0 (cv2 BORDER_CONSTANT);
  order 0: nearest, ties rounded up (cv2 INTER_NEAREST). All K channels share
  one gather per neighbour.
  """
  h, w = stack.shape[:2]

  def read(iy, ix):
    valid = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    v = stack[jnp.clip(iy, 0, h - 1), jnp.clip(ix, 0, w - 1)]
    return jnp.where(valid[..., None], v, jnp.zeros((), stack.dtype))

  if order == 0:
    return read(jnp.floor(sy + 0.5).astype(jnp.int32), jnp.floor(sx + 0.5).astype(jnp.int32))
  if order != 1:
    raise ValueError(f"interpolation order {order}; expected 0 or 1")
  y0, x0 = jnp.floor(sy), jnp.floor(sx)
  wy, wx = (sy - y0)[..., None], (sx - x0)[..., None]
  y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)
  top = read(y0, x0) * (1 - wx) + read(y0, x0 + 1) * wx
  bottom = read(y0 + 1, x0) * (1 - wx) + read(y0 + 1, x0 + 1) * wx
  return top * (1 - wy) + bottom * wy


def warp(image: jax.Array, angle_deg, scale, flip=False, aspect=1.0, order: int = 1):
  """One (H, W) image through `source_coords` + `sample` (what the batch version does)."""
  sy, sx = source_coords(image.shape, angle_deg, scale, flip, aspect)
  return sample(image[..., None], sy, sx, order)[..., 0].astype(image.dtype)


# -----------------------------------------------------------------------------
# Intensity (the noisy image only; a clean target keeps its intensities).
# -----------------------------------------------------------------------------
def _apex_polar(hw):
  """Distance from the probe apex (top centre) over H, and angle from the vertical."""
  h, w = hw
  y, x = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                      indexing="ij")
  dx, dy = x - (w / 2 - 0.5), y + 0.5
  return jnp.hypot(dx, dy) / h, jnp.arctan2(dx, dy)


def _shadow(key, hw, strength_max):
  k_theta, k_width, k_depth, k_strength = jax.random.split(key, 4)
  r, phi = _apex_polar(hw)
  centre = jax.random.uniform(k_theta, (), minval=-0.5, maxval=0.5)    # rad, ~ +-29 deg
  half_width = jax.random.uniform(k_width, (), minval=0.03, maxval=0.12)
  start = jax.random.uniform(k_depth, (), minval=0.2, maxval=0.7)
  strength = jax.random.uniform(k_strength, (), minval=0.3, maxval=1.0) * strength_max
  soft = 0.01  # edge width (rad, and fraction of the height)
  band = jax.nn.sigmoid((half_width - jnp.abs(phi - centre)) / soft)
  behind = jax.nn.sigmoid((r - start) / (2 * soft))
  return 1.0 - strength * band * behind


def gaussian_blur(img: jax.Array, sigma, max_sigma: float) -> jax.Array:
  """`img` (H, W) blurred by a separable Gaussian of (traced) `sigma` pixels.

  The kernel has a fixed radius, ceil(3 max_sigma), so `sigma` may vary per
  example under vmap; sigma -> 0 is the identity. Edges are replicated.
  """
  radius = max(1, math.ceil(3 * max_sigma))
  taps = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  k = jnp.exp(-0.5 * (taps / jnp.maximum(sigma, 1e-3)) ** 2)
  k = k / k.sum()
  h, w = img.shape
  p = jnp.pad(img, radius, mode="edge")
  rows = sum(k[j] * p[j:j + h, :] for j in range(2 * radius + 1))
  return sum(k[j] * rows[:, j:j + w] for j in range(2 * radius + 1))


def _uniform_log(key, m):
  return jnp.exp(jax.random.uniform(key, (), minval=-m, maxval=m))


# -----------------------------------------------------------------------------
# The batch function.
# -----------------------------------------------------------------------------
def _check(batch: Mapping, image_keys, masks):
  image = batch.get("image")
  if image is None or image.ndim != 3:
    raise ValueError("augment_batch: batch['image'] must be (B, H, W), got "
                     f"{None if image is None else image.shape}")
  for k in (*image_keys, *masks):
    if batch[k].shape != image.shape:
      raise ValueError(f"augment_batch: batch[{k!r}] has shape {batch[k].shape}; "
                       f"expected the image's {image.shape}")
  if SPACING in batch and batch[SPACING].shape != image.shape[:1]:
    raise ValueError(f"augment_batch: batch[{SPACING!r}] has shape {batch[SPACING].shape}; "
                     f"expected ({image.shape[0]},)")


def augment_batch(rng: jax.Array, batch: Mapping[str, jax.Array],
                  cfg: DeviceAugmentConfig = DeviceAugmentConfig(),
                  indices: jax.Array | None = None) -> dict:
  """The device chain on a batch dict; returns a new dict (other keys passed through).

  Args:
    rng: a JAX key (new-style or raw uint32).
    batch: `image` (B, H, W) float in [0, 1]; optionally the other `cfg.image_keys`
      (same geometry, no intensity change), masks (uint8 or float, nearest
      neighbour) and `pixel_spacing_mm` (B,).
    cfg: a `DeviceAugmentConfig` (hashable: pass it as a static argument to jit).
    indices: (B,) global example indices; default `arange(B)`, right for a whole
      global batch (e.g. inside a jitted step on a mesh). Give them when
      augmenting a slice of a batch.
  """
  image_keys = tuple(k for k in cfg.image_keys if k in batch)
  masks = tuple(k for k in MASKS if k in batch)
  _check(batch, image_keys, masks)
  if isinstance(rng, jax.Array) and not jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.wrap_key_data(rng)
  b, h, w = batch["image"].shape
  if indices is None:
    # Sharded like the batch, should the mesh's batch axis be Explicit.
    spec = jax.typeof(batch["image"]).sharding.spec
    indices = jnp.arange(b, out_sharding=jax.P(spec[0]) if spec and spec[0] else None)
  geometric = (cfg.flip_prob > 0 or cfg.max_rotate_deg > 0 or cfg.max_log_scale > 0
               or cfg.max_log_aspect > 0)

  def one(i, ex):
    key = jax.random.fold_in(rng, i)
    draw = lambda k: jax.random.fold_in(key, k)
    out = dict(ex)
    if geometric:
      flip = jax.random.uniform(draw(_FLIP)) < cfg.flip_prob
      angle = jax.random.uniform(draw(_ROTATE), minval=-cfg.max_rotate_deg,
                                 maxval=cfg.max_rotate_deg)
      scale = _uniform_log(draw(_SCALE), cfg.max_log_scale)
      aspect = _uniform_log(draw(_ASPECT), cfg.max_log_aspect)
      sy, sx = source_coords((h, w), angle, scale, flip, aspect)
      if image_keys:
        warped = sample(jnp.stack([ex[k].astype(jnp.float32) for k in image_keys], -1),
                        sy, sx, 1)
        out.update({k: warped[..., j].astype(ex[k].dtype) for j, k in enumerate(image_keys)})
      if masks:
        warped = sample(jnp.stack([ex[k] for k in masks], -1), sy, sx, 0)
        out.update({k: warped[..., j] for j, k in enumerate(masks)})
      if SPACING in ex:
        out[SPACING] = (ex[SPACING] / scale).astype(ex[SPACING].dtype)
    img = jnp.clip(out["image"].astype(jnp.float32), 0.0, 1.0)
    if cfg.max_blur_sigma > 0:
      img = gaussian_blur(img, jax.random.uniform(draw(_BLUR), maxval=cfg.max_blur_sigma),
                          cfg.max_blur_sigma)
    if cfg.max_depth_log_gain > 0:
      g = jax.random.uniform(draw(_DEPTH), minval=-cfg.max_depth_log_gain,
                             maxval=cfg.max_depth_log_gain)
      r, _ = _apex_polar((h, w))
      img = img * jnp.exp(g * (2 * jnp.clip(r, 0, 1) - 1))
    if cfg.shadow_prob > 0:
      k_on, k_shape = jax.random.split(draw(_SHADOW))
      img = jnp.where(jax.random.uniform(k_on) < cfg.shadow_prob,
                      img * _shadow(k_shape, (h, w), cfg.max_shadow_strength), img)
    if cfg.max_speckle_sigma > 0:
      k_s, k_z = jax.random.split(draw(_SPECKLE))
      s = jax.random.uniform(k_s, maxval=cfg.max_speckle_sigma)
      img = img * jnp.exp(s * jax.random.normal(k_z, (h, w)) - s * s / 2)
    if cfg.max_log_gain > 0 or cfg.max_log_gamma > 0:
      gain = _uniform_log(draw(_GAIN), cfg.max_log_gain)
      gamma = _uniform_log(draw(_GAMMA), cfg.max_log_gamma)
      img = gain * jnp.power(jnp.clip(img, 0.0, 1.0), gamma)
    out["image"] = jnp.clip(img, 0.0, 1.0).astype(ex["image"].dtype)
    return out

  moved = {"image", *image_keys, *masks, *((SPACING,) if SPACING in batch else ())}
  per_example = {k: batch[k] for k in moved}
  out = jax.vmap(one)(jnp.asarray(indices), per_example)
  return {**batch, **out}


def random_rot180(rng: jax.Array, batch: Mapping[str, jax.Array]) -> dict:
  """Each example's image turned by 180 degrees with probability 1/2, one draw per batch
  row (the aligned head's other canonical orientation, `fbjax.geometry.align`)."""
  x = batch["image"]
  turn = jax.random.bernoulli(rng, 0.5, (x.shape[0],))
  return {**batch, "image": jnp.where(turn[:, None, None], x[:, ::-1, ::-1], x)}
