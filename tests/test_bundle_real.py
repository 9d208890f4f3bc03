"""The shipped bundle on real images: its outputs are pinned, its recorded metrics re-measured.

`reference_outputs.json` holds what the bundle predicted, when the release recipe
packed it, on fixed validation images of `$FBJAX_REAL_DATA` (HC18 heads of four
sizes, both FETAL_PLANES_DB layouts, a normal and an abnormal image of the
abnormalities set). Any change to reading, letterboxing, either segmentation
stage, the ellipse fit, the head gate, the aligned crop, the classifiers or the
calibration that moves these outputs beyond `TOLERANCE` fails here: a deliberate
change then needs a new bundle version.
"""

import json
import math

import numpy as np
import pytest

from fbjax import predict
from fbjax.core import bundle
from fbjax.evaluation import bundle_eval, head_tables, inference

pytestmark = [pytest.mark.real_data, pytest.mark.slow, pytest.mark.xdist_group("bundle_real")]

# The same code on the same machine reproduces these to float rounding; the bounds allow
# for another CPU's float order, and are far below any change of geometry (a crop moved by
# a pixel moves an ellipse by more than 0.05 px and the probabilities by more than 1e-3).
TOLERANCE = {"ellipse_px": 0.05, "hc_rel": 1e-4, "probability": 2e-3, "anomaly_rel": 1e-3}


@pytest.fixture(scope="module")
def shipped():
  return inference.load_bundle(bundle.DEFAULT)


@pytest.fixture(scope="module")
def reference(shipped):
  return json.loads((shipped.folder / "reference_outputs.json").read_text())["images"]


def compare(got: dict, want: dict) -> list[str]:
  """What differs beyond `TOLERANCE` between two reference rows (empty: the same)."""
  bad = []
  if got["seg_quality"] != want["seg_quality"]:
    bad.append(f"seg_quality {got['seg_quality']} != {want['seg_quality']}")
  if (got["ellipse"] is None) != (want["ellipse"] is None):
    return bad + [f"ellipse {got['ellipse']} vs {want['ellipse']}"]
  if want["ellipse"] is not None:
    d = float(np.max(np.abs(np.subtract(got["ellipse"][:4], want["ellipse"][:4]))))
    dt = abs(math.remainder(got["ellipse"][4] - want["ellipse"][4], math.pi))
    if d > TOLERANCE["ellipse_px"] or dt > 1e-3:
      bad.append(f"ellipse {got['ellipse']} vs {want['ellipse']}")
    if abs(got["hc_px"] - want["hc_px"]) > TOLERANCE["hc_rel"] * want["hc_px"]:
      bad.append(f"hc_px {got['hc_px']} vs {want['hc_px']}")
  for t, p in want["probabilities"].items():
    for k, v in p.items():
      g = got["probabilities"].get(t, {}).get(k, math.nan)
      if not abs(g - v) <= TOLERANCE["probability"]:
        bad.append(f"{t}/{k} {g} vs {v}")
  a, b = got["anomaly_score"], want["anomaly_score"]
  if not (math.isnan(a) and math.isnan(b)) and not abs(a - b) <= TOLERANCE["anomaly_rel"] * abs(b):
    bad.append(f"anomaly_score {a} vs {b}")
  return bad


def test_reference_outputs_are_reproduced(shipped, reference, real_manual_dir):
  rows = predict.predict_images([real_manual_dir / r["file"] for r in reference],
                                pixel_spacing_mm=[r["pixel_spacing_mm"] for r in reference])
  problems = {}
  for want, got in zip(reference, rows, strict=True):
    bad = compare(got, want)
    if bad:
      problems[want["file"]] = bad
  assert not problems, problems
  # The HC18 heads are measured: near their annotation.
  for want, got in zip(reference, rows, strict=True):
    if "ref_hc_mm" in want and got["seg_quality"] == "ok":
      assert abs(got["hc_mm"] - want["ref_hc_mm"]) < 0.15 * want["ref_hc_mm"]


def test_compare_catches_a_moved_ellipse_and_a_changed_plane(reference):
  want = next(r for r in reference if r["ellipse"] is not None and r["probabilities"])
  moved = json.loads(json.dumps(want))
  moved["ellipse"][0] += 0.5
  assert any("ellipse" in b for b in compare(moved, want))
  swapped = json.loads(json.dumps(want))
  p = swapped["probabilities"]["plane"]
  p["TT"], p["TV"] = p["TV"], p["TT"]
  assert compare(swapped, want) or p["TT"] == p["TV"]


def _close(got, want, path=""):
  """Differences between two metric trees beyond rounding (numbers rel 1e-3 / abs 1e-3)."""
  out = []
  if isinstance(want, dict):
    for k, v in want.items():
      out += _close(got.get(k) if isinstance(got, dict) else None, v, f"{path}/{k}")
  elif isinstance(want, list):
    if not isinstance(got, list) or len(got) != len(want):
      return [f"{path}: {got} vs {want}"]
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
      out += _close(a, b, f"{path}[{i}]")
  elif isinstance(want, float) and isinstance(got, (int, float)):
    if not (abs(got - want) <= 1e-3 + 1e-3 * abs(want)):
      out.append(f"{path}: {got} vs {want}")
  elif got != want:
    out.append(f"{path}: {got} vs {want}")
  return out


def test_recorded_validation_metrics_are_measured_again(shipped, real_manual_dir, real_data_dir,
                                                        real_builder):
  """Every validation number of the manifest (and so of the model card), measured anew
  through the bundle on the shared data."""
  real_builder("fetal_planes_db", "brain_combined")
  m = bundle_eval.validation(shipped, real_data=str(real_manual_dir), data_dir=str(real_data_dir))
  recorded = shipped.manifest["validation"]
  # The recipe also records the segmenter without mirror averaging (not measured again).
  assert set(m) == set(recorded) - {"segmentation_tta_off"}
  diffs = _close(m, {k: recorded[k] for k in m})
  assert not diffs, diffs[:20]


def test_launch_evaluate_measures_the_bundle(shipped, real_manual_dir, real_data_dir,
                                            real_builder, tmp_path):
  """`launch.evaluate --workdir models/fbjax_head_v1 --real_data DIR`: the segmenter and each
  classifier on its own validation sources; the bundle folder is left as shipped."""
  from fbjax.jobs import evaluate

  real_builder("fetal_planes_db", "brain_combined")
  before = {p: p.stat().st_mtime_ns for p in shipped.folder.rglob("*")}
  s = evaluate.evaluate_workdir(bundle.DEFAULT, real_data=str(real_manual_dir), limit=12,
                                out_dir=str(tmp_path), num_overlays=2,
                                data_dir=str(real_data_dir))
  assert s["kind"] == "bundle"
  assert {"segmenter_hc18", "planes_fpdb", "planes_fba", "abnormal_fba", "abnormal_fpdb",
          "abnormal_hc18"} <= set(s["sources"])
  seg = s["sources"]["segmenter_hc18"]["original_resolution"]
  assert seg["num_images"] == 12 and seg["seg_dice_head"]["mean"] > 0.9
  assert "plane" in s["sources"]["planes_fpdb"]["tasks"]
  assert s["sources"]["abnormal_fba"]["abnormal_decision"]["threshold"] == pytest.approx(
      shipped.classifier.decision["abnormal_threshold"])
  assert (tmp_path / "evaluation.json").exists()
  assert {p: p.stat().st_mtime_ns for p in shipped.folder.rglob("*")} == before
  with pytest.raises(ValueError, match="give the folder of the data sets"):
    evaluate.evaluate_workdir(bundle.DEFAULT)


def test_bundle_data_dir_is_one_per_copy(monkeypatch, tmp_path):
  """Two copies of the data sets (other paths) never share a default build."""
  from fbjax.jobs import evaluate

  monkeypatch.setenv("FBJAX_DATA_DIR", str(tmp_path))
  a, b = evaluate.bundle_data_dir("/data/a/shared"), evaluate.bundle_data_dir("/data/b/shared")
  assert a != b and a.startswith(str(tmp_path / "bundle" / "shared-"))
  assert evaluate.bundle_data_dir("/data/a/shared/") == a


def test_one_image_one_verdict_one_crop_in_training_evaluation_and_prediction(
    shipped, real_manual_dir, real_data_dir, real_builder, monkeypatch):
  """FETAL_PLANES_DB images (no head mask: the segmenter finds the head) through the
  trainer's aligned source, `launch.evaluate`'s (the classifier's source, and the
  segmentation evaluation's verdict) and `launch.predict`'s: the same head or none, the
  same ellipse, and for square pixels the same crop, for each image."""
  from fbjax.data import pipeline, sources
  from fbjax.evaluation import heads, segment_eval
  from fbjax.jobs import evaluate
  from fbjax.trainers import classify

  real_builder("fetal_planes_db", "brain_combined")
  n = 30    # the first 30 validation images: three grey originals at square pixels
  # launch.evaluate on the bundle: the sources its plane classifier is measured on.
  seen = {}

  def capture(model, source, name, **kw):
    seen.setdefault(name, source)
    return {"n": len(source)}

  monkeypatch.setattr(evaluate, "classifier_summary", capture)
  evaluate.evaluate_bundle(bundle.DEFAULT, real_data=str(real_manual_dir), data="fpdb",
                           data_dir=str(real_data_dir),
                           overrides={"sources.fpdb.max_examples": n})
  # The trainer's aligned source of the same block (the bundle's planes config, its
  # segmenter the bundle's own, as the release trained it).
  values = {"real_data": str(real_manual_dir), "data_dir": str(real_data_dir), "work": ""}
  cfg = bundle.fill_paths(shipped.classifier.members["planes"].config, values)
  with cfg.unlocked():
    cfg.input.seg_workdir = str(shipped.folder)
    cfg.sources.fpdb.max_examples = n
  block = classify.source_blocks(cfg, train=False)["fpdb"]
  trained = sources.block_source(block, block.val_split, model_input=cfg.input,
                                 head_table=head_tables.table)
  raw = sources.block_source(cfg.sources.fpdb, block.val_split, masked=False)
  by_id = {head_tables.example_id(trained[i]): trained[i] for i in range(len(trained))}
  evaluated = {head_tables.example_id(seen["fpdb"][i]): seen["fpdb"][i]
               for i in range(len(seen["fpdb"]))}
  assert by_id.keys() == evaluated.keys() and len(by_id) >= n // 2
  p = predict.Predictor(shipped.folder, shipped.folder, batch_size=16)
  compared, found = 0, 0
  for i in range(len(raw)):
    ex = raw[i]
    ident = head_tables.example_id(ex)
    item = p.prepare(real_manual_dir / ident)
    np.testing.assert_array_equal(heads.as_uint8(item.image), pipeline.grey(ex["image"]))
    out = p.infer([item])
    got = out["heads"][0]
    # The segmentation evaluation's verdict of the same image (launch.evaluate's rows).
    x, g = segment_eval.grid_input(ex, p.seg.size)
    row, _ = segment_eval.measure_example(ex, out["seg"][0], g, methods=(p.seg.method,),
                                          grid_image=x, head_method=p.seg.method)
    assert row["seg_quality"] == got["seg_quality"], ident
    assert ("_crops" in got) == (ident in by_id), (ident, got["seg_quality"])
    if ident not in by_id:
      continue
    found += 1
    e = got["_ellipse"]
    np.testing.assert_allclose(by_id[ident]["ellipse"], [e.cx, e.cy, e.a, e.b, e.theta],
                               rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(evaluated[ident]["image"], by_id[ident]["image"])
    if float(ex["pixel_aspect"]) != 1.0:
      continue     # non-square pixels: known to the data set, not to a file (predict: 1)
    crop = by_id[ident]["image"][..., 0].astype(np.float32) / 255.0
    np.testing.assert_array_equal(got["_crops"][0], crop)
    compared += 1
  assert found >= n - 3 and compared >= 2
