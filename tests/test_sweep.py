"""Sweeps: expansion, validation, SLURM array script, a local run grouped in wandb."""

import json
import shlex

import pytest

from fbjax.runtime import sweep, tracking
from tests.trainer_util import run

TINY_SWEEP = """
from configs import common
from configs.autoencoder import get_config as _get

def get_config(arg=None):
  c = _get(arg)
  c.total_steps, c.log_every = 2, 1
  c.input.size = (32, 32)
  c.sources = common.sources(common.data("toy", source_size=(32, 32)))
  c.model.widths = (4, 8, 16)
  return c

def sweep():
  return [{"arg": "variant=seed,runlocal", "optimizer.lr": lr} for lr in (1e-3, 1e-2)]
"""


def test_autoencoder_sweep_expands_and_validates():
  runs = sweep.expand("configs/autoencoder.py")
  assert len(runs) == 17 and len({r.name for r in runs}) == 17
  seed = [r for r in runs if r.arg == "variant=seed"]
  assert [dict(r.overrides)["optimizer.lr"] for r in seed] == [1e-3, 2e-3, 4e-3]
  cmd = runs[0].command("configs/autoencoder.py", "/w", "g")
  assert cmd[:5] == ["python", "-m", "launch.train", "--config",
                     "configs/autoencoder.py:variant=default"]
  assert "--config.model.latent_channels=4" in cmd and "--config.wandb.group=g" in cmd


def test_sweep_with_unknown_field_is_rejected(tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text(TINY_SWEEP.replace('"optimizer.lr"', '"optimizer.lrr"'))
  with pytest.raises(KeyError, match="sweep entry 0 .* cannot set optimizer.lrr"):
    sweep.expand(str(bad))


def test_slurm_array_script(tmp_path):
  runs = sweep.expand("configs/autoencoder.py")
  text = sweep.slurm_script(runs, "configs/autoencoder.py", "/runs/s", "grp",
                            sbatch=("--gres=gpu:1",), max_parallel=4)
  assert "#SBATCH --array=0-16%4" in text and "#SBATCH --gres=gpu:1" in text
  body = text.split("RUNS=(\n", 1)[1].split("\n)", 1)[0].splitlines()
  assert len(body) == 17
  first = shlex.split(shlex.split(body[0])[0])
  assert first[first.index("--workdir") + 1] == f"/runs/s/{runs[0].name}"


@pytest.mark.slow
def test_local_sweep_runs_each_config_in_its_own_workdir(tmp_path):
  cfg = tmp_path / "tiny_sweep.py"
  cfg.write_text(TINY_SWEEP)
  out = tmp_path / "runs"
  run(["-m", "launch.sweep", "--config", str(cfg), "--workdir", str(out), "--group", "g1"])
  dirs = sorted(p.name for p in out.iterdir())
  assert dirs == ["variant-seed_runlocal_lr-0.001", "variant-seed_runlocal_lr-0.01"]
  for d in dirs:
    config = json.loads((out / d / tracking.CONFIG).read_text())
    assert config["wandb"]["group"] == "g1" and config["wandb"]["name"] == d
    assert [r["step"] for r in tracking.read_metrics(out / d)] == [1, 2]
