"""launch/predict's library: every file gets a row or an error row; biometry maps back."""

import csv
import json
import math

import cv2
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from fbjax import predict
from fbjax.evaluation import networks
from tests import classify_util

pytestmark = pytest.mark.xdist_group("predict")   # shares the module's fixtures

SEG_SIZE = (32, 48)
RADIUS = 5.0   # head circle on the segmentation grid (grid pixels)


def _circle_segmenter():
  """Head = a disc of radius RADIUS at the grid centre (exact 0.5 iso-line); skull, brain."""
  h, w = SEG_SIZE
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  d = np.sqrt((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2)
  head = special.expit((RADIUS - d) * 4)
  brain = special.expit((RADIUS - 1.5 - d) * 4)
  probs = jnp.asarray(np.stack([head, head - brain, brain], -1))

  def fn(images):
    return jnp.broadcast_to(probs, (images.shape[0], *probs.shape))

  return predict.Segmenter(size=SEG_SIZE, predict=fn, method="direct")


def _draw_skull(arr):
  """A bright ring (a skull) where `_circle_segmenter` puts the head, so the gate sees one."""
  h, w = arr.shape[:2]
  r = RADIUS / min(SEG_SIZE[0] / h, SEG_SIZE[1] / w)
  top = np.iinfo(arr.dtype).max
  cv2.circle(arr, (round((w - 1) / 2), round((h - 1) / 2)), round(0.94 * r),
             (top,) * (arr.shape[2] if arr.ndim == 3 else 1), max(1, round(0.1 * r)))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  d = tmp_path_factory.mktemp("inputs")
  rng = np.random.default_rng(0)
  good = {"a_grey.png": (rng.uniform(0, 255, (100, 200))).astype(np.uint8),
          "b_rgb.jpg": rng.uniform(0, 255, (150, 100, 3)).astype(np.uint8),
          "c_sixteen.png": rng.uniform(0, 65535, (90, 120)).astype(np.uint16),
          "d_rgba.png": rng.uniform(0, 255, (64, 64, 4)).astype(np.uint8),
          "sub/e_grey.png": rng.uniform(0, 255, (80, 80)).astype(np.uint8)}
  for name, arr in good.items():
    _draw_skull(arr)
    (d / name).parent.mkdir(exist_ok=True)
    assert cv2.imwrite(str(d / name), arr)
  data = (d / "a_grey.png").read_bytes()
  (d / "corrupt.png").write_bytes(data[: len(data) // 2])
  (d / "empty.jpg").write_bytes(b"")
  (d / "notes.txt").write_text("not an image\n")
  (d / "spacing.csv").write_text("filename,pixel size(mm)\na_grey.png,1.0\nb_rgb.jpg,0.5\n")
  return d, good


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return classify_util.fake_workdir(tmp_path_factory.mktemp("cls"))


def _read(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def test_every_file_gets_a_row_or_an_error_and_biometry_maps_back(folder, workdir, tmp_path):
  d, good = folder
  out = tmp_path / "out"
  spacing = predict.read_spacing_csv(d / "spacing.csv")
  summary = predict.run(workdir, None, d, out, spacing_csv=str(d / "spacing.csv"),
                        batch_size=4, segmenter=_circle_segmenter(), progress=False,
                        num_saliency=1, num_report_images=3, log=lambda s: None)
  rows, errors = _read(out / "predictions.csv"), _read(out / "errors.csv")
  skipped = _read(out / "skipped.csv")
  files = sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())
  got = sorted([r["file"] for r in rows + errors + skipped])
  assert got == sorted(str(d / f) for f in files)            # every file, exactly once
  assert {r["file"] for r in rows} == {str(d / f) for f in good}
  reasons = {e["file"].rsplit("/", 1)[1]: e["reason"] for e in errors}
  assert set(reasons) == {"corrupt.png", "empty.jpg"}
  assert "truncated" in reasons["corrupt.png"] and "empty" in reasons["empty.jpg"]
  assert {s["file"].rsplit("/", 1)[1]: s["reason"] for s in skipped} == {
      "notes.txt": "not an image (.txt)", "spacing.csv": "not an image (.csv)"}
  assert summary["predicted"] == len(good) and summary["errors"] == 2
  assert summary["skipped"] == 2 and summary["images"] == len(good) + 2
  for r in rows:
    name = r["file"].split("/")[-1]
    h, w = (int(r["height"]), int(r["width"]))
    assert (h, w) == good[[k for k in good if k.endswith(name)][0]].shape[:2]
    # The grid circle of radius RADIUS maps back to RADIUS / scale original pixels.
    scale = min(SEG_SIZE[0] / h, SEG_SIZE[1] / w)
    want_px = 2 * math.pi * RADIUS / scale
    assert float(r["hc_px"]) == pytest.approx(want_px, rel=0.01)
    assert float(r["bpd_px"]) == pytest.approx(2 * RADIUS / scale, rel=0.01)
    if name in spacing:
      assert float(r["hc_mm"]) == pytest.approx(float(r["hc_px"]) * spacing[name], rel=1e-4)
    else:
      assert r["hc_mm"] == ""
    assert r["seg_quality"] == "ok" and float(r["ellipse_dice"]) > 0.95
    assert r["plane"] in ("TT", "TC", "TV", "other")
    assert 0 <= float(r["abnormal_prob"]) <= 1 and r["abnormal"] in ("0", "1")
    assert float(r["anomaly_score"]) > 0 and r["anomaly"] in ("0", "1")
    assert (out / "overlays" / r["overlay"]).exists()
  report = (out / "report.html").read_text()
  assert "Most abnormal" in report and "occlusion" in report and "corrupt.png" in report


def test_fixed_batch_shape_compiles_once(folder, workdir, tmp_path):
  d, _ = folder
  p = predict.Predictor(workdir, segmenter=_circle_segmenter(), batch_size=3)
  rows = [r for kind, r in predict.iterate(p, predict.list_inputs(d)) if kind == "row"]
  assert len(rows) == 5                       # 5 good images in batches of 3: one padded
  assert p._run._cache_size() == 1  # noqa: SLF001


def test_inputs_glob_and_spacing_errors(folder, tmp_path):
  d, _ = folder
  assert [p.name for p in predict.list_inputs(str(d / "*.png"))] == [
      "a_grey.png", "c_sixteen.png", "corrupt.png", "d_rgba.png"]
  with pytest.raises(FileNotFoundError, match="no such folder"):
    predict.list_inputs(str(tmp_path / "nothing*.png"))
  bad = tmp_path / "bad.csv"
  bad.write_text("name,value\nx,1\n")
  with pytest.raises(ValueError, match=r"no pixel spacing \(mm\) column; the columns are "
                     r"\['name', 'value'\]"):
    predict.read_spacing_csv(bad)
  bad.write_text("file,spacing_mm\nx.png,abc\n")
  with pytest.raises(ValueError, match="not a number"):
    predict.read_spacing_csv(bad)
  assert predict.spacing_for(d / "x.png", None, 0.3) == 0.3
  assert math.isnan(predict.spacing_for(d / "x.png", {}, None))


def test_segmenter_mirror_averaging_can_be_switched(folder, workdir, tmp_path):
  """seg_tta: the workdir's eval_flip (on for runlocal) or on / off; a chosen value is
  part of the run's identity, so a rerun with the other one cannot mix rows."""
  d, _ = folder
  seg_dir = classify_util.fake_seg_workdir(tmp_path / "seg")
  x = np.random.default_rng(0).uniform(size=(2, 32, 48)).astype(np.float32)
  mirror = lambda seg: np.asarray(seg.predict(x[:, :, ::-1]))[:, :, ::-1]  # noqa: E731
  default, on, off = (predict.load_segmenter(seg_dir, tta=t) for t in (None, True, False))
  np.testing.assert_allclose(np.asarray(default.predict(x)), np.asarray(on.predict(x)), atol=1e-6)
  # Averaged over the mirror image: exactly mirror-equivariant; once (random
  # weights) it is not, and it is half of the averaged output's two passes.
  np.testing.assert_allclose(mirror(on), np.asarray(on.predict(x)), atol=1e-5)
  assert not np.allclose(mirror(off), np.asarray(off.predict(x)), atol=1e-3)
  np.testing.assert_allclose(np.asarray(on.predict(x)),
                             0.5 * (np.asarray(off.predict(x)) + mirror(off)), atol=1e-5)
  out = tmp_path / "out"
  kw = dict(pixel_spacing_mm=0.1, batch_size=2, progress=False, report=False,
            log=lambda s: None)
  predict.run(workdir, seg_dir, d / "sub", out, seg_tta=False, **kw)
  ident = json.loads(next(out.rglob("identity.json")).read_text())
  assert ident["segmenter_tta"] is False
  with pytest.raises(ValueError, match="segmenter_tta: False -> True"):
    predict.run(workdir, seg_dir, d / "sub", out, seg_tta=True, **kw)


def test_segmentation_workdir_plugs_in(folder, workdir, tmp_path):
  d, good = folder
  seg_dir = classify_util.fake_seg_workdir(tmp_path / "seg")
  seg = predict.load_segmenter(seg_dir)
  assert seg.size == (32, 48)
  out = tmp_path / "out"
  s = predict.run(workdir, seg_dir, d / "sub", out, pixel_spacing_mm=0.1, batch_size=2,
                  progress=False, report=False, log=lambda s: None)
  rows = _read(out / "predictions.csv")
  assert s["predicted"] == len(rows) == 1
  assert rows[0]["seg_quality"] in predict.SEG_QUALITY
  assert rows[0]["pixel_spacing_mm"] == "0.1"


def test_images_the_spacing_csv_lacks_are_said(folder, workdir, tmp_path):
  """Three of the five images have no row in the CSV: said in the log and in run.json,
  and their mm columns stay empty (no silent NaN)."""
  import json

  d, good = folder
  said = []
  predict.run(workdir, None, d, tmp_path / "out", spacing_csv=str(d / "spacing.csv"),
              batch_size=4, segmenter=_circle_segmenter(), progress=False, report=False,
              log=said.append)
  assert any("3 images have no row in" in s and "mm columns are empty" in s for s in said)
  assert json.loads((tmp_path / "out" / "run.json").read_text())["not_in_spacing_csv"] == 3
  rows = {r["file"].rsplit("/", 1)[1]: r for r in _read(tmp_path / "out" / "predictions.csv")}
  assert float(rows["a_grey.png"]["pixel_spacing_mm"]) == 1.0
  assert rows["c_sixteen.png"]["pixel_spacing_mm"] == "" and rows["c_sixteen.png"]["hc_mm"] == ""


def test_rows_hold_each_images_own_network_outputs(folder, workdir, tmp_path):
  """Each row of predictions.csv holds what the networks give for that row's image,
  recomputed here one image at a time: the classifier on the letterboxed image, the
  anomaly model's scores, the decisions at their thresholds. A scrambled column fails."""
  import jax.numpy as jnp

  from fbjax.data import io
  from fbjax.evaluation import anomaly, inference
  from fbjax.geometry import preprocess

  d, good = folder
  out = tmp_path / "out"
  predict.run(workdir, None, d, out, batch_size=2, segmenter=_circle_segmenter(),
              pixel_spacing_mm=0.5, progress=False, report=False, log=lambda s: None)
  rows = _read(out / "predictions.csv")
  assert len(rows) == len(good)
  clf = inference.load(workdir, kind="classifier")
  fn = clf.make_predict()
  score = anomaly.make_score_fn(clf.anomaly.ae)
  threshold = float(clf.decision["abnormal_threshold"])
  planes = networks.class_names(clf.config, "plane")
  seen = set()
  for r in rows:
    img = io.read_image(r["file"])
    if r["seg_quality"] == "no_head":       # no head: no classifier answer in the row
      assert r["abnormal_prob"] == r["plane"] == r["abnormal"] == ""
      continue
    grid, _ = preprocess.letterbox(img, tuple(clf.size))
    p = {t: np.asarray(v)[0] for t, v in fn(jnp.asarray(grid[None])).items()
         if t != "features"}
    assert float(r["abnormal_prob"]) == pytest.approx(float(p["abnormal"][1]), abs=1e-5)
    assert int(r["abnormal"]) == int(p["abnormal"][1] > threshold)
    assert r["plane"] == planes[int(np.argmax(p["plane"]))]
    assert float(r["plane_prob"]) == pytest.approx(float(p["plane"].max()), abs=1e-5)
    ag, _ = preprocess.letterbox(img, tuple(clf.anomaly.ae.size))
    s = clf.anomaly.scores(score(jnp.asarray(ag[None])))
    primary = clf.anomaly.primary
    assert float(r["anomaly_score"]) == pytest.approx(float(s[primary][0]), rel=1e-4)
    assert float(r["anomaly_recon_error"]) == pytest.approx(float(s["recon"][0]), rel=1e-4)
    assert int(r["anomaly"]) == int(s[primary][0] > clf.anomaly.thresholds[primary])
    seen.add(round(float(r["abnormal_prob"]), 6))
  assert len(seen) >= 3         # the images differ, so a shuffled column would show
