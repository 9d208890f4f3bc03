"""The autoencoder models: the prototype's architecture, shapes, batch independence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fbjax.models import autoencoder as ae
from fbjax.runtime import parallel


def _init(model, x):
  rng = jax.random.key(0)
  return parallel.compile_once(model.init, rng, x)(rng, x)


def _conv_params(k, cin, cout):
  return k * k * cin * cout + cout


def test_seed_matches_the_prototype_keras_architecture():
  # Keras: Conv2D(32,3)-MaxPool-Conv2D(64,3)-MaxPool-Conv2D(128,3)-MaxPool,
  # Conv2D(128,3)-Up-Conv2D(64,3)-Up-Conv2D(32,3)-Up-Conv2D(3,3, linear) on 224x224x3.
  expected = (_conv_params(3, 3, 32) + _conv_params(3, 32, 64) + _conv_params(3, 64, 128)
              + _conv_params(3, 128, 128) + _conv_params(3, 128, 64) + _conv_params(3, 64, 32)
              + _conv_params(3, 32, 3))
  model = ae.Model(arch="seed", channels=3, widths=(32, 64, 128))
  x = jnp.zeros((1, 224, 224, 3))
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes))
  assert n == expected == 333_955
  (recon, aux) = jax.eval_shape(model.apply, shapes, x)
  assert recon.shape == (1, 224, 224, 3)
  assert aux["latent_map"].shape == (1, 28, 28, 128) and aux["latent"].shape == (1, 128)


def test_default_config_model_shapes():
  from configs.autoencoder import get_config

  c = get_config()
  model = ae.Model(**c.model)
  x = jnp.zeros((1, *c.input.size, c.model.channels))
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  recon, aux = jax.eval_shape(model.apply, shapes, x)
  assert recon.shape == (1, 224, 224, 1)
  assert aux["latent_map"].shape == (1, 56, 56, 8)  # half as many numbers as pixels
  assert aux["latent"].shape == (1, 256)


@pytest.mark.parametrize("arch", ["seed", "resnet"])
def test_shapes_encode_and_batch_independence(arch):
  channels = 3 if arch == "seed" else 1
  model = ae.Model(arch=arch, channels=channels, widths=(4, 8, 16), latent_channels=4,
                   latent_dim=12, latent_widths=(8,), groups=2)
  x = jax.random.uniform(jax.random.key(1), (3, 32, 64, channels))
  params = _init(model, x[:1])
  apply = jax.jit(model.apply)
  recon, aux = apply(params, x)
  assert recon.shape == x.shape
  d = 16 if arch == "seed" else 12
  assert aux["latent"].shape == (3, d)
  z = jax.jit(lambda p, x: model.apply(p, x, method=ae.Model.encode))(params, x)
  np.testing.assert_allclose(z, aux["latent"], rtol=1e-5, atol=1e-6)
  # Each example's output depends on that example only (no batch statistics: a batch
  # norm would move it by ~0.1; the tolerance allows for the conv's summation order).
  alone, _ = apply(params, x[1:2])
  np.testing.assert_allclose(alone, recon[1:2], rtol=1e-4, atol=1e-5)


def test_resnet_decoder_reads_the_latent_vector():
  model = ae.Model(arch="resnet", widths=(4, 8), latent_channels=2, latent_dim=3, groups=2)
  x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 1))
  params = _init(model, x)
  grad = jax.grad(lambda p: jnp.sum(model.apply(p, x)[0]))
  grads = parallel.compile_once(grad, params)(params)
  g = grads["params"]["encoder"]["to_latent"]["kernel"]
  assert float(jnp.abs(g).max()) > 0  # the vector is trained by the reconstruction loss


def test_bad_input_size_and_channels():
  model = ae.Model(arch="resnet", widths=(4, 8))
  with pytest.raises(ValueError, match="multiple of 4"):
    model.init(jax.random.key(0), jnp.zeros((1, 18, 16, 1)))
  with pytest.raises(ValueError, match="expected 1 input channels"):
    model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
  with pytest.raises(ValueError, match="unknown autoencoder arch"):
    ae.Model(arch="vae").init(jax.random.key(0), jnp.zeros((1, 16, 16, 1)))
