"""Trainer for the self-supervised despeckler (structured blind spots, no clean targets).

    python -m launch.train --config configs/despeckle.py:runlocal --workdir /tmp/despeckle

The loop (mesh, pipeline, optimizer, checkpoints, logging, resume) is
`fbjax.runtime.train_lib`'s. Training sees only the noisy `image`: each step takes
random crops, hides a box around a few random pixels (`fbjax.enhance.
despeckle.blind_spot`) and fits the network's prediction to the noisy value
at the box centres. Evaluation (`evaluators.denoising`) reports the same
self-supervised loss on the validation split (fixed hidden boxes, so it is
comparable between steps) and, on images that carry a `clean` image (the
phantom), PSNR and SSIM of the full-image prediction against it; `clean` is
never used for training.

The trained workdir is an enhancement stage: `enhance.chain=learned` with
`enhance.learned.workdir=<workdir>` (fbjax/enhance/modules.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fbjax.core import schema
from fbjax.data import sources
from fbjax.enhance import despeckle
from fbjax.evaluation import evaluators
from fbjax.runtime import parallel, train_lib


def random_crops(rng, images, size: int):
  """One random size x size crop per image (the whole image if size is 0 or too big)."""
  b, h, w = images.shape
  if not size or (size >= h and size >= w):
    return images
  ch, cw = min(size, h), min(size, w)
  ky, kx = jax.random.split(rng)
  oy = jax.random.randint(ky, (b,), 0, h - ch + 1)
  ox = jax.random.randint(kx, (b,), 0, w - cw + 1)
  return jax.vmap(lambda im, y, x: jax.lax.dynamic_slice(im, (y, x), (ch, cw)))(images, oy, ox)


def blind_spot_config(config) -> dict:
  return dict(fraction=float(config.blind_spot.fraction),
              mask_hw=tuple(int(v) for v in config.blind_spot.mask_hw))


def make_loss_fn(model, config):
  """Masked MSE at the hidden pixels of random crops (a fresh mask every step)."""
  bs, crop = blind_spot_config(config), int(config.crop)

  def loss_fn(params, batch, rng):
    k_crop, k_mask = jax.random.split(rng)
    images = random_crops(k_crop, batch["image"], crop)
    x_in, centres = despeckle.blind_spot(k_mask, images, **bs)
    total, count = despeckle.masked_mse(model.apply({"params": params}, x_in), images, centres)
    return total / jnp.maximum(count, 1.0), {}

  return loss_fn


def train_and_evaluate(config, workdir: str):
  """Trains the despeckler described by `config`, resuming from `workdir`."""
  train_source, val_source = parallel.main_process_first(lambda: (
      sources.mixture(sources.training_blocks(config)), sources.validation_source(config)))
  model = despeckle.Model(**config.model)
  size, crop = schema.size_of(config), int(config.crop)
  eval_fn = None

  def init_params(rng):
    c = crop or size[0]
    return model.init(rng, jnp.zeros((1, min(c, size[0]), min(c, size[1]))))["params"]

  def evaluate_fn(run, params, step):
    nonlocal eval_fn
    eval_fn = eval_fn or run.jit(evaluators.denoising_fn(config, model))
    row, first = evaluators.denoising(run, eval_fn, params, val_source)
    grid = np.concatenate([np.concatenate([a, o, c], axis=1) for a, o, c in zip(
        first["input"], first["output"], first["clean"], strict=True)], axis=0)
    run.writer.images(step, {"val/noisy_despeckled_clean": grid})
    return row, None

  return train_lib.train(
      config, workdir, kind="despeckler", train_source=train_source, keys=("image",),
      init_params=init_params, loss_fn=make_loss_fn(model, config), evaluate=evaluate_fn)
