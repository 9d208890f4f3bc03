"""Segmentation trainer, config and evaluation CLI on the in-memory toy data."""

import csv
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from configs import segment as segment_config
from fbjax.data import sources
from fbjax.jobs import evaluate
from fbjax.runtime import tracking
from fbjax.trainers import segment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_config_variants():
  c = segment_config.get_config("data=phantom,variant=device")
  assert {n: b.weight for n, b in c.sources.items()} == {"hc18": 0.0, "phantom": 1.0}
  assert c.input.to_dict() == {"kind": "image", "size": (256, 384)}
  assert c.sources.hc18.name == "hc18" and c.sources.phantom.name == "fetal_brain_synth"
  assert all(b.eval for b in c.sources.values())
  hc18 = segment_config.get_config("data=hc18")
  assert {n: b.weight for n, b in hc18.sources.items()} == {"hc18": 1.0, "phantom": 0.0}
  mix = segment_config.get_config("data=mix")
  assert {n: b.weight for n, b in mix.sources.items()} == {"hc18": 0.7, "phantom": 0.3}
  with pytest.raises(KeyError, match="unknown data"):
    segment_config.get_config("data=nope")
  with pytest.raises(KeyError, match="unknown augment"):
    segment_config.get_config("augment=nope")
  for run in segment_config.sweep():
    c = segment_config.get_config(run["arg"])
    for k in run:
      if k != "arg":
        block, _, field = k.rpartition(".")
        assert field in (c[block] if block else c)


def test_data_block_keys_data_dir_by_manual_dir(tmp_path):
  c = segment_config.get_config()
  block = c.sources.hc18
  block.manual_dir = str(tmp_path / "a")
  a = sources.data_block(block)
  block.manual_dir = str(tmp_path / "b")
  b = sources.data_block(block)
  assert a.data_dir != b.data_dir and a.data_dir.endswith(os.path.join("manual", a.data_dir[-12:]))
  block.data_dir = str(tmp_path / "explicit")
  assert sources.data_block(block).data_dir == str(tmp_path / "explicit")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  os.environ.setdefault("WANDB_MODE", "disabled")
  workdir = str(tmp_path_factory.mktemp("seg"))
  c = segment_config.get_config("runlocal")
  segment.train_and_evaluate(c, workdir)
  return c, workdir


def test_randomize_runs_the_device_chain_in_the_step(tmp_path):
  """augment=randomize (here with its sweep arm's blur): the device chain runs inside
  the update step; the host pipeline hands over unaugmented examples."""
  from fbjax.data import device_augment

  c = segment_config.get_config("runlocal,data=phantom,augment=randomize")
  c.augment_params.max_blur_sigma = 1.0
  assert c.augment_on == "device"
  cfg = device_augment.from_config(c)
  assert cfg.max_blur_sigma == 1.0 and cfg.max_speckle_sigma > 0
  assert cfg.max_log_scale == segment_config.RANDOMIZE["max_log_scale"]
  ex = {"image": np.full((4, 4), 0.3, np.float32)}
  assert device_augment.host_augment(c)(np.random.default_rng(0), ex) is ex
  os.environ.setdefault("WANDB_MODE", "disabled")
  c.total_steps = 4
  segment.train_and_evaluate(c, str(tmp_path))
  losses = [r["train/loss"] for r in tracking.read_metrics(str(tmp_path)) if "train/loss" in r]
  assert losses and all(np.isfinite(losses))


def test_flip_averaging_is_mirror_equivariant():
  import jax

  c = segment_config.get_config("runlocal")
  model = segment.make_model(c)
  x = jax.random.uniform(jax.random.key(0), (2, 32, 48))
  params = model.init(jax.random.key(1), x)["params"]
  c.eval_flip = True
  p = np.asarray(segment.make_predict(c, params)(x))
  q = np.asarray(segment.make_predict(c, params)(x[:, :, ::-1]))
  np.testing.assert_allclose(q, p[:, :, ::-1], atol=1e-6)
  c.eval_flip = False
  single = np.asarray(segment.make_predict(c, params)(x))
  assert not np.allclose(single, p, atol=1e-4)


@pytest.mark.slow
def test_runlocal_trains_and_evaluates(trained, tmp_path):
  c, workdir = trained
  rows = tracking.read_metrics(workdir)
  last = [r for r in rows if "val/hc18/dice_head" in r][-1]
  first_loss = [r["train/loss"] for r in rows if "train/loss" in r]
  assert first_loss[-1] < first_loss[0]
  assert 0.0 <= last["val/hc18/dice_head"] <= 1.0 and "val/phantom/dice_brain" in last
  # Evaluation of the trained workdir writes the per-image files.
  out = tmp_path / "eval"
  full = evaluate.evaluate_workdir(workdir, c, data="phantom", split="validation",
                                   out_dir=str(out), num_overlays=2, methods=("plain", "robust"))
  summary = full["sources"]["phantom"]["original_resolution"]
  with open(out / "per_image.csv") as f:
    rows = list(csv.DictReader(f))
  assert summary["num_images"] == len(rows) > 0
  assert (out / "per_image.csv").exists() and len(list((out / "overlays").glob("*.png"))) == 2
  js = json.loads((out / "summary.json").read_text())
  assert js["data"]["split"] == "validation" and "robust_hc_abs_mm" in js
  assert np.isfinite(summary["seg_dice_head"]["mean"])


def _hc18_folder(dst, keep):
  """A copy of the HC18 dummy data holding only the training images in `keep`."""
  src = os.path.join(ROOT, "datasets", "hc18", "dummy_data")
  shutil.copytree(src, dst)
  csv_path = os.path.join(dst, "training_set_pixel_size_and_HC.csv")
  with open(csv_path) as f:
    header, *rows = f.read().splitlines()
  rows = [r for r in rows if r.split(",")[0] in keep]
  with open(csv_path, "w") as f:
    f.write("\n".join([header, *rows]) + "\n")
  for name in os.listdir(os.path.join(dst, "training_set")):
    if name.replace("_Annotation", "") not in keep:
      os.remove(os.path.join(dst, "training_set", name))
  return rows


@pytest.mark.slow
def test_evaluate_cli_on_another_hc18_folder(trained, tmp_path, monkeypatch):
  # A trained workdir evaluated on two folders in the HC18 layout, one after
  # the other, with the same data cache: each is built and measured in full.
  c, workdir = trained
  monkeypatch.setenv("FBJAX_DATA_DIR", str(tmp_path / "tfds"))
  every = sorted(n for n in os.listdir(os.path.join(ROOT, "datasets/hc18/dummy_data/training_set"))
                 if not n.endswith("_Annotation.png"))
  a = _hc18_folder(tmp_path / "a", set(every))
  # Same groups (so both splits stay non-empty), one image fewer.
  b_names = [n for n in every if n != "001_2HC.png"]
  b = _hc18_folder(tmp_path / "b", set(b_names))
  c = c.copy_and_resolve_references()
  c.sources.hc18.update(name="hc18", config="", manual_dir=str(tmp_path / "a"))
  full = evaluate.evaluate_workdir(workdir, c, data="hc18", split="train+validation",
                                   methods=("plain",), num_overlays=0)
  assert full["sources"]["hc18"]["original_resolution"]["num_images"] == len(a) == len(every)
  out = tmp_path / "cli"
  env = dict(os.environ, WANDB_MODE="disabled", JAX_PLATFORMS="cpu")
  r = subprocess.run(
      [sys.executable, "-m", "launch.evaluate", "--config", "configs/segment.py:runlocal",
       "--workdir", workdir, "--data", "hc18", "--config.sources.hc18.name=hc18",
       "--config.sources.hc18.config=", f"--config.sources.hc18.manual_dir={tmp_path / 'b'}",
       "--split", "train+validation",
       "--out", str(out), "--num_overlays", "1", "--methods", "plain,robust"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  js = json.loads((out / "summary.json").read_text())
  assert js["num_images"] == len(b) == len(every) - 1
  assert js["data"]["manual_dir"] == str(tmp_path / "b")
  with open(out / "per_image.csv") as f:
    ids = sorted(row["id"] for row in csv.DictReader(f))
  assert ids == sorted(f"training_set/{n}" for n in b_names)
  assert len(list((out / "overlays").glob("*.png"))) == 1
  assert math.isfinite(js["seg_dice_head"]["mean"])


@pytest.mark.slow
def test_logged_validation_equals_evaluation_of_the_workdir(trained):
  # Validation during training and `launch.evaluate` run the same evaluator with the
  # same prediction function (evaluation mode, eval_flip), so they agree exactly.
  c, workdir = trained
  rows = tracking.read_metrics(workdir)
  steps = [r["step"] for r in rows]
  assert steps == sorted(set(steps)) and steps[-1] == c.total_steps   # one row per step
  logged = rows[-1]
  for name in ("hc18", "phantom"):
    grid = evaluate.evaluate_workdir(workdir, c, data=name, methods=("plain",),
                                     num_overlays=0)["sources"][name]["grid"]
    assert f"val/{name}/dice_head" in grid
    for k, v in grid.items():
      assert v == pytest.approx(logged[k], abs=1e-6), k
