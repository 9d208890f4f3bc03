"""Trainer for head / skull / brain segmentation (U-Net) with biometry.

    python -m launch.train --config configs/segment.py:runlocal --workdir /tmp/seg
    python -m launch.evaluate --config configs/segment.py --workdir DIR --split validation

What is the segmenter's own: the training data may mix several sources
(the blocks of `config.sources` with a `weight`, e.g. the phantom and HC18, mixed in
those proportions); the loss is Dice + BCE per
(example, channel), averaged only where the example has that mask (HC18 has
a head mask but no skull or brain mask); validation reports, per source in
the blocks with `eval`, Dice per channel on the network grid and, where the data
set gives HC, the HC error of the ellipse fitted to the predicted head
(`config.eval_method`) in mm (`fbjax.evaluation.evaluators.segmentation`), with the
prediction function used at inference (`make_predict`: evaluation mode,
`config.eval_flip` averaging). The loop is `fbjax.runtime.train_lib`'s.

Stage 2 (`config.stage == 2`, `fbjax.evaluation.coarse_fine`): every source is read as
head crops around the reference ellipse (jittered for training, exact for
validation), so the numbers validated during training are those of stage 2
behind a perfect stage 1; `launch.evaluate` runs both stages.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from fbjax.core import schema
from fbjax.core import workdir as workdir_lib
from fbjax.data import sources
from fbjax.evaluation import coarse_fine, evaluators, networks
from fbjax.models import losses, unet
from fbjax.runtime import parallel, train_lib

MASK_KEYS = tuple(f"{c}_mask" for c in unet.CLASSES)
HAS_KEYS = tuple(f"has_{m}" for m in MASK_KEYS)
KEYS = evaluators.SEG_KEYS


def targets(batch):
  """(B, H, W, 3) float targets and (B, 3) presence flags from a batch."""
  t = jnp.stack([batch[k] for k in MASK_KEYS], axis=-1).astype(jnp.float32)
  present = jnp.stack([batch[k] for k in HAS_KEYS], axis=-1).astype(bool)
  return t, present


def crop_source(config, source, *, train: bool):
  """Stage 2: `source` as head crops (`coarse_fine.CropSource`), jittered when training."""
  cr = config.crop
  return coarse_fine.CropSource(
      source, schema.size_of(config), head_fraction=cr.head_fraction,
      shift=cr.shift if train else 0.0, zoom=cr.zoom if train else 0.0,
      copies=cr.copies if train else 1, seed=config.seed)


def block_source(config, name: str, split: str, *, train: bool = False):
  """Block `name`'s `split` of `config.sources` as the trainer reads it (stage 2: head
  crops)."""
  src = sources.block_source(config.sources[name], split)
  return crop_source(config, src, train=train) if config.get("stage", 1) == 2 else src


def train_source(config):
  """The (possibly mixed) training source: the blocks of `config.sources` with a weight."""
  wrap = (lambda s: crop_source(config, s, train=True)) if config.get("stage", 1) == 2 \
      else None
  return sources.mixture(sources.training_blocks(config), wrap=wrap)


def check_stage1(config) -> None:
  """A stage-2 config must name a trained stage-1 segmenter (inference runs it first)."""
  if config.get("stage", 1) != 2:
    return
  path = config.get("stage1_workdir") or ""
  if not path:
    raise ValueError("stage 2 needs --config.stage1_workdir: the stage-1 segmenter workdir")
  first = workdir_lib.read_config(os.path.expanduser(path))   # the error names a non-workdir
  if schema.kind_of(first, path) != "segmenter" or first.get("stage", 1) != 1:
    raise ValueError(f"stage1_workdir {path} is not a stage-1 segmenter workdir")
  # Recorded absolute: inference finds it from wherever it is run.
  config.stage1_workdir = os.path.abspath(os.path.expanduser(path))


make_model = networks.segmenter_model


def make_predict(config, params, model=None):
  """Jitted (B, H, W) images -> (B, H, W, 3) probabilities of the trained `params`
  (`networks.segmenter_probs_fn`: evaluation mode, `config.eval_flip` averaging)."""
  probs_fn = networks.segmenter_probs_fn(config, model)
  return jax.jit(lambda images: probs_fn(params, images))


def make_eval_fn(config, model=None):
  """(params, batch) -> `evaluators.segmentation_batch` of the inference probabilities."""
  probs_fn = networks.segmenter_probs_fn(config, model)
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
  check_stage1(config)
  # Process 0 builds the data sets if needed; the others then open them.
  tsource, val_sources = parallel.main_process_first(lambda: (
      train_source(config),
      {n: block_source(config, n, b.val_split) for n, b in sources.eval_blocks(config).items()}))
  train_lib.log_source(sources.training_blocks(config), tsource)
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

  def finish(run, params, step, result):
    # A second stage records the first stage's checkpoint it is paired with (its final
    # one, when stage 1 has finished): inference then runs that one, whatever stage 1's
    # workdir holds later.
    if run.is_main and int(config.get("stage", 1)) == 2:
      done = workdir_lib.completed_step(config.stage1_workdir)
      if done is not None:
        workdir_lib.write_json(run.workdir, workdir_lib.STAGE1,
                               {"workdir": config.stage1_workdir, "step": done})

  return train_lib.train(
      config, workdir, kind="segmenter", train_source=tsource, keys=KEYS, loss_fn=loss_fn,
      evaluate=evaluate_fn, finish=finish,
      init_params=lambda rng: model.init(rng, jnp.zeros((1, *schema.size_of(config))))["params"],
      shown=("dice", "hc_abs"))
