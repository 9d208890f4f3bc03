"""Helpers for the classification tests: a trained-looking workdir without training."""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from configs import classify as classify_config
from configs import common
from fbjax.core import checkpoint as ckpt_lib
from fbjax.evaluation import anomaly, networks
from fbjax.models import autoencoder
from fbjax.runtime import tracking

AE = dict(arch="resnet", channels=1, widths=(4, 8), blocks=1, latent_channels=4, latent_dim=8,
          groups=2)


def tiny_config(size=(32, 32)):
  """The classify runlocal config on the in-memory toy data at `size`, CI-sized."""
  c = classify_config.get_config("runlocal")
  c.input.size = tuple(size)
  c.sources.phantom = common.data("toy", source_size=size, num_examples=32)
  c.sources.phantom.update(weight=1.0, tasks=("plane", "abnormal", "condition"), eval=True)
  c.model.ae = dict(AE)
  c.model.hidden = 0
  c.batch_size = 8
  c.eval_batch_size = 8
  c.num_images = 2
  c.total_steps = 3
  c.log_every = 1
  c.checkpoint_every = 100
  c.wandb.mode = "disabled"
  return c


def random_params(model, size, seed: int = 0):
  """Parameters of `model`'s structure drawn with numpy (no compilation: instant)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *size, 1)))["params"]
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)


def fake_workdir(path, config=None, *, seed: int = 0, with_anomaly: bool = True,
                 abnormal_threshold: float | None = 0.5):
  """Writes config.json, a checkpoint of random heads, decision.json and an anomaly model.

  `abnormal_threshold=None` leaves decision.json out (as a run without normal
  validation images does).
  """
  config = config or tiny_config()
  model = networks.classifier_model(config)
  size = tuple(config.input.size)
  params = random_params(model, size, seed)
  state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt": {},
           "rng": jax.random.key_data(jax.random.key(1))}
  writer = tracking.Writer(path, config, enabled=True)
  writer.close()
  mngr = ckpt_lib.manager(path, async_save=False)
  ckpt_lib.save(mngr, 0, state, force=True)
  mngr.wait_until_finished()
  mngr.close()
  if abnormal_threshold is not None:
    (pathlib.Path(path) / "decision.json").write_text(
        json.dumps({"abnormal_threshold": abnormal_threshold}))
  if with_anomaly:
    ae_model = autoencoder.Model(**config.model.ae)
    ae_params = random_params(ae_model, size, seed + 2)
    ae = anomaly.Autoencoder(model=dict(config.model.ae), params=ae_params,
                             enhance={"chain": "none"}, size=size)
    feats = np.random.default_rng(seed).normal(size=(64, 4 * 2 + 8))
    am = anomaly.AnomalyModel(ae=ae, gaussian=anomaly.Gaussian.fit(feats),
                              thresholds={"mahalanobis": 5.0, "recon": 0.1},
                              specificity=0.95)
    anomaly.save(am, path)
  return path


def fake_seg_workdir(path, seed: int = 0):
  """A segmentation workdir (configs/segment.py:runlocal) with random U-Net weights."""
  from configs import segment as segment_config
  from fbjax.trainers import segment

  config = segment_config.get_config("runlocal")
  config.wandb.mode = "disabled"
  model = segment.make_model(config)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, *config.input.size)))["params"]
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)
  state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt": {},
           "rng": jax.random.key_data(jax.random.key(1))}
  tracking.Writer(path, config, enabled=True).close()
  mngr = ckpt_lib.manager(path, async_save=False)
  ckpt_lib.save(mngr, 0, state, force=True)
  mngr.wait_until_finished()
  mngr.close()
  return path


def aligned_config(size=(24, 32), head_fraction: float = 0.8, margin: float = 0.08):
  """`tiny_config` of a classifier that reads the aligned head (`config.input`)."""
  c = tiny_config(size)
  c.input = common.model_input("aligned_head", size, head_fraction=head_fraction,
                               margin=margin, seg_workdir="")
  return c
