"""Resume is exact: SIGKILL after a checkpoint, restart, finish == never interrupted."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fbjax.core import checkpoint
from fbjax.runtime import tracking
from tests.trainer_util import ROOT, run

FLAGS = ["--config.sources.phantom.name=toy", "--config.sources.phantom.config=",
         "--config.total_steps=64", "--config.checkpoint_every=8", "--config.log_every=1",
         "--config.input.size=(32,32)", "--config.model.widths=(4,8,16)",
         "--config.wandb.mode=offline"]
ENV = {"WANDB_MODE": "offline"}


def _cmd(workdir):
  return ["-m", "launch.train", "--config", "configs/autoencoder.py:variant=seed,runlocal",
          "--workdir", str(workdir), *FLAGS]


def _wandb_ids(workdir):
  runs = [d for d in os.listdir(workdir / "wandb") if d.startswith("offline-run-")]
  return sorted({d.rsplit("-", 1)[1] for d in runs}), len(runs)


def _comparable(row):
  return {k: v for k, v in row.items() if not k.startswith("perf/")}


@pytest.mark.slow
def test_sigkill_and_resume_equals_uninterrupted(tmp_path):
  ref, killed = tmp_path / "ref", tmp_path / "killed"
  run(_cmd(ref), env=ENV)

  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", WANDB_MODE="offline",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  proc = subprocess.Popen([sys.executable, *_cmd(killed)], cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  # Kill once checkpoint 16 is committed and the run has logged steps beyond it,
  # so the restart must both restore and drop the orphaned metric lines.
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    steps = [r["step"] for r in tracking.read_metrics(killed)]
    if (killed / "checkpoints" / "16").is_dir() and steps and max(steps) > 17:
      proc.send_signal(signal.SIGKILL)
      break
    time.sleep(0.01)
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL, f"the run was not killed mid-way: {proc.stderr}"
  assert not (killed / "checkpoints" / "64").exists()
  run_id = (killed / tracking.RUN_ID).read_text()

  run(_cmd(killed), env=ENV)

  a, b = checkpoint.load_state(ref), checkpoint.load_state(killed)
  for x, y in zip(*(jax_leaves(s) for s in (a, b)), strict=True):
    np.testing.assert_array_equal(x, y)
  rows_a, rows_b = tracking.read_metrics(ref), tracking.read_metrics(killed)
  steps = [r["step"] for r in rows_b]
  assert steps == list(range(1, 65))  # none missing, none twice
  assert _comparable(rows_a[-1]) == _comparable(rows_b[-1])
  assert [_comparable(r) for r in rows_a] == [_comparable(r) for r in rows_b]
  assert (killed / tracking.RUN_ID).read_text() == run_id
  ids, n_runs = _wandb_ids(killed)
  assert ids == [run_id.strip()] and n_runs == 2  # one wandb run, resumed once


def jax_leaves(tree):
  import jax
  return jax.tree.leaves(tree)


def test_metrics_truncate_drops_lines_after_the_checkpoint(tmp_path):
  from configs.autoencoder import get_config
  c = get_config("runlocal")
  c.wandb.mode = "disabled"
  w = tracking.Writer(tmp_path, c, enabled=True)
  for s in (1, 2, 3, 4):
    w.scalars(s, {"loss": float(s), "bad": float("nan")})
  with open(tmp_path / tracking.METRICS, "a") as f:
    f.write('{"step": 5, "lo')  # a line torn by the kill
  w.truncate(2)
  rows = tracking.read_metrics(tmp_path)
  assert rows == [{"step": 1, "loss": 1.0, "bad": None}, {"step": 2, "loss": 2.0, "bad": None}]
  assert json.loads((tmp_path / tracking.CONFIG).read_text())["trainer"] == "autoencoder"
