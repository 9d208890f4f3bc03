"""The fixed enhancement in front of a model, and the optimizer and schedules."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fbjax.enhance import filters
from fbjax.enhance import modules as enhance_lib
from fbjax.runtime import optim


def test_enhance_hook_none_is_identity_and_a_chain_applies_its_filter():
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 16, 16)).astype(np.float32))
  ident = enhance_lib.make_enhance_fn(enhance_lib.default_config("none"), (16, 16))
  np.testing.assert_array_equal(ident(x), x)
  cfg = enhance_lib.default_config("median")
  cfg.median.size = 3
  med = enhance_lib.make_enhance_fn(cfg, (16, 16))
  np.testing.assert_allclose(med(x), filters.median(x, 3), atol=1e-6)


def test_warmup_cosine_schedule():
  opt = ml_collections.ConfigDict(dict(lr=1e-3, schedule="warmup_cosine", warmup_epochs=1.0,
                                       end_lr_fraction=0.1))
  sched = optim.make_schedule(opt, total_steps=100, steps_per_epoch=10)
  assert float(sched(0)) == 0.0
  np.testing.assert_allclose(float(sched(10)), 1e-3, rtol=1e-6)
  np.testing.assert_allclose(float(sched(100)), 1e-4, rtol=1e-5)
  const = optim.make_schedule(ml_collections.ConfigDict(dict(lr=3e-4, schedule="constant")),
                                100, 10)
  assert float(const(57)) == np.float32(3e-4)
  # SGD through make_optimizer is plain: one step moves params by -lr * grad.
  tx = optim.make_optimizer(ml_collections.ConfigDict(dict(name="sgd", grad_clip=0.0)), 0.5)
  upd, _ = tx.update({"w": jnp.ones(3)}, tx.init({"w": jnp.zeros(3)}))
  np.testing.assert_allclose(optax.apply_updates({"w": jnp.zeros(3)}, upd)["w"], -0.5)
