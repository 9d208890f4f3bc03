"""U-Net shapes, parameter count, and that a tiny one learns an ellipse."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fbjax.core import metrics
from fbjax.geometry import biometry, ellipse_fit
from fbjax.models import losses, unet


def _count(tree):
  return sum(x.size for x in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("norm", unet.NORMS)
def test_shapes_and_aux(norm):
  m = unet.Model(width=4, depth=2, norm=norm, groups=2)
  x = jnp.zeros((2, 16, 24))
  params = m.init(jax.random.key(0), x)["params"]
  logits, aux = m.apply({"params": params}, x)
  assert logits.shape == (2, 16, 24, 3) and logits.dtype == jnp.float32
  assert aux["bottleneck"].shape == (2, 4, 6, 16)
  assert aux["features"].shape == (2, 16, 24, 4)


def test_parameter_count_by_formula():
  w, depth = 4, 2
  m = unet.Model(width=w, depth=depth, norm="group", groups=2)
  params = m.init(jax.random.key(0), jnp.zeros((1, 8, 8)))["params"]

  def block(cin, cout):  # two bias-free 3x3 convs, each followed by GroupNorm (scale + bias)
    return 9 * cin * cout + 2 * cout + 9 * cout * cout + 2 * cout

  widths = [w * 2**i for i in range(depth + 1)]
  n, cin = 0, 1
  for i in range(depth):
    n += block(cin, widths[i])
    cin = widths[i]
  n += block(cin, widths[-1])
  cin = widths[-1]
  for i in reversed(range(depth)):
    n += 4 * cin * widths[i] + widths[i]          # 2x2 transposed conv + bias
    n += block(2 * widths[i], widths[i])
    cin = widths[i]
  n += cin * 3 + 3
  assert _count(params) == n


def test_size_not_divisible_raises():
  m = unet.Model(width=4, depth=3)
  with pytest.raises(ValueError, match="divisible"):
    m.init(jax.random.key(0), jnp.zeros((1, 20, 24)))


def test_tiny_unet_learns_an_ellipse():
  e = ellipse_fit.Ellipse.make(15.5, 16.0, 10.0, 7.0, 0.5)
  head = ellipse_fit.rasterize(e, (32, 32)).astype(np.float32)
  rng = np.random.default_rng(0)
  img = np.clip(0.2 + 0.5 * head + rng.normal(0, 0.1, head.shape), 0, 1).astype(np.float32)
  x = jnp.asarray(img)[None]
  t = jnp.asarray(np.stack([head] * 3, -1))[None]
  present = jnp.array([[True, False, False]])
  m = unet.Model(width=8, depth=2, groups=4)
  params = m.init(jax.random.key(0), x)["params"]
  opt = optax.adam(1e-2)
  state = opt.init(params)

  @jax.jit
  def step(params, state):
    loss, g = jax.value_and_grad(
        lambda p: losses.segmentation_loss(m.apply({"params": p}, x)[0], t, present)[0])(params)
    upd, state = opt.update(g, state)
    return optax.apply_updates(params, upd), state, loss

  for _ in range(60):
    params, state, loss = step(params, state)
  prob = jax.nn.sigmoid(m.apply({"params": params}, x)[0])[0, ..., 0]
  assert float(metrics.dice(np.asarray(prob) > 0.5, head)) > 0.95
  r = biometry.measure(np.asarray(prob), 1.0)
  assert r.hc_mm == pytest.approx(e.perimeter, rel=0.05)
  assert math.isfinite(float(loss))


def test_enhancement_in_front():
  from fbjax.enhance import modules as enhance_lib

  x = jax.random.uniform(jax.random.key(1), (1, 16, 16))
  plain = unet.Model(width=4, depth=2, groups=2)
  params = plain.init(jax.random.key(0), x)["params"]
  enh = enhance_lib.make_enhance(enhance_lib.default_config("gamma"))
  with_enh = unet.Model(width=4, depth=2, groups=2, enhance=enh)
  got = with_enh.apply({"params": params}, x)[0]
  want = plain.apply({"params": params}, enh.apply({}, x))[0]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert not np.allclose(got, plain.apply({"params": params}, x)[0])
