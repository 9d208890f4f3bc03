"""Helpers for trainer tests: a CI-sized autoencoder config and subprocess runs."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from configs import autoencoder, common

ROOT = pathlib.Path(__file__).resolve().parents[1]


def tiny_config(**overrides):
  """The seed autoencoder at 32x32 on 64 toy images: compiles and runs in seconds."""
  c = autoencoder.get_config("variant=seed,runlocal")
  c.input.size = (32, 32)
  c.sources = common.sources(common.data("toy", num_examples=64, source_size=(32, 32)))
  c.augment, c.augment_on = True, "host"   # the host chain, exercised by resume
  c.model.widths = (4, 8, 16)
  c.batch_size = 8
  c.eval_batch_size = 8
  c.num_images = 2
  c.total_steps = 3
  c.log_every = 1
  c.checkpoint_every = 100
  c.wandb.mode = "disabled"
  c.optimizer.update(name="sgd", lr=0.1, schedule="constant", grad_clip=0.0)
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def run(args, *, devices: int = 1, env: dict | None = None, timeout: float = 300,
        check: bool = True) -> subprocess.CompletedProcess:
  """Runs `python args...` from the repository root with `devices` fake CPU devices."""
  full_env = dict(os.environ)
  full_env.update({"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
                   "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
                   "WANDB_MODE": "disabled"})
  full_env.update(env or {})
  proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=full_env, capture_output=True,
                        text=True, timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
  return proc
