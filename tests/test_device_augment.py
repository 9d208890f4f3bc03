"""Augmentation on the device (fbjax/data/device_augment.py) against OpenCV and the host chain."""

import dataclasses
import math

import chex
import cv2
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fbjax.data import augment
from fbjax.data import device_augment as da
from tests.trainer_util import run

H, W = 48, 64
OFF = da.DeviceAugmentConfig(flip_prob=0.0, max_rotate_deg=0.0, max_log_scale=0.0,
                             max_log_gain=0.0, max_log_gamma=0.0)
GEOMETRY = da.DeviceAugmentConfig(flip_prob=0.5, max_rotate_deg=20.0, max_log_scale=0.2,
                                  max_log_gain=0.0, max_log_gamma=0.0)


def _smooth_image(seed=0, hw=(H, W)):
  img = cv2.GaussianBlur(np.random.default_rng(seed).random(hw).astype(np.float32), (0, 0), 2)
  return (img - img.min()) / (img.max() - img.min())


def _disk(hw, centre_xy, radius):
  m = np.zeros(hw, np.uint8)
  cv2.circle(m, centre_xy, radius, 1, -1)
  return m


def _batch(b=6, seed=0):
  """Images whose bright part is the head mask (so image and mask can be compared)."""
  masks = np.stack([_disk((H, W), (26 + i, 22 + i % 3), 12 + i % 4) for i in range(b)])
  noise = np.random.default_rng(seed).random((b, H, W)).astype(np.float32)
  image = (0.1 + 0.8 * masks + 0.05 * noise).astype(np.float32)
  return {"image": jnp.asarray(image), "clean": jnp.asarray(image * 0.5),
          "head_mask": jnp.asarray(masks), "brain_mask": jnp.asarray(masks),
          "pixel_spacing_mm": jnp.full((b,), 0.2, jnp.float32),
          "plane": jnp.arange(b, dtype=jnp.int32)}


def _cv2_warp(img, angle, scale, flip=False, aspect=1.0, nearest=False):
  """The host chain's warp (augment.affine), with an optional x/y aspect on top."""
  if flip:
    img = np.ascontiguousarray(img[:, ::-1])
  h, w = img.shape
  m = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), angle, scale)
  if aspect != 1.0:  # forward map diag(aspect, 1/aspect) after the rotation, about the centre
    c = np.array([w / 2 - 0.5, h / 2 - 0.5])
    a = np.diag([aspect, 1 / aspect]) @ m[:, :2]
    m = np.concatenate([a, (c - a @ c)[:, None]], axis=1)
  return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)


# -----------------------------------------------------------------------------
# The warp against OpenCV and against jax.scipy.ndimage.map_coordinates.
# -----------------------------------------------------------------------------
@pytest.mark.parametrize("angle,scale,flip,aspect", [
    (0.0, 1.0, True, 1.0), (7.3, 1.1, False, 1.0), (-10.0, 0.9, True, 1.0),
    (30.0, 1.3, False, 1.0), (12.0, 1.0, False, 1.25), (-5.0, 0.95, True, 0.8)])
def test_warp_matches_opencv(angle, scale, flip, aspect):
  img = _smooth_image()
  want = _cv2_warp(img, angle, scale, flip, aspect)
  got = np.asarray(da.warp(jnp.asarray(img), angle, scale, flip, aspect))
  # The whole image, border included, agrees well within one grey level in 255.
  assert np.abs(got - want).max() * 255 < 0.05
  assert np.abs(got).sum() > 0.3 * np.abs(img).sum()  # not an empty image
  # uint8 images (what the cache holds): within one grey level.
  img8 = (img * 255).round().astype(np.uint8)
  got8 = np.asarray(da.warp(jnp.asarray(img8, jnp.float32), angle, scale, flip, aspect))
  assert np.abs(got8 - _cv2_warp(img8, angle, scale, flip, aspect)).max() <= 1.0
  # Masks: nearest neighbour, same pixels as cv2 (ties are measure-zero here).
  mask = (img > 0.5).astype(np.uint8)
  got_m = np.asarray(da.warp(jnp.asarray(mask), angle, scale, flip, aspect, order=0))
  assert got_m.dtype == np.uint8
  assert np.mean(got_m != _cv2_warp(mask, angle, scale, flip, aspect, nearest=True)) < 1e-3


@pytest.mark.parametrize("order", [0, 1])
def test_sample_matches_map_coordinates(order):
  img = _smooth_image(1)
  rng = np.random.default_rng(2)
  sy = jnp.asarray(rng.uniform(-3, H + 2, (H, W)), jnp.float32)
  sx = jnp.asarray(rng.uniform(-3, W + 2, (H, W)), jnp.float32)
  want = jax.scipy.ndimage.map_coordinates(jnp.asarray(img), [sy, sx], order=order,
                                           mode="constant", cval=0.0)
  got = da.sample(jnp.asarray(img)[..., None], sy, sx, order)[..., 0]
  np.testing.assert_allclose(got, want, atol=1e-6)
  assert float(jnp.mean(got == 0)) > 0.05  # outside reads are exercised


# -----------------------------------------------------------------------------
# The batch function.
# -----------------------------------------------------------------------------
def test_identity_at_zero_strength():
  batch = _batch()
  out = da.augment_batch(jax.random.key(0), batch, OFF)
  assert set(out) == set(batch)
  for k in batch:
    np.testing.assert_array_equal(out[k], batch[k])
    assert out[k].dtype == batch[k].dtype


def test_flip_only_is_an_exact_mirror():
  batch = _batch()
  cfg = dataclasses.replace(OFF, flip_prob=1.0)
  out = da.augment_batch(jax.random.key(0), batch, cfg)
  for k in ("image", "clean", "head_mask"):
    np.testing.assert_array_equal(out[k], batch[k][:, :, ::-1])
  np.testing.assert_array_equal(out["pixel_spacing_mm"], batch["pixel_spacing_mm"])


def test_masks_stay_binary_move_with_the_image_and_spacing_follows_the_scale():
  batch = _batch(b=8)
  out = da.augment_batch(jax.random.key(3), batch, GEOMETRY)
  mask, image = np.asarray(out["head_mask"]), np.asarray(out["image"])
  assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
  np.testing.assert_array_equal(out["brain_mask"], out["head_mask"])  # one gather for all
  np.testing.assert_array_equal(out["plane"], batch["plane"])          # passed through
  moved = np.mean(mask != np.asarray(batch["head_mask"]))
  assert moved > 0.01  # the geometry did something
  for i in range(len(mask)):
    bright = image[i] > 0.5
    iou = (bright & (mask[i] > 0)).sum() / (bright | (mask[i] > 0)).sum()
    assert iou > 0.95, (i, iou)
  # Spacing divided by the scale: the head's area in mm^2 is kept (area ~ scale^2).
  spacing = np.asarray(out["pixel_spacing_mm"])
  assert np.all(spacing != 0.2)
  assert np.all((spacing > 0.2 * np.exp(-0.2) - 1e-6) & (spacing < 0.2 * np.exp(0.2) + 1e-6))
  mm2_in = np.asarray(batch["head_mask"]).sum((1, 2)) * 0.2 ** 2
  mm2_out = mask.sum((1, 2)) * spacing ** 2
  np.testing.assert_allclose(mm2_out, mm2_in, rtol=0.06)
  # The clean target moves with the image but keeps its intensities (no gain / gamma).
  np.testing.assert_allclose(out["clean"], image * 0.5, atol=1e-6)


def test_gain_gamma_is_a_power_law_on_the_image_only():
  batch = _batch()
  cfg = dataclasses.replace(OFF, max_log_gain=0.3, max_log_gamma=0.3)
  out = da.augment_batch(jax.random.key(1), batch, cfg)
  np.testing.assert_array_equal(out["clean"], batch["clean"])
  np.testing.assert_array_equal(out["head_mask"], batch["head_mask"])
  x, y = np.asarray(batch["image"]), np.asarray(out["image"])
  gammas = []
  for i in range(len(x)):
    keep = y[i] < 0.999  # not clipped
    gamma, log_gain = np.polyfit(np.log(x[i][keep]), np.log(y[i][keep]), 1)
    resid = np.log(y[i][keep]) - (gamma * np.log(x[i][keep]) + log_gain)
    assert np.abs(resid).max() < 1e-4
    assert abs(log_gain) <= 0.3 + 1e-4 and abs(np.log(gamma)) <= 0.3 + 1e-4
    gammas.append(gamma)
  assert np.std(gammas) > 0.01  # each example draws its own


class DeterminismTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_same_rng_same_output_jitted_equals_not(self):
    cfg = da.DeviceAugmentConfig(max_speckle_sigma=0.2, shadow_prob=0.5,
                                 max_depth_log_gain=0.2, max_log_aspect=0.1)
    fn = self.variant(da.augment_batch, static_argnums=2)
    batch = _batch()
    a = fn(jax.random.key(7), batch, cfg)
    b = fn(jax.random.key(7), batch, cfg)
    c = fn(jax.random.key(8), batch, cfg)
    chex.assert_trees_all_equal(a, b)
    assert not np.allclose(a["image"], c["image"])
    # The jitted and plain versions agree (float rounding only).
    ref = jax.jit(da.augment_batch, static_argnums=2)(jax.random.key(7), batch, cfg)
    chex.assert_trees_all_close(a, ref, atol=1e-5)


def test_one_trace_for_every_step():
  fn = da.make_batch_fn(ml_collections.ConfigDict({"augment": True, "augment_on": "device"}))
  step = jax.jit(chex.assert_max_traces(lambda rng, batch: fn(rng, batch), n=1))
  batch = _batch()
  outs = [step(jax.random.fold_in(jax.random.key(0), i), batch)["image"] for i in range(3)]
  assert not np.allclose(outs[0], outs[1])


def test_examples_do_not_depend_on_the_batch_split():
  batch = _batch(b=8)
  rng = jax.random.key(11)
  cfg = da.DeviceAugmentConfig(max_speckle_sigma=0.3, shadow_prob=0.5)
  aug = jax.jit(da.augment_batch, static_argnums=2)
  whole = aug(rng, batch, cfg)
  halves = [aug(rng, {k: v[s] for k, v in batch.items()}, cfg, jnp.arange(8)[s])
            for s in (slice(0, 4), slice(4, 8))]
  for k in whole:
    np.testing.assert_allclose(np.concatenate([h[k] for h in halves]), whole[k], atol=1e-6)
  # ... and the index matters: the same example at another index is augmented differently.
  other = aug(rng, {k: v[:4] for k, v in batch.items()}, cfg, jnp.arange(4, 8))
  assert not np.allclose(other["image"], whole["image"][:4])


SHARDED = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from fbjax.data import device_augment as da
from tests.test_device_augment import _batch
assert jax.device_count() == 4
cfg = da.DeviceAugmentConfig(max_speckle_sigma=0.3, shadow_prob=0.5)
batch = _batch(b=8)
one = jax.jit(da.augment_batch, static_argnums=2)(jax.random.key(5), batch, cfg)
diffs = {}
for kind in (jax.sharding.AxisType.Auto, jax.sharding.AxisType.Explicit):  # trainers: Auto
  mesh = jax.make_mesh((4,), ("data",), axis_types=(kind,))
  sharded = jax.device_put(batch, NamedSharding(mesh, P("data")))
  with jax.set_mesh(mesh):
    four = jax.jit(da.augment_batch, static_argnums=2)(jax.random.key(5), sharded, cfg)
  assert len(four["image"].sharding.device_set) == 4
  for k in one:
    d = float(np.abs(np.asarray(four[k], np.float64) - np.asarray(one[k], np.float64)).max())
    diffs[k] = max(diffs.get(k, 0.0), d)
print(json.dumps(diffs))
"""


def test_four_devices_equal_one_device():
  import json

  diffs = json.loads(run(["-c", SHARDED], devices=4).stdout.strip().splitlines()[-1])
  assert set(diffs) >= {"image", "head_mask", "pixel_spacing_mm"}
  assert max(diffs.values()) < 1e-6, diffs


# -----------------------------------------------------------------------------
# The ultrasound extras (off by default).
# -----------------------------------------------------------------------------
def test_extras_are_off_by_default_and_do_not_change_the_geometry():
  d = da.DeviceAugmentConfig()
  assert (d.max_log_aspect, d.max_depth_log_gain, d.shadow_prob, d.max_speckle_sigma) == (0,) * 4
  host = augment.AugmentConfig()
  for f in ("flip_prob", "max_rotate_deg", "max_log_scale", "max_log_gain", "max_log_gamma"):
    assert getattr(d, f) == getattr(host, f)
  batch = _batch()
  plain = da.augment_batch(jax.random.key(2), batch, GEOMETRY)
  noisy = da.augment_batch(jax.random.key(2), batch, dataclasses.replace(
      GEOMETRY, max_speckle_sigma=0.3, shadow_prob=1.0))
  np.testing.assert_array_equal(noisy["head_mask"], plain["head_mask"])
  np.testing.assert_array_equal(noisy["clean"], plain["clean"])
  assert not np.allclose(noisy["image"], plain["image"])


def _flat(b=64, value=0.5):
  return {"image": jnp.full((b, H, W), value, jnp.float32)}


def test_speckle_is_unit_mean_multiplicative_noise():
  cfg = dataclasses.replace(OFF, max_speckle_sigma=0.4)
  out = np.asarray(da.augment_batch(jax.random.key(0), _flat(value=0.25), cfg)["image"])
  # log(out / 0.25) ~ N(-s^2/2, s^2) per example with s ~ U(0, 0.4).
  s = np.log(out / 0.25).std(axis=(1, 2))
  assert s.min() >= 0 and s.max() < 0.41 and np.ptp(s) > 0.2
  # Unit mean: each example's mean within 4.5 standard errors of 0.25
  # (a log-normal's variance is exp(s^2) - 1 times the squared mean), the pooled one within 0.3 %.
  n = H * W
  z = (out.mean(axis=(1, 2)) / 0.25 - 1) / np.sqrt((np.exp(s ** 2) - 1) / n)
  assert np.abs(z).max() < 4.5, z
  assert abs(out.mean() / 0.25 - 1) < 3e-3


def test_depth_gain_is_exponential_in_the_distance_from_the_apex():
  cfg = dataclasses.replace(OFF, max_depth_log_gain=0.3)
  out = np.asarray(da.augment_batch(jax.random.key(0), _flat(b=8), cfg)["image"])
  # Down the column left of the centre line (x = w/2 - 1, half a pixel from the apex).
  col = np.log(out[:, :, W // 2 - 1] / 0.5)
  r = np.hypot(0.5, np.arange(H) + 0.5) / H
  for c in col:
    g, intercept = np.polyfit(2 * r - 1, c, 1)
    assert abs(g) <= 0.3 and abs(intercept) < 1e-4
    np.testing.assert_allclose(c, g * (2 * r - 1), atol=1e-4)


def test_shadow_darkens_a_band_below_its_start_only():
  cfg = dataclasses.replace(OFF, shadow_prob=1.0, max_shadow_strength=0.8)
  out = np.asarray(da.augment_batch(jax.random.key(0), _flat(b=8), cfg)["image"])
  assert np.all(out <= 0.5 + 1e-6)
  np.testing.assert_allclose(out[:, : int(0.15 * H)], 0.5, atol=1e-3)  # above any start depth
  dark = out < 0.45
  frac = dark.mean(axis=(1, 2))
  assert np.all(frac > 0.005) and np.all(frac < 0.5)
  assert out.min() >= 0.5 * (1 - 0.8) - 1e-3


def test_anisotropic_scale_keeps_area_and_spacing():
  cfg = dataclasses.replace(OFF, max_log_aspect=0.2)
  batch = _batch(b=8)
  out = da.augment_batch(jax.random.key(4), batch, cfg)
  np.testing.assert_array_equal(out["pixel_spacing_mm"], batch["pixel_spacing_mm"])
  m_in, m_out = np.asarray(batch["head_mask"]), np.asarray(out["head_mask"])
  np.testing.assert_allclose(m_out.sum((1, 2)), m_in.sum((1, 2)), rtol=0.05)
  ratios = []
  for m in m_out:  # a disk becomes an axis-aligned ellipse: x extent / y extent = exp(2a)
    ys, xs = np.nonzero(m)
    ratios.append(xs.std() / ys.std())
  ratios = np.asarray(ratios)
  assert np.abs(np.log(ratios)).max() < 0.4 + 0.06  # 0.06: nearest-neighbour pixel edges
  assert np.ptp(np.log(ratios)) > 0.1


# -----------------------------------------------------------------------------
# The switch: config.augment_on.
# -----------------------------------------------------------------------------
def _data_cfg(**kw):
  return ml_collections.ConfigDict({"augment": True, "augment_on": "host", **kw})


def test_augment_on_host_or_device():
  batch = _batch()
  ex = {"image": np.asarray(batch["image"][0])}
  host = _data_cfg()
  assert da.host_augment(host) is None                          # the pipeline's default chain
  assert da.make_batch_fn(host)(jax.random.key(0), batch) is batch
  dev = _data_cfg(augment_on="device")
  assert da.host_augment(dev)(np.random.default_rng(0), ex) is ex
  got = jax.jit(da.make_batch_fn(dev))(jax.random.key(0), batch)
  chex.assert_trees_all_close(got, da.augment_batch(jax.random.key(0), batch), atol=1e-5)
  off = _data_cfg(augment=False, augment_on="device")
  assert da.host_augment(off)(np.random.default_rng(0), ex) is ex
  assert da.make_batch_fn(off)(jax.random.key(0), batch) is batch
  # Parameters by name, shared with the host chain.
  tuned = _data_cfg(augment_params={"max_rotate_deg": 0.0, "max_log_scale": 0.0,
                                    "flip_prob": 0.0})
  out = da.host_augment(tuned)(np.random.default_rng(0), {**ex, "head_mask": np.ones((H, W))})
  np.testing.assert_array_equal(out["head_mask"], 1)


def test_bad_config_and_bad_batch_are_named():
  with pytest.raises(ValueError, match="augment_on='gpu'"):
    da.make_batch_fn(_data_cfg(augment_on="gpu"))
  with pytest.raises(KeyError, match="max_rotation"):
    da.make_batch_fn(_data_cfg(augment_on="device", augment_params={"max_rotation": 5}))
  with pytest.raises(ValueError, match="device only"):
    da.host_augment(_data_cfg(augment_params={"max_speckle_sigma": 0.1}))
  batch = _batch()
  with pytest.raises(ValueError, match="head_mask"):
    da.augment_batch(jax.random.key(0), {**batch, "head_mask": batch["head_mask"][:, :10]})
  with pytest.raises(ValueError, match=r"\(B, H, W\)"):
    da.augment_batch(jax.random.key(0), {"image": batch["image"][..., None]})



def test_gaussian_blur_matches_opencv():
  img = np.random.default_rng(0).random((H, W)).astype(np.float32)
  for sigma in (0.4, 1.0, 1.7):
    radius = math.ceil(3 * 2.0)
    ref = cv2.GaussianBlur(img, (2 * radius + 1, 2 * radius + 1), sigma,
                           borderType=cv2.BORDER_REPLICATE)
    got = np.asarray(da.gaussian_blur(jnp.asarray(img), sigma, 2.0))
    np.testing.assert_allclose(got, ref, atol=2e-5)
  np.testing.assert_allclose(np.asarray(da.gaussian_blur(jnp.asarray(img), 0.0, 2.0)), img,
                             atol=1e-6)


def test_blur_varies_per_example_and_leaves_masks_and_flat_images():
  cfg = dataclasses.replace(OFF, max_blur_sigma=2.0)
  rng = np.random.default_rng(1)
  noise = jnp.asarray(rng.random((16, H, W)).astype(np.float32))
  out = np.asarray(da.augment_batch(jax.random.key(0), {"image": noise}, cfg)["image"])
  # Blurring white noise lowers its variance by a factor that falls with sigma.
  ratio = out.std(axis=(1, 2)) / np.asarray(noise).std(axis=(1, 2))
  assert ratio.max() <= 1.0 + 1e-6 and np.ptp(ratio) > 0.3, ratio
  flat = np.asarray(da.augment_batch(jax.random.key(0), _flat(b=4), cfg)["image"])
  np.testing.assert_allclose(flat, 0.5, atol=1e-6)
  batch = _batch()
  plain = da.augment_batch(jax.random.key(2), batch, GEOMETRY)
  blurred = da.augment_batch(jax.random.key(2), batch,
                             dataclasses.replace(GEOMETRY, max_blur_sigma=1.5))
  np.testing.assert_array_equal(blurred["head_mask"], plain["head_mask"])
  assert not np.allclose(blurred["image"], plain["image"])
