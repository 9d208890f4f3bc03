"""The release recipe (launch.release): its pieces, and the whole recipe at smoke size."""

import hashlib
import json
import os
import subprocess
import sys

import pytest

from fbjax import predict
from fbjax.core import bundle
from fbjax.data import fingerprint
from fbjax.evaluation import inference
from fbjax.jobs import release

REPO = release.REPO


def test_folder_fingerprint_hashes_names_sizes_and_contents(tmp_path):
  (tmp_path / "a").mkdir()
  (tmp_path / "a" / "x.png").write_bytes(b"abc")
  (tmp_path / "y.csv").write_bytes(b"1,2\n")
  lines = [f"a/x.png\t3\t{hashlib.sha256(b'abc').hexdigest()}",
           f"y.csv\t4\t{hashlib.sha256(b'1,2' + bytes([10])).hexdigest()}"]
  fp = fingerprint.folder_fingerprint(tmp_path)
  assert fp == {"folder": tmp_path.name, "files": 2, "bytes": 7,
                "sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest()}
  (tmp_path / "y.csv").write_bytes(b"1,3\n")            # same size, other content
  assert fingerprint.folder_fingerprint(tmp_path)["sha256"] != fp["sha256"]
  with pytest.raises(FileNotFoundError, match="no such folder"):
    fingerprint.folder_fingerprint(tmp_path / "missing")


def test_recipe_commands_fill_the_paths_and_stage2_waits_for_stage1_only_to_start():
  recipe = release.load_recipe(str(REPO / "configs" / "release.py"))
  values = release.values_of(recipe, "/data", "/w", "/w/tfds")
  cmd = release.train_command(recipe, "seg_stage2", values)
  assert cmd[:5] == ["python", "-m", "launch.train", "--config",
                     "configs/segment.py:data=mix,stage=2"]
  assert "--config.stage1_workdir=/w/seg_stage1" in cmd and cmd[-2:] == ["--workdir",
                                                                         "/w/seg_stage2"]
  assert "--config.sources.hc18.manual_dir=/data/hc18" in cmd
  assert tuple(recipe.models.seg_stage2.after) == ("seg_stage1:started",)
  assert set(recipe.models.planes.after) == {"seg_stage1", "seg_stage2"}
  planes = release.train_command(recipe, "planes", values)
  assert "seg_workdir=/w/seg_stage2" in planes[4] and "heads=planes" in planes[4]
  assert bundle.template_paths({"p": "/w/tfds/hc18", "q": ["/data/x", "/w/seg"]}, values) == {
      "p": "{data_dir}/hc18", "q": ["{real_data}/x", "{work}/seg"]}


def test_the_shipped_recipe_is_the_measured_settings():
  """The plane and abnormal runs are the benchmark's `heads=` runs, the segmenters the CPU
  budget's step counts."""
  from configs import classify

  recipe = release.load_recipe(str(REPO / "configs" / "release.py"))
  assert "total_steps=1500" in recipe.models.seg_stage1.overrides
  assert "total_steps=1200" in recipe.models.seg_stage2.overrides
  c = classify.get_config("data=real,input=aligned_head,heads=planes")
  assert c.total_steps == 5000 and c.tasks == ("plane",) and c.model.ae.widths == (16, 32, 64)
  a = classify.get_config("data=real,input=aligned_head,heads=abnormal")
  assert a.total_steps == 3000 and a.tasks == ("abnormal", "condition")
  assert tuple(a.decision_sources) == ("fba", "fpdb") and a.sources.fpdb.eval
  assert a.sources.fpdb.weight == 0 and a.sources.fpdb.label_defaults == "abnormal=0"


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.xdist_group("release_smoke")
def test_smoke_recipe_trains_packs_and_resumes(real_manual_dir, tmp_path):
  """The whole recipe at smoke size: data, five trainings, anomaly model, pack, evaluate,
  card; a second call trains nothing; the bundle loads and predicts."""
  work, out = tmp_path / "work", tmp_path / "bundle"
  env = dict(os.environ, WANDB_MODE="disabled", JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "-m", "launch.release", "--config",
         str(REPO / "configs" / "release.py") + ":smoke", "--real_data", str(real_manual_dir),
         "--work", str(work)]
  first = subprocess.run([*cmd, "--only", "train"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=1200)
  assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
  state = json.loads((work / release.STATE).read_text())
  assert set(state["train"]) == set(release.load_recipe(
      str(REPO / "configs" / "release.py:smoke")).order)
  second = subprocess.run([*cmd, "--out", str(out)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=1200)
  assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
  assert second.stdout.count("trained before") == 5
  again = json.loads((work / release.STATE).read_text())
  assert again["train"] == state["train"]           # nothing was retrained
  b = inference.load_bundle(out)
  m = b.manifest
  assert m["data"]["hc18"]["folders"][0]["files"] > 0 and len(m["trainings"]) == 5
  assert {"segmentation", "planes", "abnormal", "anomaly"} <= set(m["validation"])
  assert "shortcut" in m["validation"]["planes"] and "prototype" in m["validation"][
      "segmentation"]
  assert (out / "docs" / "README.md").read_text().startswith(f"# {m['name']}")
  rows = predict.predict_images(real_manual_dir / "hc18" / "training_set" / "010_HC.png",
                                model=out, seg_model=out, pixel_spacing_mm=0.1)
  assert rows[0]["seg_quality"] in predict.SEG_QUALITY
