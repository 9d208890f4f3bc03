"""The README's first command (`make demo` = `python -m launch.demo`) at its smallest size."""

import csv
import json
from pathlib import Path

import cv2
import pytest

from tests.trainer_util import run


@pytest.mark.slow
def test_main_job_smoke_runs_end_to_end_and_reruns_from_checkpoints(tmp_path):
  out = tmp_path / "out"
  env = {"FBJAX_DATA_DIR": str(tmp_path / "tfds"), "WANDB_MODE": "disabled"}
  args = ["-m", "launch.demo", "--out", str(out), "--size", "smoke"]
  run(args, env=env, timeout=600)

  m = json.loads((out / "metrics.json").read_text())
  # Every stage ran and left its artefacts.
  assert set(m["seconds"]) >= {"data", "segment", "autoencoder", "classify", "predict"}
  counts = m["data"]["counts"]
  assert counts["unlabelled"] == 16 and counts["train"] == 132
  for w in ("segment", "autoencoder", "classify"):
    assert (out / w / "config.json").exists(), w
  assert (out / "segment_eval" / "per_image.csv").exists()
  assert 0.0 <= m["segment"]["dice_head"] <= 1.0
  assert m["classify"]["n_test"] == 33
  assert 0.0 <= m["classify"]["plane"]["accuracy"] <= 1.0

  # Every unlabelled image got a prediction row, with HC in mm (the spacing CSV).
  with open(out / "predict" / "predictions.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  with open(out / "unlabelled" / "pixel_spacing.csv", newline="") as f:
    spacing = {r["filename"]: float(r["pixel_spacing_mm"]) for r in csv.DictReader(f)}
  assert len(rows) == m["predict"]["predicted"] == 16 and m["predict"]["errors"] == 0
  # A plane wherever the (smoke-sized, barely trained) segmenter found a head; none where
  # it did not ("not a fetal head": no answer rather than a guess).
  assert all(bool(r["plane"]) == (r["seg_quality"] != "no_head") for r in rows)
  assert len(spacing) == 16 and all(0 < v < 5 for v in spacing.values())
  for r in rows:
    assert float(r["pixel_spacing_mm"]) == pytest.approx(spacing[Path(r["file"]).name], rel=1e-4)
  assert (out / "predict" / "report.html").stat().st_size > 1000
  pic = cv2.imread(str(out / "report.png"))
  assert pic is not None and pic.shape[0] > 100

  # A rerun resumes every training from its final checkpoint: same metrics.
  run(args, env=env, timeout=600)
  m2 = json.loads((out / "metrics.json").read_text())
  assert m2["segment"] == m["segment"]
  assert m2["classify"] == m["classify"]
