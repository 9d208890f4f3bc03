"""launch.predict with a classifier of the aligned head: the crops it reads, what it ignores."""

import csv

import cv2
import jax.numpy as jnp
import numpy as np
import pytest

from fbjax import predict
from fbjax.data import io
from fbjax.evaluation import inference, networks
from fbjax.geometry import align
from tests import classify_util
from tests.test_predict import RADIUS, SEG_SIZE, _circle_segmenter, _draw_skull

pytestmark = pytest.mark.xdist_group("predict")

SIZE = (24, 32)


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
  aligned = classify_util.fake_workdir(tmp_path_factory.mktemp("aligned"),
                                       classify_util.aligned_config(SIZE), with_anomaly=False)
  whole = classify_util.fake_workdir(tmp_path_factory.mktemp("whole"),
                                     classify_util.tiny_config(SIZE), with_anomaly=False)
  return aligned, whole


@pytest.fixture(scope="module")
def images(tmp_path_factory):
  """A speckled head with a skull; the same with a caption and a border far from the head;
  a blank picture."""
  d = tmp_path_factory.mktemp("aligned_in")
  rng = np.random.default_rng(1)
  head = cv2.GaussianBlur(rng.uniform(40, 160, (300, 400)).astype(np.uint8), (0, 0), 2)
  _draw_skull(head)
  cv2.imwrite(str(d / "head.png"), head)
  marked = head.copy()
  marked[:, :12] = 255                                 # a bright sector border, left
  cv2.putText(marked, "GA 22w", (300, 290), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 2)
  cv2.imwrite(str(d / "marked.png"), marked)
  cv2.imwrite(str(d / "blank.png"), np.zeros((300, 400), np.uint8))
  return d


def _rows(predictor, paths, **kw):
  return {r["file"].rsplit("/", 1)[1]: r for kind, r in predict.iterate(predictor, paths, **kw)}


def test_probabilities_are_the_mean_over_both_aligned_crops(workdirs, images):
  p = predict.Predictor(workdirs[0], segmenter=_circle_segmenter(), batch_size=2)
  assert p.input == "aligned_head" and p.sizes == [SEG_SIZE]    # no letterbox for the classifier
  rows = _rows(p, [images / "head.png", images / "marked.png", images / "blank.png"])
  assert p._cls._cache_size() == 1  # noqa: SLF001 (two batches, one compilation)
  r = rows["head.png"]
  assert r["seg_quality"] == "ok"
  # The ellipse is the segmenter's circle mapped to original pixels.
  img = io.read_image(images / "head.png")
  scale = min(SEG_SIZE[0] / 300, SEG_SIZE[1] / 400)
  e = align.Ellipse(199.5, 149.5, RADIUS / scale, RADIUS / scale, 0.0)
  assert r["bpd_px"] == pytest.approx(2 * e.a, rel=0.01)
  # Independently: both canonical crops of the original image, the classifier, the mean.
  item = p.prepare(images / "head.png")
  probs = np.asarray(_circle_segmenter().predict(jnp.zeros((1, *SEG_SIZE)))[0])
  fitted = p.head_of(item, probs)["_ellipse"]
  crops = np.stack([align.aligned_head(img, fitted, size=SIZE, head_fraction=0.8, margin=0.08,
                                       flip=f)[0] for f in (False, True)])
  np.testing.assert_allclose(crops[1], crops[0][::-1, ::-1], atol=1e-5)   # 180 degrees
  out = inference.load(workdirs[0]).make_predict()(jnp.asarray(crops))
  want = {t: np.asarray(v).mean(0) for t, v in out.items() if t != "features"}
  assert r["abnormal_prob"] == pytest.approx(float(want["abnormal"][1]), abs=1e-5)
  assert r["plane"] == networks.class_names(p.clf.config, "plane")[int(np.argmax(
      want["plane"]))]
  assert r["plane_prob"] == pytest.approx(float(want["plane"].max()), abs=1e-5)
  # The classifier never sees what lies outside the head: a border and a caption change
  # nothing, where the same network on the whole image changes its answer.
  m = rows["marked.png"]
  assert m["abnormal_prob"] == pytest.approx(r["abnormal_prob"], abs=1e-6)
  assert m["plane_prob"] == pytest.approx(r["plane_prob"], abs=1e-6)
  q = predict.Predictor(workdirs[1], segmenter=_circle_segmenter(), batch_size=2)
  whole = _rows(q, [images / "head.png", images / "marked.png"])
  assert abs(whole["head.png"]["abnormal_prob"] - whole["marked.png"]["abnormal_prob"]) > 1e-4
  # No head: no crop, no answer.
  b = rows["blank.png"]
  assert b["seg_quality"] == "no_head" and b["plane"] == "" and np.isnan(b["abnormal_prob"])


def test_overlay_shows_the_crop_and_the_report_links_it(workdirs, images, tmp_path):
  out = tmp_path / "out"
  predict.run(workdirs[0], None, images, out, segmenter=_circle_segmenter(), batch_size=2,
              pixel_spacing_mm=0.5, num_report_images=3, num_saliency=1, progress=False,
              log=lambda s: None)
  with open(out / "predictions.csv", newline="") as f:
    rows = {r["file"].rsplit("/", 1)[1]: r for r in csv.DictReader(f)}
  name = rows["head.png"]["overlay"]
  crop = cv2.imread(str(out / "crops" / name), cv2.IMREAD_GRAYSCALE)
  # The crop picture: the classifier's input at >= 96 px high, in a 1-px white frame.
  assert crop.shape == (96 + 2, 128 + 2)
  assert (crop[0] == 255).all() and (crop[:, -1] == 255).all()
  overlay = cv2.imread(str(out / "overlays" / name))
  assert overlay.shape[:2] == (300, 400)
  # Bottom right: the crop a third of the overlay high (100 px, 133 wide), framed.
  inset = overlay[300 - 102:, 400 - 135:]
  assert (inset[0] == 255).all() and (inset[:, 0] == 255).all()
  assert inset[1:-1, 1:-1].std() > 5
  assert not (out / "crops" / rows["blank.png"]["overlay"]).exists()
  assert rows["blank.png"]["no_head_reason"].startswith("spread")
  report = (out / "report.html").read_text()
  assert f'src="crops/{name}"' in report


def test_aligned_classifier_needs_a_segmenter(workdirs, tmp_path):
  with pytest.raises(ValueError, match="aligned head.*--seg_workdir"):
    predict.Predictor(workdirs[0])
  c = classify_util.aligned_config(SIZE)
  with c.input.unlocked():
    c.input.flip = True          # not an argument of the crop
  bad = classify_util.fake_workdir(tmp_path / "bad", c, with_anomaly=False)
  with pytest.raises(ValueError, match=r"config.json: unknown input arguments \['flip'\]"):
    predict.Predictor(bad, segmenter=_circle_segmenter())


def test_calibration_temperature_scales_probabilities_and_keeps_decisions(workdirs, images,
                                                                          tmp_path):
  """calibration.json's temperatures change the probabilities predict writes as
  softmax(log p / T) does, and the abnormal decisions not at all (the threshold of
  decision.json is carried onto the calibrated scale). A config recording the segmenter
  of its training crops (`input.seg_workdir`) reads the same."""
  import json
  import shutil

  paths = [images / "head.png", images / "marked.png"]
  plain = predict.Predictor(workdirs[0], segmenter=_circle_segmenter(), batch_size=2)
  assert plain.temperatures == {}
  raw = _rows(plain, paths)
  calibrated_dir = tmp_path / "calibrated"
  shutil.copytree(workdirs[0], calibrated_dir)
  temps = {"plane": 0.5, "abnormal": 2.0}
  (calibrated_dir / "calibration.json").write_text(json.dumps(
      {"step": 0, "tasks": {t: {"temperature": v} for t, v in temps.items()}}))
  cfg = json.loads((calibrated_dir / "config.json").read_text())
  cfg["input"]["seg_workdir"] = "/somewhere/seg"
  (calibrated_dir / "config.json").write_text(json.dumps(cfg))
  cal = predict.Predictor(calibrated_dir, segmenter=_circle_segmenter(), batch_size=2)
  assert cal.temperatures == temps
  # The threshold 0.5 stays 0.5 under any temperature (binary softmax of equal logits).
  assert cal.abnormal_threshold == pytest.approx(0.5)
  got = _rows(cal, paths)
  for name, r in raw.items():
    p = float(r["abnormal_prob"])
    q = p ** 0.5 / (p ** 0.5 + (1 - p) ** 0.5)          # T = 2 on two classes, by hand
    assert float(got[name]["abnormal_prob"]) == pytest.approx(q, abs=1e-5)
    assert got[name]["abnormal"] == r["abnormal"]
    assert got[name]["plane"] == r["plane"]             # the argmax does not move
    assert float(got[name]["plane_prob"]) >= float(r["plane_prob"]) - 1e-6  # T < 1 sharpens


def test_decision_threshold_moves_onto_the_calibrated_scale(workdirs, tmp_path):
  import json
  import shutil

  d = tmp_path / "w"
  shutil.copytree(workdirs[0], d)
  (d / "decision.json").write_text(json.dumps({"abnormal_threshold": 0.8}))
  (d / "calibration.json").write_text(json.dumps(
      {"tasks": {"abnormal": {"temperature": 2.0}}}))
  p = predict.Predictor(d, segmenter=_circle_segmenter(), batch_size=2)
  t = 0.8 ** 0.5 / (0.8 ** 0.5 + 0.2 ** 0.5)
  assert p.abnormal_threshold == pytest.approx(t)
  (d / "calibration.json").write_text(json.dumps({"tasks": {"abnormal": {"temperature": 0}}}))
  with pytest.raises(ValueError, match="calibration.json.*finite and > 0"):
    predict.Predictor(d, segmenter=_circle_segmenter(), batch_size=2)


def test_the_segmenter_must_be_the_one_the_training_crops_came_from(workdirs, tmp_path):
  """`--seg_workdir` is compared with the classifier's recorded `input.seg_workdir` (a
  bundle's: the bundle itself); another one stops naming both, unless asked for."""
  import json
  import shutil

  from fbjax.core import bundle

  wd = tmp_path / "cls"
  shutil.copytree(workdirs[0], wd)
  (tmp_path / "seg_a").mkdir()
  (tmp_path / "seg_b").mkdir()
  cfg = json.loads((wd / "config.json").read_text())
  cfg["input"]["seg_workdir"] = "../seg_a"          # relative to the classifier's workdir
  (wd / "config.json").write_text(json.dumps(cfg))
  clf = inference.load(wd, kind="classifier")
  predict.check_segmenter(str(wd), clf, str(tmp_path / "seg_a"))
  with pytest.raises(ValueError, match=r"cut around the ellipses of .*seg_a .*"
                                       r"--seg_workdir is .*seg_b"):
    predict.check_segmenter(str(wd), clf, str(tmp_path / "seg_b"))
  # Nothing recorded (mask crops only) or a segmenter object: nothing to compare.
  predict.check_segmenter(str(workdirs[0]), inference.load(workdirs[0]), str(tmp_path / "seg_b"))
  predict.check_segmenter(str(wd), clf, None)
  shipped = inference.load(bundle.DEFAULT, kind="classifier")
  predict.check_segmenter(bundle.DEFAULT, shipped, bundle.DEFAULT)
  with pytest.raises(ValueError, match="fbjax_head_v1.*--seg_workdir is .*seg_a"):
    predict.check_segmenter(bundle.DEFAULT, shipped, str(tmp_path / "seg_a"))


def test_a_segmenter_run_unlike_training_is_said(workdirs, tmp_path, caplog):
  """Mirror averaging or stages other than the segmentation workdir's own give other
  heads than training's ellipse table (which uses its own): the predictor says so."""
  import json
  import shutil

  from fbjax.evaluation import heads

  seg = classify_util.fake_seg_workdir(tmp_path / "seg")
  own = bool(inference.load(seg, kind="segmenter").config.get("eval_flip", False))
  assert heads.load_segmenter(seg).not_as_trained == ""
  assert heads.load_segmenter(seg, tta=own).not_as_trained == ""
  other = heads.load_segmenter(seg, tta=not own)
  assert other.not_as_trained.startswith(f"mirror averaging {'off' if own else 'on'}")
  with pytest.raises(ValueError, match="single-stage"):
    heads.load_segmenter(seg, stages=2)
  wd = tmp_path / "cls"
  shutil.copytree(workdirs[0], wd)
  cfg = json.loads((wd / "config.json").read_text())
  cfg["input"]["seg_workdir"] = str(seg)
  (wd / "config.json").write_text(json.dumps(cfg))
  with caplog.at_level("WARNING"):
    predict.Predictor(str(wd), str(seg), batch_size=2)
  assert "training crops" not in caplog.text
  with caplog.at_level("WARNING"):
    predict.Predictor(str(wd), str(seg), batch_size=2, seg_tta=not own)
  assert "the segmenter runs with mirror averaging" in caplog.text
