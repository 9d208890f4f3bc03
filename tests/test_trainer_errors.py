"""The trainer stops with clear messages: NaN loss, incompatible checkpoint, config typos."""

import math
import os
import pathlib

import pytest

from configs import autoencoder as ae_config
from fbjax.core import checkpoint
from fbjax.runtime import tracking
from fbjax.trainers import autoencoder as trainer
from tests.trainer_util import run, tiny_config


def test_nan_loss_stops_naming_the_step(tmp_path):
  # An infinite learning rate turns the params into inf/NaN in step 1, so the
  # loss of step 2 is the first non-finite one.
  config = tiny_config(total_steps=4, checkpoint_every=1, log_every=4)
  config.optimizer.lr = math.inf
  with pytest.raises(tracking.NonFiniteLossError, match=r"loss is nan at step 2;"):
    trainer.train_and_evaluate(config, str(tmp_path))
  # The check runs before each save, so no checkpoint holds the non-finite params.
  assert (tmp_path / "checkpoints" / "1").is_dir()
  assert not (tmp_path / "checkpoints" / "2").exists()


def test_incompatible_checkpoint_is_a_clear_error(tmp_path):
  trainer.train_and_evaluate(tiny_config(total_steps=1), str(tmp_path))
  other = tiny_config(total_steps=2)
  other.model.widths = (4, 8, 24)
  # The workdir's record says first which setting differs.
  with pytest.raises(ValueError, match=r"model.widths: recorded \[4, 8, 16\], now \[4, 8, 24\]"):
    trainer.train_and_evaluate(other, str(tmp_path))
  # Without the record, the checkpoint itself does not fit.
  os.remove(tmp_path / "config.json")
  with pytest.raises(checkpoint.IncompatibleCheckpointError) as e:
    trainer.train_and_evaluate(other, str(tmp_path))
  msg = str(e.value)
  assert "does not fit the configured model" in msg and "step 1" in msg
  assert "['params']['encoder']['conv2']['kernel']: checkpoint (3, 3, 8, 16)" in msg
  assert "configured (3, 3, 8, 24)" in msg and "--workdir" in msg


def test_fingerprint_compare_lists_missing_and_extra():
  a = {"x": [[2], "float32"], "y": [[3], "float32"]}
  b = {"x": [[2], "float32"], "z": [[3], "float32"]}
  assert checkpoint.compare(a, b) == ["y: in the checkpoint [3], not in the configured model",
                                      "z: in the configured model [3], not in the checkpoint"]
  assert checkpoint.compare(a, a) == []


def test_config_typo_rejected_on_the_command_line(tmp_path):
  proc = run(["-m", "launch.train", "--config", "configs/autoencoder.py:runlocal",
              "--workdir", str(tmp_path), "--config.optimizer.lrr=0.1"], check=False)
  assert proc.returncode != 0
  assert "lrr" in proc.stderr and 'Did you mean "lr"' in proc.stderr
  assert not (tmp_path / "checkpoints").exists()


def test_config_argument_typo_rejected():
  with pytest.raises(KeyError, match="unknown config argument 'varient'"):
    ae_config.get_config("varient=seed")
  with pytest.raises(KeyError, match="unknown variant"):
    ae_config.get_config("variant=sead")
  with pytest.raises(KeyError, match="unknown data set"):
    ae_config.get_config("data=fetal_brian_synth")


def test_launch_train_on_a_workdir_of_another_config_is_a_usage_error(tmp_path):
  """The command line says which values differ, as a usage error, not a traceback."""
  import subprocess
  import sys

  from tests import classify_util

  w = classify_util.fake_seg_workdir(tmp_path / "seg")
  before = (w / "config.json").read_text()
  env = dict(os.environ, JAX_PLATFORMS="cpu", WANDB_MODE="disabled",
             FBJAX_DATA_DIR=str(tmp_path / "data"))
  r = subprocess.run([sys.executable, "-m", "launch.train", "--config",
                      "configs/segment.py:runlocal", "--config.seed=12345",
                      f"--workdir={w}"], capture_output=True, text=True, env=env,
                     cwd=pathlib.Path(__file__).parents[1], timeout=600)
  assert r.returncode != 0
  assert "seed: recorded 0, now 12345" in r.stderr, r.stderr[-2000:]
  assert "Traceback" not in r.stderr, r.stderr[-2000:]
  assert (w / "config.json").read_text() == before
