"""Trainer for head / skull / brain segmentation (U-Net) with biometry.

    python -m launch.train --config configs/segment.py:runlocal --workdir /tmp/seg
    python -m launch.evaluate --config configs/segment.py --workdir DIR --split validation

What is the segmenter's own: the training data may mix several sources
(`config.train_on` names config blocks, e.g. the phantom and HC18, mixed in
the proportions `config.train_weights`); the loss is Dice + BCE per
(example, channel), averaged only where the example has that mask (HC18 has
a head mask but no skull or brain mask); validation reports, per source in
`config.eval_on`, Dice per channel on the network grid and, where the data
set gives HC, the HC error of the ellipse fitted to the predicted head
(`config.eval_method`) in mm (`fbjax.evaluators.segmentation`), with the
prediction function used at inference (`make_predict`: evaluation mode,
`config.eval_flip` averaging). The loop is `fbjax.train_lib`'s.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fbjax import evaluators, inference, losses, parallel, train_lib
from fbjax.data import sources
from fbjax.models import unet

MASK_KEYS = tuple(f"{c}_mask" for c in unet.CLASSES)
HAS_KEYS = tuple(f"has_{m}" for m in MASK_KEYS)
KEYS = evaluators.SEG_KEYS


def targets(batch):
  """(B, H, W, 3) float targets and (B, 3) presence flags from a batch."""
  t = jnp.stack([batch[k] for k in MASK_KEYS], axis=-1).astype(jnp.float32)
  present = jnp.stack([batch[k] for k in HAS_KEYS], axis=-1).astype(bool)
  return t, present


def train_source(config):
  """The (possibly mixed) training source named by `config.train_on`."""
  names = tuple(config.train_on)
  weights = tuple(config.get("train_weights") or ()) or None
  return sources.mixture({n: config[n] for n in names}, weights)


make_model = inference.segmenter_model


def make_predict(config, params, model=None):
  """Jitted (B, H, W) images -> (B, H, W, 3) probabilities of the trained `params`
  (`inference.segmenter_probs_fn`: evaluation mode, `config.eval_flip` averaging)."""
  probs_fn = inference.segmenter_probs_fn(config, model)
  return jax.jit(lambda images: probs_fn(params, images))


def make_eval_fn(config, model=None):
  """(params, batch) -> `evaluators.segmentation_batch` of the inference probabilities."""
  probs_fn = inference.segmenter_probs_fn(config, model)
  return lambda params, batch: evaluators.segmentation_batch(probs_fn(params, batch["image"]),
                                                             batch)


def evaluate(run, eval_fn, params, val_sources: dict, step=None):
  """Validation rows of every source in `val_sources`, head-probability grids logged."""
  row = {}
  for name, src in val_sources.items():
    part, first = evaluators.segmentation(run, eval_fn, params, src, name,
                                          run.config.eval_method)
    row.update(part)
    if run.writer is not None and step is not None:
      k = min(run.config.num_images, int(first["mask"].sum()))
      grid = np.concatenate([np.concatenate([first["image"][i], first["head"][i]], axis=1)
                             for i in range(k)], axis=0)
      run.writer.images(step, {f"val/{name}/head_probability": grid})
  return row


def train_and_evaluate(config, workdir: str):
  """Trains the segmentation model described by `config`, resuming from `workdir`."""
  # Process 0 builds the data sets if needed; the others then open them.
  tsource, val_sources = parallel.main_process_first(lambda: (
      train_source(config),
      {n: sources.block_source(config[n], config[n].val_split) for n in config.eval_on}))
  train_lib.log_source(config.train_on, tsource)
  model = make_model(config)
  eval_fn = None

  def loss_fn(params, batch, rng):
    logits, _ = model.apply({"params": params}, batch["image"], train=True,
                            rngs={"dropout": rng})
    t, present = targets(batch)
    return losses.segmentation_loss(logits, t, present, **config.loss)[0], {}

  def evaluate_fn(run, params, step):
    nonlocal eval_fn
    eval_fn = eval_fn or run.jit(make_eval_fn(config, model))
    return evaluate(run, eval_fn, params, val_sources, step), None

  return train_lib.train(
      config, workdir, kind="segmenter", train_source=tsource, keys=KEYS, loss_fn=loss_fn,
      evaluate=evaluate_fn,
      init_params=lambda rng: model.init(rng, jnp.zeros((1, *config.data.size)))["params"],
      shown=("dice", "hc_abs"))
