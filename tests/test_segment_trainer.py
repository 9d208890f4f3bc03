"""Segmentation trainer, config and evaluation CLI on the in-memory toy data."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import segment as segment_config
from fbjax import tracking
from fbjax.trainers import segment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_config_variants():
  c = segment_config.get_config("data=phantom,variant=device")
  assert c.train_on == ("phantom",) and tuple(c.data.size) == (256, 384)
  assert c.data.name == "hc18" and c.phantom.name == "fetal_brain_synth"
  assert segment_config.get_config("data=hc18").train_on == ("data",)
  with pytest.raises(KeyError, match="unknown data"):
    segment_config.get_config("data=nope")
  for run in segment_config.sweep():
    c = segment_config.get_config(run["arg"])
    for k in run:
      if k != "arg":
        block, _, field = k.rpartition(".")
        assert field in (c[block] if block else c)


def test_data_block_keys_data_dir_by_manual_dir(tmp_path):
  c = segment_config.get_config()
  c.data.manual_dir = str(tmp_path / "a")
  a = segment.data_block(c.data)
  c.data.manual_dir = str(tmp_path / "b")
  b = segment.data_block(c.data)
  assert a.data_dir != b.data_dir and a.data_dir.endswith(os.path.join("manual", a.data_dir[-12:]))
  c.data.data_dir = str(tmp_path / "explicit")
  assert segment.data_block(c.data).data_dir == str(tmp_path / "explicit")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  os.environ.setdefault("WANDB_MODE", "disabled")
  workdir = str(tmp_path_factory.mktemp("seg"))
  c = segment_config.get_config("runlocal")
  segment.train_and_evaluate(c, workdir)
  return c, workdir


@pytest.mark.slow
def test_runlocal_trains_and_evaluates(trained, tmp_path):
  c, workdir = trained
  rows = tracking.read_metrics(workdir)
  last = [r for r in rows if "val/data/dice_head" in r][-1]
  first_loss = [r["train/loss"] for r in rows if "train/loss" in r]
  assert first_loss[-1] < first_loss[0]
  assert 0.0 <= last["val/data/dice_head"] <= 1.0 and "val/phantom/dice_brain" in last
  # Evaluation of the trained workdir writes the per-image files.
  out = tmp_path / "eval"
  rows, summary = segment.evaluate_workdir(c, workdir, data="phantom", split="validation",
                                           out_dir=str(out), num_overlays=2,
                                           methods=("plain", "robust"))
  assert summary["num_images"] == len(rows) > 0
  assert (out / "per_image.csv").exists() and len(list((out / "overlays").glob("*.png"))) == 2
  js = json.loads((out / "summary.json").read_text())
  assert js["data"]["split"] == "validation" and "robust_hc_abs_mm" in js
  assert np.isfinite(summary["seg_dice_head"]["mean"])


@pytest.mark.slow
def test_evaluate_cli(trained, tmp_path):
  _, workdir = trained
  out = tmp_path / "cli"
  env = dict(os.environ, WANDB_MODE="disabled", JAX_PLATFORMS="cpu")
  r = subprocess.run(
      [sys.executable, "-m", "launch.evaluate", "--config", "configs/segment.py:runlocal",
       "--workdir", workdir, "--data", "data", "--split", "test", "--out", str(out),
       "--num_overlays", "1", "--limit", "5", "--methods", "plain,robust"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  js = json.loads((out / "summary.json").read_text())
  assert js["num_images"] == 5 and js["data"]["split"] == "test"
  assert math.isfinite(js["seg_dice_head"]["mean"])
