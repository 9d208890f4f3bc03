"""The networks of a trained workdir, built from its recorded config (shared with the trainers,
so prediction needs no trainer): the classifier, the segmenter, the autoencoder's inputs,
their probability functions, the class names of each task.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fbjax.core import labels, schema
from fbjax.enhance import modules as enhance_lib
from fbjax.models import autoencoder as ae_lib
from fbjax.models import heads as heads_lib
from fbjax.models import unet

TASKS = ("plane", "abnormal", "condition")


def class_names(config, task: str) -> tuple[str, ...]:
  if task == "condition":
    return tuple(config.condition_classes)
  if task == "plane":
    return tuple(labels.PLANE_SHORT)
  if task == "abnormal":
    return tuple(labels.ABNORMAL)
  raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def head_sizes(config) -> tuple[tuple[str, int], ...]:
  unknown = [t for t in config.tasks if t not in TASKS]
  if unknown:
    raise ValueError(f"unknown tasks {unknown}; expected plane, abnormal, condition")
  return tuple((t, len(class_names(config, t))) for t in config.tasks)


def condition_lookup(classes) -> np.ndarray:
  """CONDITIONS index -> index in `classes` (-1: not a modelled class)."""
  table = np.full(len(labels.CONDITIONS), -1, np.int32)
  for i, name in enumerate(classes):
    table[labels.condition_index(name)] = i
  return table


def autoencoder_inputs(config):
  """batch -> (model input, reconstruction target) of an autoencoder, both (B, H, W, C):
  the fixed enhancement, then the channels; the target is the input or `config.target`."""

  channels = config.model.channels
  enhance = enhance_lib.make_enhance_fn(config.enhance, schema.size_of(config))

  def inputs(batch):
    x = enhance(batch["image"])
    y = x if config.target == "image" else batch[config.target]
    return ae_lib.to_channels(x, channels), ae_lib.to_channels(y, channels)

  return inputs


def classifier_model(config):

  m = dict(config.model)
  return heads_lib.Model(ae=dict(m.pop("ae")), heads=head_sizes(config),
                         features=tuple(m.pop("features")),
                         decode=config.loss.get("recon", 0.0) > 0,
                         stop_gradient=bool(config.get("freeze_encoder")), **m)


def segmenter_model(config):
  """The U-Net, with `config.enhance`'s chain in front unless it is "none"."""

  enhance = None
  if config.enhance.get("chain", "none") not in ("none", ""):
    enhance = enhance_lib.make_enhance(config.enhance)
  return unet.Model(**config.model, enhance=enhance)


def _with(config, **values):
  """A copy of `config` with `values` set."""
  out = config.copy_and_resolve_references()
  with out.unlocked():
    out.update(values)
  return out


def segmenter_probs_fn(config, model=None):
  """(params, (B, H, W) images) -> (B, H, W, 3) probabilities (enhancement included).

  With `config.eval_flip` the probabilities are averaged with those of the
  left-right mirrored image, mirrored back (test-time augmentation: the
  prediction becomes exactly mirror-equivariant, at twice the network cost).
  """
  model = model or segmenter_model(config)
  flip = bool(config.get("eval_flip", False))

  def probs_fn(params, images):
    probs = jax.nn.sigmoid(model.apply({"params": params}, images)[0])
    if flip:
      mirrored = jax.nn.sigmoid(model.apply({"params": params}, images[:, :, ::-1])[0])
      probs = 0.5 * (probs + mirrored[:, :, ::-1])
    return probs

  return probs_fn


def classifier_probs_fn(config, model=None):
  """(params, (B, H, W) images) -> {task: (B, C) probabilities, "features": (B, F)}."""

  model = model or classifier_model(config)
  enhance = enhance_lib.make_enhance_fn(config.enhance, schema.size_of(config))

  def probs_fn(params, images):
    x = ae_lib.to_channels(enhance(images), model.channels)
    logits, aux = model.apply({"params": params}, x)
    out = {t: jax.nn.softmax(v.astype(jnp.float32), axis=-1) for t, v in logits.items()}
    out["features"] = aux["features"]
    return out

  return probs_fn
