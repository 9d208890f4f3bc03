"""A folder as users have them: every image a row, every broken one an error, the rest skipped."""

import csv
import os
import pathlib

import cv2
import numpy as np
import pytest
from PIL import Image

from fbjax import predict
from fbjax.predict import inputs
from tests import classify_util
from tests.test_predict import _circle_segmenter

pytestmark = pytest.mark.xdist_group("predict_folder")
UNICODE = "état fœtal 胎儿 scan.png"


def _read(path):
  with open(path, newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
  d = tmp_path_factory.mktemp("zoo")
  rng = np.random.default_rng(0)
  grey = rng.integers(0, 255, (90, 120), dtype=np.uint8)
  png = cv2.imencode(".png", grey)[1].tobytes()
  cv2.imwrite(str(d / "good.png"), grey)
  cv2.imwrite(str(d / "sixteen.png"), rng.integers(0, 65535, (70, 100), dtype=np.uint16))
  cv2.imwrite(str(d / "rgba.png"), rng.integers(0, 255, (64, 80, 4), dtype=np.uint8))
  Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).convert("CMYK").save(
      d / "cmyk.jpg")
  big = np.zeros((4000, 6000), np.uint8)
  cv2.ellipse(big, (3000, 2000), (1500, 1200), 20, 0, 360, 255, 40)
  cv2.imwrite(str(d / "big 6000x4000.png"), big)
  (d / UNICODE).write_bytes(png)
  (d / "no_suffix_but_png").write_bytes(png)              # found by its content
  (d / "folder.png").mkdir()                               # a directory named like an image
  (d / "folder.png" / "inside.png").write_bytes(png)
  (d / ".hidden.png").write_bytes(png)
  # Broken ones.
  (d / "zero.png").write_bytes(b"")
  (d / "truncated.png").write_bytes(png[: len(png) // 2])
  cv2.imwrite(str(d / "tiny3x3.png"), grey[:3, :3])
  (d / "text.png").write_text("this is not a PNG\n")
  os.symlink(d / "gone.png.target", d / "dangling.png")
  # Not images.
  (d / "notes.txt").write_text("scan notes\n")
  (d / "labels.csv").write_text("file,label\ngood.png,TT\n")
  rows = {"good.png": (90, 120), "sixteen.png": (70, 100), "rgba.png": (64, 80),
          "cmyk.jpg": (60, 80), "big 6000x4000.png": (4000, 6000), UNICODE: (90, 120),
          "no_suffix_but_png": (90, 120), "folder.png/inside.png": (90, 120)}
  errors = {"zero.png": "empty file (0 bytes)",
            "truncated.png": "cannot decode PNG: truncated (no IEND chunk)",
            "tiny3x3.png": "image too small (3x3 px; at least 8 px a side)",
            "text.png": "cannot decode image (unknown format): corrupt or not an image",
            "dangling.png": f"dangling symbolic link (target '{d / 'gone.png.target'}' is "
                            "missing)",
            "folder.png": "is a directory, not an image file"}
  skipped = {".hidden.png": "hidden", "notes.txt": "not an image (.txt)",
             "labels.csv": "not an image (.csv)"}
  if os.geteuid() != 0:                   # root reads everything: no permission error to see
    (d / "locked.png").write_bytes(png)
    (d / "locked.png").chmod(0)
    errors["locked.png"] = "cannot read file (Permission denied)"
  return d, rows, errors, skipped


def test_zoo_rows_errors_and_skipped(zoo, tmp_path):
  d, want_rows, want_errors, want_skipped = zoo
  workdir = classify_util.fake_workdir(tmp_path / "cls")
  out = tmp_path / "out"
  # The zoo's pictures are noise (no skull): without the "not a fetal head" gate the
  # circle segmenter's head is measured in every one of them.
  s = predict.run(workdir, None, d, out, batch_size=4, segmenter=_circle_segmenter(),
                  pixel_spacing_mm=0.1, progress=False, num_saliency=0, num_report_images=8,
                  gate={}, log=lambda s: None)
  rel = lambda f: pathlib.Path(f).relative_to(d).as_posix()  # noqa: E731
  rows = {rel(r["file"]): r for r in _read(out / "predictions.csv")}
  assert {k: (int(r["height"]), int(r["width"])) for k, r in rows.items()} == want_rows
  assert all(r["seg_quality"] == "ok" and float(r["hc_mm"]) > 0 for r in rows.values())
  assert {rel(e["file"]): e["reason"] for e in _read(out / "errors.csv")} == want_errors
  assert {rel(e["file"]): e["reason"] for e in _read(out / "skipped.csv")} == want_skipped
  assert (s["predicted"], s["errors"], s["skipped"]) == (
      len(want_rows), len(want_errors), len(want_skipped))
  assert s["skipped_reasons"] == {"hidden": 1, "not an image": 2}
  assert UNICODE in (out / "report.html").read_text(encoding="utf-8")


def test_listing_is_streamed_and_shards_are_stable(zoo):
  d, *_ = zoo
  it = inputs.scan(d)
  assert next(it).kind in ("image", "error", "skipped")      # a generator, not a list
  keys = [e.key for e in inputs.scan(d)]
  assert len(keys) == len(set(keys))
  # The shard is a function of the path relative to the root: the same wherever it is mounted.
  assert [e.key for e in inputs.scan(d)] == [e.key for e in inputs.scan(str(d) + "/")]
  assert inputs.shard_of("sub/b.png", 7) == 2 and inputs.shard_of("sub/b.png", 1) == 0
  counts = np.bincount([inputs.shard_of(f"d{i // 100}/f{i}.png", 4) for i in range(4000)],
                       minlength=4)
  assert counts.min() > 900                                  # balanced (1000 expected each)


def test_spacing_column_is_never_guessed(tmp_path):
  p = tmp_path / "s.csv"
  p.write_text("filename,hc_mm,pixel_spacing_mm\na.png,180.0,0.12\n")
  assert predict.read_spacing_csv(p)["a.png"] == 0.12          # not the HC
  p.write_text("filename,pixel size(mm),head circumference (mm)\na.png,0.2,170\n")
  assert predict.read_spacing_csv(p)["a"] == 0.2               # HC18 as it is
  p.write_text("file,spacing_x_mm,spacing_y_mm\na.png,0.1,0.2\n")
  with pytest.raises(ValueError, match=r"2 columns could be the pixel spacing .*"
                     r"\['spacing_x_mm', 'spacing_y_mm'\].*--spacing_column"):
    predict.read_spacing_csv(p)
  assert predict.read_spacing_csv(p, "spacing_y_mm")["a.png"] == 0.2
  with pytest.raises(ValueError, match=r"no column 'mm'; the columns are"):
    predict.read_spacing_csv(p, "mm")
  p.write_text("file,hc_mm\na.png,180\n")
  with pytest.raises(ValueError, match=r"no pixel spacing \(mm\) column; the columns are "
                     r"\['file', 'hc_mm'\]"):
    predict.read_spacing_csv(p)
  p.write_text("file,pixel_spacing_mm\na.png,-1\n")
  with pytest.raises(ValueError, match=r"s.csv:2: spacing '-1' must be a positive"):
    predict.read_spacing_csv(p)


def test_missing_decision_json_is_an_error_unless_a_threshold_is_given(tmp_path):
  wd = classify_util.fake_workdir(tmp_path / "cls", abnormal_threshold=None, with_anomaly=False)
  with pytest.raises(FileNotFoundError, match=r"cls/decision.json is missing.*"
                                              r"--abnormal_threshold.*launch.calibrate"):
    predict.Predictor(wd, batch_size=2)
  said = []
  pr = predict.Predictor(wd, batch_size=2, abnormal_threshold=0.3)
  assert pr.abnormal_threshold == 0.3
  with pytest.raises(ValueError, match=r"abnormal_threshold must be in \[0, 1\]"):
    predict.check_artefacts(wd, pr.clf, None, 1.5, log=said.append)
  assert predict.check_artefacts(wd, pr.clf, None, 0.25, log=said.append) == 0.25
  assert any("no anomaly model" in s and "anomaly columns stay empty" in s for s in said)


def test_a_given_abnormal_threshold_is_on_decision_jsons_scale(tmp_path):
  """`--abnormal_threshold t` decides as decision.json holding t does: both are on the
  uncalibrated probability (launch.evaluate's scale) and move to the calibrated one."""
  import json

  import numpy as np

  from fbjax.core import metrics

  wd = classify_util.fake_workdir(tmp_path / "cls", abnormal_threshold=0.3, with_anomaly=False)
  cal = {"step": 0, "tasks": {"abnormal": {"temperature": 2.5}}}
  (tmp_path / "cls" / "calibration.json").write_text(json.dumps(cal))
  from_file = predict.Predictor(wd, batch_size=2).abnormal_threshold
  given = predict.Predictor(wd, batch_size=2, abnormal_threshold=0.3).abnormal_threshold
  p = np.array([[0.7, 0.3]])
  want = float(np.exp(np.log(p) / 2.5)[0, 1] / np.exp(np.log(p) / 2.5).sum())
  assert from_file == given == pytest.approx(want, abs=1e-9) != pytest.approx(0.3)
  assert want == pytest.approx(float(metrics.apply_temperature(p, 2.5)[0, 1]))
