"""The shipped bundle (models/fbjax_head_v1): it loads, it is checked, it predicts as shipped.

These tests need no data: the bundle is in the repository. Its outputs on real images
are pinned in tests/test_bundle_real.py.
"""

import csv
import json
import math
import shutil

import numpy as np
import pytest

from fbjax import predict
from fbjax.core import bundle
from fbjax.data import io
from fbjax.evaluation import inference
from fbjax.geometry import head_gate
from fbjax.phantom import simulator as phantom

pytestmark = pytest.mark.xdist_group("bundle")

# How far float16 storage may move the predictions against the float32 training weights
# (on the reference images the release recipe measured both on).
FLOAT16_TOLERANCE = {"ellipse_px": 1.0, "hc_rel": 0.005, "probability": 0.02,
                     "anomaly_score_rel": 0.01}


@pytest.fixture(scope="module")
def shipped():
  return inference.load_bundle(bundle.DEFAULT)


def test_loads_by_name_and_by_path_with_every_network(shipped):
  assert shipped.folder == bundle.ROOT / bundle.DEFAULT
  assert shipped.manifest["networks"] == list(bundle.NETWORKS)
  by_path = inference.load(str(bundle.ROOT / bundle.DEFAULT), kind="segmenter")
  assert by_path.two_stage and by_path.stage1().size == tuple(
      shipped.segmenter.stage1().size)
  clf = inference.load(bundle.DEFAULT, kind="classifier")
  assert clf.tasks == ("plane", "abnormal", "condition")
  assert clf.config.input.kind == "aligned_head" and clf.size == (96, 128)
  assert clf.class_names("plane") == ("TT", "TC", "TV", "other")
  assert clf.decision["abnormal_threshold"] == shipped.classifier.decision["abnormal_threshold"]
  assert set(clf.calibration["tasks"]) == {"plane", "abnormal", "condition"}
  assert clf.anomaly is not None and clf.anomaly.primary == "mahalanobis"
  with pytest.raises(ValueError, match="shipped bundle"):
    inference.load(bundle.DEFAULT, step=10, kind="segmenter")


def test_bundle_is_small_and_lists_every_file(shipped):
  files = shipped.manifest["files"]
  on_disk = {p.relative_to(shipped.folder).as_posix() for p in shipped.folder.rglob("*")
             if p.is_file() and p.name != bundle.MANIFEST}
  assert set(files) == on_disk
  assert sum(r["bytes"] for r in files.values()) <= 25e6
  for net in bundle.NETWORKS:
    assert f"models/{net}.msgpack" in files and f"configs/{net}.json" in files
  assert "docs/README.md" in files and "reference_outputs.json" in files


def test_float16_storage_stays_within_the_stated_tolerance(shipped):
  """The recipe predicted the reference images with the float16 bundle and with the float32
  training weights: the differences are bounded, and the manifest records the same."""
  ref = json.loads((shipped.folder / "reference_outputs.json").read_text())
  a, b = ref["images"], ref["float32"]
  assert len(a) == len(b) >= 6
  flips = 0
  for r16, r32 in zip(a, b, strict=True):
    assert r16["file"] == r32["file"]
    if (r16["ellipse"] is None) != (r32["ellipse"] is None):
      # The head gate decided otherwise: allowed only for a ring contrast at its threshold.
      flips += 1
      reason = r16["no_head_reason"] or r32["no_head_reason"]
      value = float(reason.split()[1])
      gap = abs(value - head_gate.THRESHOLDS["ring_contrast"])
      assert reason.startswith("ring_contrast") and gap < 0.005, reason
      continue
    assert r16["seg_quality"] == r32["seg_quality"]
    if r32["ellipse"] is not None:
      assert np.max(np.abs(np.subtract(r16["ellipse"][:4], r32["ellipse"][:4]))) \
          <= FLOAT16_TOLERANCE["ellipse_px"]
      assert abs(r16["hc_px"] - r32["hc_px"]) / r32["hc_px"] <= FLOAT16_TOLERANCE["hc_rel"]
    for t, p in r32["probabilities"].items():
      for k, v in p.items():
        assert abs(r16["probabilities"][t][k] - v) <= FLOAT16_TOLERANCE["probability"], (t, k)
  assert flips <= 1
  recorded = shipped.manifest["float16"]
  assert len(recorded["gate_flips"]) == flips
  for k, tol in FLOAT16_TOLERANCE.items():
    assert recorded[k] <= tol, k


def _copy(tmp_path):
  dst = tmp_path / "b"
  shutil.copytree(bundle.ROOT / bundle.DEFAULT, dst)
  return dst


def test_a_missing_file_is_named(tmp_path):
  b = _copy(tmp_path)
  (b / "models" / "planes.msgpack").unlink()
  with pytest.raises(bundle.BundleError, match=r"models/planes\.msgpack: missing"):
    inference.load_bundle(b)


def test_a_changed_file_is_named(tmp_path):
  b = _copy(tmp_path)
  p = b / "decision" / "abnormal.json"
  d = json.loads(p.read_text())
  d["abnormal_threshold"] = 0.5
  p.write_text(json.dumps(d))
  with pytest.raises(bundle.BundleError, match=r"decision/abnormal\.json: .*(bytes|SHA-256)"):
    inference.load_bundle(b)
  # Same size, other bytes: the checksum says so.
  q = b / "models" / "seg_stage1.msgpack"
  data = bytearray(q.read_bytes())
  data[-1] ^= 1
  shutil.copy(bundle.ROOT / bundle.DEFAULT / "decision" / "abnormal.json", p)
  q.write_bytes(bytes(data))
  with pytest.raises(bundle.BundleError, match=r"seg_stage1\.msgpack: SHA-256 differs"):
    inference.load_bundle(b)


def test_versions_and_format_must_match(tmp_path):
  b = _copy(tmp_path)
  meta = json.loads((b / "metadata.json").read_text())
  meta["version"] = "9.9.9"
  (b / "metadata.json").write_text(json.dumps(meta))
  with pytest.raises(bundle.BundleError, match="metadata.json: version '9.9.9' differs"):
    bundle.verify(b)
  b2 = tmp_path / "b2"
  shutil.copytree(bundle.ROOT / bundle.DEFAULT, b2)
  man = json.loads((b2 / "manifest.json").read_text())
  man["format"] = bundle.FORMAT + 1
  (b2 / "manifest.json").write_text(json.dumps(man))
  with pytest.raises(bundle.BundleError, match="bundle format"):
    inference.load_bundle(b2)
  (b2 / "manifest.json").unlink()
  with pytest.raises(bundle.BundleError, match="manifest.json: missing"):
    inference.load_bundle(b2)


def test_not_a_bundle_is_not_taken_for_one(tmp_path):
  assert bundle.resolve(tmp_path) is None
  with pytest.raises(FileNotFoundError, match="not a trained fbjax workdir"):
    inference.load(tmp_path)


@pytest.fixture(scope="module")
def phantom_pngs(tmp_path_factory):
  """A folder of a few PNG exports of the phantom (what a user without data has), a
  non-image file and a broken PNG. Returns (folder, {name: truth})."""
  d = tmp_path_factory.mktemp("scans")
  truth = {}
  for i in range(3):
    ex = phantom.simulate(7, i, size=384, plane="trans-thalamic", condition="normal",
                          overlays=False)
    io.write_png(d / f"scan_{i}.png", ex["image"])
    truth[f"scan_{i}.png"] = ex
  with open(d / "pixel_size.csv", "w") as f:
    f.write("filename,pixel size(mm)\n" + "".join(
        f"{n},{ex['pixel_spacing_mm']}\n" for n, ex in truth.items()))
  (d / "notes.txt").write_text("not an image")
  (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
  return d, truth


def test_predict_runs_the_shipped_bundle_by_default(phantom_pngs, tmp_path):
  """Both stages, the aligned-head classifiers, calibrated, the anomaly model; CSV,
  errors, overlays and the report; HC near the phantom's truth."""
  folder, truth = phantom_pngs
  out = tmp_path / "out"
  summary = predict.run(bundle.DEFAULT, bundle.DEFAULT, folder, out,
                        spacing_csv=folder / "pixel_size.csv", batch_size=4, progress=False,
                        num_saliency=1)
  rows = list(csv.DictReader(open(out / "predictions.csv")))
  assert sorted(r["file"].rsplit("/", 1)[1] for r in rows) == [f"scan_{i}.png"
                                                                 for i in range(3)]
  errors = list(csv.DictReader(open(out / "errors.csv")))
  assert [e["file"].rsplit("/", 1)[1] for e in errors] == ["broken.png"]
  skipped = list(csv.DictReader(open(out / "skipped.csv")))
  assert sorted(e["file"].rsplit("/", 1)[1] for e in skipped) == ["notes.txt",
                                                                    "pixel_size.csv"]
  assert (out / "report.html").exists() and summary["predicted"] == 3
  for r in rows:
    assert (out / "overlays" / r["overlay"]).exists()
    ex = truth[r["file"].rsplit("/", 1)[1]]
    assert r["seg_quality"] == "ok"
    assert abs(float(r["hc_mm"]) - ex["hc_mm"]) < 0.05 * ex["hc_mm"]   # measured: < 1 %
    assert r["plane"] in ("TT", "TC", "TV", "other")
    assert 0 <= float(r["abnormal_prob"]) <= 1 and math.isfinite(float(r["anomaly_score"]))
  ident = json.loads((out / "identity.json").read_text())
  assert ident["workdir_checkpoints"] == [bundle.identity(bundle.ROOT / bundle.DEFAULT)]


def test_python_api_gives_the_rows_for_arrays_and_files(phantom_pngs):
  path = phantom_pngs[0] / "scan_0.png"
  img = io.read_image_uint8(path)
  by_file, by_array = predict.predict_images([path, img], pixel_spacing_mm=0.15)
  assert by_file["seg_quality"] == "ok" and by_file["ellipse"] is not None
  assert by_array["file"] == "<array 1>"
  for k in ("seg_quality", "hc_mm", "plane", "abnormal_prob", "anomaly_score"):
    a, b = by_file[k], by_array[k]
    assert a == pytest.approx(b, rel=1e-6, nan_ok=True) if isinstance(a, float) else a == b
  if by_file["ellipse"] is not None:
    np.testing.assert_allclose(by_file["ellipse"], by_array["ellipse"], rtol=1e-6)
    p = by_file["probabilities"]["plane"]
    assert sum(p.values()) == pytest.approx(1.0, abs=1e-5)
    assert max(p, key=p.get) == by_file["plane"]
  rgb = np.repeat(img[..., None], 3, axis=2)
  (as_rgb,) = predict.predict_images(rgb, pixel_spacing_mm=0.15)
  assert as_rgb["seg_quality"] == by_file["seg_quality"]
  with pytest.raises(io.ImageReadError, match="outside"):
    predict.predict_images(np.full((64, 64), 2.0, np.float32))
