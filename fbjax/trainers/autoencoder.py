"""Trainer for the convolutional autoencoder (MSE reconstruction).

    python -m launch.train --config configs/autoencoder.py:runlocal --workdir /tmp/ae

What is the autoencoder's own: the model (`fbjax.models.autoencoder`, with
the fixed enhancement of `config.enhance` in front: `inference.
autoencoder_inputs`), the reconstruction loss (of the image, or of
`config.target`, e.g. the phantom's clean image) and the validation MSE
(`evaluators.reconstruction`) with a grid of reconstructions. Mesh, input pipeline,
optimizer, checkpoints, logging and resume are `fbjax.runtime.train_lib`'s.

Optimisation (CITATIONS.bib): Adam kingma2015adam; linear warm-up
goyal2017largebatch then cosine decay loshchilov2017sgdr (`fbjax.runtime.optim`).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from fbjax.core import schema
from fbjax.data import sources
from fbjax.evaluation import evaluators, networks
from fbjax.models import autoencoder as ae
from fbjax.runtime import parallel, train_lib


def data_keys(config) -> tuple[str, ...]:
  return ("image",) if config.target == "image" else ("image", config.target)


def make_loss_fn(model, inputs):
  def loss_fn(params, batch, rng):
    x, y = inputs(batch)
    recon, _ = model.apply({"params": params}, x, train=True, rngs={"dropout": rng})
    return jnp.mean(evaluators.per_example_mse(recon, y)), {}

  return loss_fn


def reconstruction_grid(first) -> np.ndarray:
  """Rows of (input, reconstruction, 4 x |error|) images."""
  return np.concatenate([np.concatenate(
      [a, np.clip(r, 0, 1), np.clip(4 * np.abs(r - a), 0, 1)], axis=1)
      for a, r in zip(first["input"], first["recon"], strict=True)], axis=0)


def train_and_evaluate(config, workdir: str):
  """Trains the autoencoder described by `config`, resuming from `workdir`.

  Returns the final train state (a dict of replicated arrays).
  """
  # Process 0 builds the data set if needed; the others then open it.
  train_source, val_source = parallel.main_process_first(lambda: (
      sources.mixture(sources.training_blocks(config)), sources.validation_source(config)))
  model = ae.Model(**config.model)
  inputs = networks.autoencoder_inputs(config)
  eval_fn = None

  def init_params(rng):
    return model.init(rng, jnp.zeros((1, *schema.size_of(config), config.model.channels)))["params"]

  def evaluate(run, params, step):
    nonlocal eval_fn
    eval_fn = eval_fn or run.jit(evaluators.reconstruction_fn(config, model))
    row, first = evaluators.reconstruction(run, eval_fn, params, val_source, data_keys(config))
    run.writer.images(step, {"val/reconstructions": reconstruction_grid(first)})
    run.writer.histograms(step, {"val/latent": first["latent"]})
    return row, None

  return train_lib.train(
      config, workdir, kind="autoencoder", train_source=train_source, keys=data_keys(config),
      init_params=init_params, loss_fn=make_loss_fn(model, inputs), evaluate=evaluate)
