"""`runlocal` trains end to end in well under 2 minutes and leaves every artefact."""

import json
import time

import pytest

from fbjax.core import checkpoint
from fbjax.runtime import tracking
from tests.trainer_util import run


@pytest.mark.slow
def test_runlocal_leaves_checkpoint_metrics_config_and_offline_wandb(tmp_path):
  t0 = time.perf_counter()
  run(["-m", "launch.train", "--config", "configs/autoencoder.py:runlocal",
       "--workdir", str(tmp_path / "w")],
      env={"WANDB_MODE": "offline", "FBJAX_DATA_DIR": str(tmp_path / "tfds")})
  assert time.perf_counter() - t0 < 120
  tmp_path = tmp_path / "w"
  config = json.loads((tmp_path / tracking.CONFIG).read_text())
  rows = tracking.read_metrics(tmp_path)
  total = rows[-1]["step"]
  assert checkpoint.load_state(tmp_path)["step"] == total == 4 * (132 // 8)
  vals = [r["val/mse"] for r in rows if "val/mse" in r]
  assert len(vals) == config["num_epochs"] == 4
  assert vals[-1] < 0.8 * vals[0]  # it learns
  assert all("train/epoch_loss" in r for r in rows if "val/mse" in r)
  run_id = (tmp_path / tracking.RUN_ID).read_text().strip()
  assert [p.name for p in (tmp_path / "wandb").glob(f"offline-run-*-{run_id}")]
  assert list((tmp_path / "images").glob("val_reconstructions_*.png"))
