"""Linen wrappers and the config-built `Enhance` chain (fbjax/enhance/modules.py)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fbjax.enhance import filters as F
from fbjax.enhance import modules as M

RNG = np.random.default_rng(0)
X = np.clip(0.5 * RNG.rayleigh(0.8, (2, 32, 40)), 0, 1).astype(np.float32)


def test_none_is_identity_without_variables():
  e = M.make_enhance(M.default_config("none"))
  assert e.init(jax.random.key(0), X) == {}
  np.testing.assert_array_equal(e.apply({}, X), X)


@pytest.mark.parametrize("chain,fn", [
    ("prototype", F.prototype),
    ("srad", lambda x: F.srad(x, 0.1, 100, 0.25)),
    ("clahe+median", lambda x: F.median(F.clahe(x, 2.0, (8, 8)), 5)),
])
def test_chains_equal_their_filters(chain, fn):
  e = M.make_enhance(M.default_config(chain))
  np.testing.assert_allclose(jax.jit(e.apply)({}, X), fn(X), atol=1e-6)


def test_channel_axis_and_partial_config():
  cfg = ml_collections.ConfigDict({"chain": "srad", "srad": {"iterations": 3}})
  e = M.make_enhance(cfg)
  y = e.apply({}, X[..., None])
  assert y.shape == X.shape + (1,)
  np.testing.assert_allclose(y[..., 0], F.srad(X, 0.1, 3, 0.25), atol=1e-6)
  with pytest.raises(ValueError, match=r"\(B, H, W\) or \(B, H, W, 1\)"):
    e.apply({}, X[0])


def test_unknown_stage_is_a_clear_error():
  with pytest.raises(ValueError, match="unknown stage 'sard'.*none, prototype, srad, learned"):
    M.make_enhance(M.default_config("sard"))


def test_learned_q0_gets_a_gradient():
  cfg = M.default_config("srad")
  cfg.srad.update(iterations=5, learn=True)
  e = M.make_enhance(cfg)
  variables = e.init(jax.random.key(0), X)
  assert set(variables["params"]["stages_0"]) == {"log_q0"}
  target = F.gaussian_blur(X, 1.0)

  def loss(v):
    return jnp.mean(jnp.square(e.apply(v, X) - target))

  g = jax.grad(loss)(variables)["params"]["stages_0"]["log_q0"]
  # Compare with a central finite difference in log q0.
  h = 1e-2
  lp = variables["params"]["stages_0"]["log_q0"]
  plus = {"params": {"stages_0": {"log_q0": lp + h}}}
  minus = {"params": {"stages_0": {"log_q0": lp - h}}}
  fd = (loss(plus) - loss(minus)) / (2 * h)
  assert abs(float(g)) > 0
  np.testing.assert_allclose(g, fd, rtol=0.05)


@pytest.mark.parametrize("stage,param", [("bilateral", "log_sigma_color"),
                                         ("gamma", "log_g"), ("unsharp_mask", "log_amount"),
                                         ("log_compress", "log_c")])
def test_learnable_stages_start_at_their_constant(stage, param):
  cfg = M.default_config(stage)
  cfg[stage].learn = True
  e = M.make_enhance(cfg)
  v = e.init(jax.random.key(0), X)
  assert list(v["params"]["stages_0"]) == [param]
  fixed = M.make_enhance(M.default_config(stage))
  np.testing.assert_allclose(e.apply(v, X), fixed.apply({}, X), atol=1e-6)


def test_non_positive_parameter_is_a_clear_error():
  cfg = M.default_config("gamma")
  cfg.gamma.update(g=0.0)
  with pytest.raises(ValueError, match="g must be > 0"):
    M.make_enhance(cfg).apply({}, X)
