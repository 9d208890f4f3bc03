"""Predict survives SIGKILL and shards: one row per file, the same rows as one clean run."""

import csv
import os
import pathlib
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from fbjax import predict
from fbjax.predict import files as predict_files
from fbjax.predict import inputs
from tests import classify_util

pytestmark = pytest.mark.xdist_group("predict_resume")
ROOT = pathlib.Path(__file__).resolve().parents[1]


def _read(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def _by_file(rows):
  return {r["file"]: r for r in rows}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return classify_util.fake_workdir(tmp_path_factory.mktemp("cls"))


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory):
  """40 large PNGs (slow enough to decode that a kill lands mid-run) and 2 bad files."""
  d = tmp_path_factory.mktemp("big")
  yy, xx = np.mgrid[0:1500, 0:2000]
  for i in range(4):
    img = ((np.sin(xx / (20 + 7 * i)) + np.cos(yy / (37 + i))) * 60 + 128).astype(np.uint8)
    data = cv2.imencode(".png", img)[1].tobytes()
    for k in range(10):
      (d / f"scan {k:02d}-{i}.png").write_bytes(data)
  (d / "broken.png").write_bytes(data[:1000])
  (d / "readme.txt").write_text("not an image")
  return d


def _launch(workdir, folder, out, *extra):
  env = dict(os.environ, PYTHONPATH=str(ROOT), WANDB_MODE="disabled", JAX_PLATFORMS="cpu")
  return subprocess.Popen(
      [sys.executable, "-m", "launch.predict", f"--workdir={workdir}", f"--input={folder}",
       f"--out={out}", "--batch_size=4", "--workers=1", "--num_overlays=3", *extra],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_run(workdir, big_folder, tmp_path):
  out = tmp_path / "killed"
  proc = _launch(workdir, big_folder, out)
  csv_path = out / "predictions.csv"
  deadline = time.monotonic() + 120
  while time.monotonic() < deadline:
    if csv_path.exists() and csv_path.read_bytes().count(b"\n") >= 3:   # header + 2 rows
      break
    assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
    time.sleep(0.005)
  assert proc.poll() is None, "the run finished before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  partial = _read(csv_path)
  partial_errors = _read(out / "errors.csv")
  assert 2 <= len(partial) < 40                   # killed mid-run, whole rows only
  assert csv_path.read_bytes().endswith(b"\n")
  again = _launch(workdir, big_folder, out)
  log = again.communicate(timeout=300)[0].decode()
  assert again.returncode == 0, log[-3000:]
  assert f"{len(partial) + len(partial_errors)} done before" in log

  ref = tmp_path / "ref"
  predict.run(workdir, None, big_folder, ref, batch_size=4, workers=1, num_overlays=3,
              progress=False, num_saliency=1, log=lambda s: None)
  rows, want = _read(out / "predictions.csv"), _read(ref / "predictions.csv")
  files = [r["file"] for r in rows]
  assert len(files) == len(set(files)) == 40      # one row per image, no duplicates
  got, exp = _by_file(rows), _by_file(want)
  assert got.keys() == exp.keys()
  for f, r in exp.items():                         # identical predictions (overlay: see below)
    assert {k: v for k, v in got[f].items() if k != "overlay"} == \
        {k: v for k, v in r.items() if k != "overlay"}, f
  errors = _read(out / "errors.csv")
  assert [pathlib.Path(e["file"]).name for e in errors] == ["broken.png"]
  summary = predict_files.read_json(out / "summary.json")
  assert summary["predicted"] == 40 and summary["errors"] == 1 and summary["skipped"] == 1
  assert summary["timing"]["resumed_after"] == len(partial) + len(partial_errors)
  # Every image the report shows has its overlay although only 3 were asked for.
  html = (out / "report.html").read_text()
  for r in rows:
    name = predict_files.overlay_name(r["file"])
    if f"overlays/{name}" in html:
      assert (out / "overlays" / name).stat().st_size > 0


def test_two_shards_and_merge_equal_one_process(workdir, tmp_path):
  d = tmp_path / "in"
  (d / "sub").mkdir(parents=True)
  rng = np.random.default_rng(1)
  for i in range(13):
    cv2.imwrite(str(d / ("sub" if i % 3 else ".") / f"im{i}.png"),
                rng.integers(0, 255, (60 + i, 90), dtype=np.uint8))
  (d / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
  (d / "notes.csv").write_text("a,b\n")
  one = tmp_path / "one"
  s1 = predict.run(workdir, None, d, one, batch_size=4, progress=False, num_saliency=2,
                   log=lambda s: None)
  two = tmp_path / "two"
  keys = [e.key for e in inputs.scan(d)]
  assert {inputs.shard_of(k, 2) for k in keys} == {0, 1}          # both shards get files
  partial = predict.run(workdir, None, d, two, batch_size=4, progress=False, num_saliency=2,
                        num_shards=2, shard_index=1, log=lambda s: None)
  assert not (two / "predictions.csv").exists()                    # shard 0 still missing
  assert partial["predicted"] < s1["predicted"]
  with pytest.raises(ValueError, match=r"shards \[0\] of 2 are not complete"):
    predict.merge(two, log=lambda s: None)
  s2 = predict.run(workdir, None, d, two, batch_size=4, progress=False, num_saliency=2,
                   num_shards=2, shard_index=0, log=lambda s: None)   # the last one merges
  for name in ("predictions.csv", "errors.csv", "skipped.csv"):
    a, b = _read(one / name), _read(two / name)
    assert sorted(map(sorted, (r.items() for r in a))) == \
        sorted(map(sorted, (r.items() for r in b))), name
  for k in ("images", "predicted", "errors", "skipped", "abnormal_flagged", "plane_counts",
            "abnormal_prob_quantiles"):
    assert s1[k] == s2[k], k
  assert (two / "report.html").exists() and len(s2["timing"]["shards"]) == 2
  s3 = predict.merge(two, log=lambda s: None)                      # explicit merge: the same
  assert s3["predicted"] == s2["predicted"] and _read(two / "predictions.csv") == \
      _read(two / "predictions.csv")


def test_appender_cuts_a_half_written_row(tmp_path):
  p = tmp_path / "x.csv"
  a = predict_files.Appender(p, ("file", "v"))
  a.append([{"file": "a b.png", "v": 1.5}, {"file": "é,\"q\".png", "v": 2.0}])
  with open(p, "ab") as f:
    f.write(b"c.png,3")                          # a write cut by SIGKILL
  a = predict_files.Appender(p, ("file", "v"))
  assert _read(p) == [{"file": "a b.png", "v": "1.5"}, {"file": "é,\"q\".png", "v": "2"}]
  done = predict_files.done_hashes([p])
  assert predict_files.is_done(done, "é,\"q\".png") and not predict_files.is_done(done, "c.png")
  with pytest.raises(ValueError, match="has the columns"):
    predict_files.Appender(p, ("file", "other"))


def test_rerun_with_another_model_setting_refuses_to_mix_rows(workdir, tmp_path):
  d = tmp_path / "in"
  d.mkdir()
  rng = np.random.default_rng(2)
  for i in range(3):
    cv2.imwrite(str(d / f"im{i}.png"), rng.integers(0, 255, (40, 60), dtype=np.uint8))
  out = tmp_path / "out"
  kw = dict(batch_size=2, progress=False, report=False, log=lambda s: None)
  predict.run(workdir, None, d, out, **kw)
  again = predict.run(workdir, None, d, out, **kw)                 # same run: nothing to redo
  assert again["predicted"] == 3 and again["timing"]["new_images"] == 0
  with pytest.raises(ValueError, match=r"holds rows of another run.*abnormal_threshold: 0.5 "
                     r"-> 0.3"):
    predict.run(workdir, None, d, out, abnormal_threshold=0.3, **kw)
  assert len(_read(out / "predictions.csv")) == 3


def test_rerun_of_a_relative_input_resumes(workdir, tmp_path, monkeypatch):
  """`--input ./in//*.png`: rows, error rows and the resume check spell paths alike, so a
  rerun predicts nothing again (the paths were once written as "in/..." but looked up
  as "./in//...")."""
  d = tmp_path / "in"
  d.mkdir()
  rng = np.random.default_rng(3)
  for i in range(3):
    cv2.imwrite(str(d / f"im{i}.png"), rng.integers(0, 255, (40, 60), dtype=np.uint8))
  (d / "bad.png").write_bytes(b"not a png")
  monkeypatch.chdir(tmp_path)
  kw = dict(batch_size=2, progress=False, report=False, log=lambda s: None)
  first = predict.run(workdir, None, "./in//*.png", "out", **kw)
  again = predict.run(workdir, None, "./in//*.png", "out", **kw)
  assert first["timing"]["new_images"] == 4 and again["timing"]["new_images"] == 0
  files = [r["file"] for r in _read(tmp_path / "out" / "predictions.csv")]
  assert sorted(files) == [f"in/im{i}.png" for i in range(3)]
  assert [r["file"] for r in _read(tmp_path / "out" / "errors.csv")] == ["in/bad.png"]


def test_top_rows_with_the_same_file_and_value_do_not_compare_rows():
  top = predict_files._Top("abnormal_prob", 2)
  for overlay in ("a.png", "b.png", "c.png"):   # the same file thrice, rows that differ
    top.push({"file": "x.png", "abnormal_prob": 0.9, "overlay": overlay})
  top.push({"file": "y.png", "abnormal_prob": 0.5})
  assert [r["file"] for r in top.rows()] == ["x.png", "x.png"]
