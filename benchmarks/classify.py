r"""Classification benchmark: planes, normal vs abnormal, condition, anomaly score, speed.

  # CPU (2 cores, ~45 minutes): 64 px grid, small encoder
  python -m benchmarks.classify --workdir /tmp/fbjax_classify_benchmark
  # Accelerator (one H100): 128 px, wider encoder, batch 64 (not measured by the author)
  python -m benchmarks.classify --device --workdir /tmp/fbjax_classify_benchmark_dev

Stages (`--stages`, comma separated; default all). Every split is by group
(patient / source image / synthetic fetus); nothing is tuned on a test split
(decision thresholds come from validation images):
  phantom   autoencoder on the phantom's normal images, heads fine-tuned from it;
            test split: plane accuracy, abnormal AUROC, per-condition AUROC, the
            unsupervised anomaly score, the prototype's brightness rule
  real      autoencoder on real normal images (FETAL_PLANES_DB, the abnormalities set's
            normals, HC18), heads fine-tuned on the abnormalities set + FETAL_PLANES_DB +
            HC18; abnormalities test split: normal vs abnormal (AUROC, sensitivity and
            specificity at the validation-calibrated threshold), 16-class condition
            (macro-F1, accuracy, per-class table), the anomaly score, the prototype's
            rule, the thumbnail + histogram shortcut baseline beside each, and the
            false-positive rate on unseen HC18 screening images; occlusion maps (share of
            the evidence on the head vs in the image border); planes on the real labelled
            test images (FETAL_PLANES_DB + the abnormalities set's normal images)
  aligned   the aligned head as the classifier's input (`python -m benchmarks.classify_aligned`
            in a subprocess, needs --seg_workdir, its steps those of cls_real): real planes,
            normal vs abnormal, condition, calibration, occlusion inside the brain, each
            beside the thumbnail shortcut
  speed     the whole predict pipeline (read, enhance, segment + ellipse, classify,
            anomaly score, CSV, overlays) over the phantom's 2,949 unlabelled images:
            images/s with the batch size used, and batch-1 latency per image

The trainings are the named configs of `configs/classify_benchmark.py` (`stage=`, at
`preset=cpu` or `preset=device`; `--dry_run` prints them and trains nothing).

Prints one JSON object (also `--out`, default `<workdir>/benchmark.json`) and a markdown
table (`<workdir>/benchmark.md`). Goals (issue #7): abnormal AUROC >= 0.99, condition
macro-F1 >= 0.60, real planes macro-F1 >= 0.85, phantom plane accuracy >= 0.98,
predict >= 50 images/s on 2 CPU cores, batch-1 latency <= 33 ms.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys
import time

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from configs import classify_aligned as aligned_config
from configs import classify_benchmark as bench_config
from fbjax import predict
from fbjax.core import metrics, plots, schema
from fbjax.core import workdir as workdir_lib
from fbjax.data import pipeline, sources
from fbjax.evaluation import (
  anomaly,
  baselines,
  evaluators,
  inference,
  saliency,
)
from fbjax.geometry import ellipse_fit, preprocess
from fbjax.models import unet
from fbjax.trainers import autoencoder as ae_trainer
from fbjax.trainers import classify

_REAL = flags.DEFINE_string("real_data", os.environ.get("FBJAX_REAL_DATA", "../shared/data"),
                            "Folder holding fetal_brain_abnormalities/, fetal_planes_db/, hc18/.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/fbjax_classify_benchmark", "Output folder.")
_DEVICE = flags.DEFINE_bool("device", False, "Accelerator-sized run (128 px, wider, longer).")
_STAGES = flags.DEFINE_list("stages", ["phantom", "real", "speed"], "Stages to run.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "tfds data_dir (default: fbjax's cache).")
_SEG = flags.DEFINE_string("seg_workdir", "", "Trained segmentation workdir for the speed "
                           "stage and the occlusion check (default: see --help of speed).")
_STEPS = flags.DEFINE_list("steps", None, "Training steps: ae_phantom,cls_phantom,ae_real,"
                           "cls_real (default: by --device).")
_SPEED_IMAGES = flags.DEFINE_integer("speed_images", 2949, "Unlabelled phantom images "
                                     "predicted in the speed stage.")
_SPEED_BATCH = flags.DEFINE_integer("speed_batch", 32, "Batch size of the speed stage.")
_SEG_SIZE = flags.DEFINE_list("seg_size", ["128", "128"], "Grid (H, W) of the stand-in U-Net "
                              "of the speed stage (without --seg_workdir).")
_SEG_WIDTH = flags.DEFINE_integer("seg_width", 8, "Width of the stand-in U-Net (depth 4).")
_SPEED_OVERLAYS = flags.DEFINE_integer("speed_overlays", -1, "Overlays written in the speed "
                                       "stage (-1: all).")
_SIZE = flags.DEFINE_integer("size", None, "Network grid (default: 64 on CPU, 128 --device).")
_TTA = flags.DEFINE_bool("tta", True, "Average each test prediction with its mirror image's.")
_OCCLUSION = flags.DEFINE_integer("num_occlusion", 24, "Abnormal test images whose occlusion "
                                  "maps are measured.")
_OUT = flags.DEFINE_string("out", "", "JSON output path (default: <workdir>/benchmark.json).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the configs of the stages' trainings "
                             "(JSON, by workdir name) and stop.")

REPO = pathlib.Path(__file__).resolve().parents[1]
PROTOTYPE_THRESHOLD = 0.15   # the prototype: mean reconstruction brightness < 0.15 = abnormal
TRAINERS = {"autoencoder": ae_trainer, "classify": classify}


def _preset() -> dict:
  """The preset of configs/classify_benchmark.py (cpu or --device), --steps and --size."""
  return bench_config.preset("device" if _DEVICE.value else "cpu", _STEPS.value, _SIZE.value)


def stage_config(stage: str, s: dict, init_from: str = ""):
  """The named config of `stage` (configs/classify_benchmark.py) at the preset `s`."""
  steps = s["steps"][bench_config.STAGES.index(stage)]
  return bench_config.get_config(
      f"stage={stage},preset={'device' if _DEVICE.value else 'cpu'},steps={steps},"
      f"size={s['size']},init_from={init_from},real={os.path.abspath(_REAL.value)},"
      f"data_dir={_DATA_DIR.value}")


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def train(stage: str, s: dict, workdir: str, init_from: str = "") -> float:
  """Trains `stage` with its trainer's `train_and_evaluate`; the seconds it took."""
  c = stage_config(stage, s, init_from)
  t0 = time.perf_counter()
  TRAINERS[c.trainer].train_and_evaluate(c, workdir)
  return time.perf_counter() - t0


# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------


def _binary(y, score, threshold=None) -> dict:
  out = {"n": int((y >= 0).sum()), "n_abnormal": int((y == 1).sum()),
         "auroc": metrics.auroc(y, score),
         "sensitivity_at_95_specificity": metrics.sensitivity_at_specificity(y, score, 0.95)}
  if threshold is not None:
    sens, spec = metrics.sensitivity_specificity(y, score, threshold)
    out.update(threshold=float(threshold), sensitivity=sens, specificity=spec,
               accuracy=float(((score > threshold).astype(int) == y)[y >= 0].mean()))
  return out


def ae_outputs(am, source, batch_size=64) -> dict:
  """Anomaly scores and mean reconstruction brightness over a source."""

  fn = anomaly.make_score_fn(am.ae)
  feats, recon, bright, inb = [], [], [], []
  for b in evaluators.host_batches(source, am.ae.size, batch_size, keys=("image", "abnormal")):
    keep = b["_mask"] > 0
    o = jax.device_get(fn(jnp.asarray(b["image"])))
    feats.append(np.asarray(o["features"])[keep])
    recon.append(np.asarray(o["recon"])[keep])
    bright.append(np.asarray(o["recon_image"]).mean(axis=(1, 2))[keep])
    inb.append(b["image"].mean(axis=(1, 2))[keep])
  s = am.scores({"features": np.concatenate(feats), "recon": np.concatenate(recon)})
  s["recon_brightness"] = np.concatenate(bright)
  s["input_brightness"] = np.concatenate(inb)
  return s


def unsupervised(am, y, s) -> dict:
  out = {k: _binary(y, s[k], am.thresholds[k]) for k in ("mahalanobis", "recon")}
  # The prototype: abnormal when the reconstruction's mean brightness is below 0.15.
  out["prototype_brightness_rule"] = _binary(y, -s["recon_brightness"], -PROTOTYPE_THRESHOLD)
  return out


def _summaries(clf, res: dict) -> dict:
  """Per task, `metrics.classification_summary` (`fbjax.evaluation.evaluators.classification`)."""

  return evaluators.classification(res, {t: clf.class_names(t) for t in clf.tasks}, "test")[1]


def _table(summary: dict) -> dict:
  return {n: {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
          for n, r in summary["per_class"].items()}


def eval_phantom(workdir: str) -> dict:
  clf = inference.load(workdir, kind="classifier")
  src = sources.block_source(clf.config.sources.phantom, "test", masked=False)
  res = evaluators.predict_source(clf, src, 64, tta=_TTA.value)
  summ = _summaries(clf, res)
  cond = summ["condition"]
  am = anomaly.load(workdir)
  s = ae_outputs(am, src)
  y_ab = res["label_abnormal"]
  per_cond_auroc = {n: v["auroc"] for n, v in cond["per_class"].items()}
  # Per-condition AUROC of the unsupervised score: each condition vs the normal images.
  y_c = res["label_condition"]
  unsup_per_cond = {}
  for i, n in enumerate(clf.class_names("condition")):
    if i == 0 or not np.any(y_c == i):
      continue
    sel = (y_c == 0) | (y_c == i)
    unsup_per_cond[n] = metrics.auroc((y_c[sel] == i).astype(int), s[am.primary][sel])
  return {
      "n_test": len(src),
      "plane": {"accuracy": summ["plane"]["accuracy"], "macro_f1": summ["plane"]["macro_f1"],
                "confusion_matrix": summ["plane"]["confusion_matrix"]},
      "abnormal_head": _binary(y_ab, res["abnormal"][:, 1], _threshold(workdir)),
      "condition": {"accuracy": cond["accuracy"], "macro_f1": cond["macro_f1"],
                    "auroc_one_vs_rest": per_cond_auroc},
      "unsupervised": unsupervised(am, y_ab, s),
      "unsupervised_auroc_per_condition_vs_normal": unsup_per_cond,
  }


def _threshold(workdir) -> float:
  return float(workdir_lib.read_json(workdir, workdir_lib.DECISION)["abnormal_threshold"])


def occlusion_check(clf, source, probs, y, num: int, out_dir: pathlib.Path) -> dict:
  """Occlusion maps of the abnormal logit on abnormal test images: where is the evidence?

  Regions on the network grid: `head` = the head predicted by the segmentation
  model (`--seg_workdir`), or without one the ellipse inscribed in the bounding
  box of the image content (pixels > 0.04 after a 5x5 median; a proxy: the
  head fills most of these images); `border` = the outer 12.5 % frame where
  burned-in text, logos and scanner marks sit. Each share is to be read
  against the region's share of the image area (also returned).
  """

  idx = [int(i) for i in np.argsort(-probs)[: num * 3] if y[i] == 1][:num]
  if not idx:
    return {}
  sub = [source[i] for i in idx]
  imgs = np.concatenate([b["image"][b["_mask"] > 0] for b in evaluators.host_batches(
      sub, clf.size, 16, keys=("image",))])
  logit = clf.logit_fn("abnormal", 1)
  params = jax.tree.map(jnp.asarray, clf.params)
  fn = jax.jit(lambda x: logit(params, x))
  bs = 64

  def score(batch):
    out = []
    for i in range(0, len(batch), bs):
      chunk = batch[i:i + bs]
      pad = np.zeros((bs, *batch.shape[1:]), np.float32)
      pad[: len(chunk)] = chunk
      out.append(np.asarray(fn(jnp.asarray(pad)))[: len(chunk)])
    return np.concatenate(out)

  h, w = clf.size
  seg = None
  if _SEG.value:
    seg = predict.load_segmenter(_SEG.value)
  patch = max(4, h // 8)
  border = np.ones((h, w), bool)
  m = h // 8
  border[m:h - m, m:w - m] = False
  inside, edge, pics, area = [], [], [], []
  for img, ex in zip(imgs, sub, strict=True):
    heat = saliency.occlusion_map(score, img, patch=patch, stride=max(2, patch // 2))
    head = np.zeros((h, w), np.uint8)
    if seg is not None:
      # Segment the original image; bring the head mask onto the classifier's grid.
      orig = pipeline.grey(ex["image"]).astype(np.float32) / 255.0
      grid, g = preprocess.letterbox(orig, seg.size)
      prob = np.asarray(seg.predict(grid[None]))[0, ..., 0]
      mask = preprocess.unletterbox((prob > 0.5).astype(np.uint8), g, nearest=True)
      head, _ = preprocess.letterbox(mask, (h, w), nearest=True)
    else:
      content = cv2.medianBlur(np.uint8(np.clip(img * 255, 0, 255)), 5) > 10
      ys, xs = np.nonzero(content)
      if len(ys):
        cv2.ellipse(head, ((float(xs.mean()), float(ys.mean())),
                           (0.9 * float(xs.max() - xs.min()),
                            0.9 * float(ys.max() - ys.min())), 0.0), 1, -1)
    area.append(float(head.mean()))
    inside.append(saliency.inside_fraction(heat, head))
    edge.append(saliency.inside_fraction(heat, border))
    pics.append(plots.heatmap_overlay(img, heat))
  grid = plots.label_grid(pics[:16], [f"head {a:.0%} border {b:.0%}"
                                      for a, b in zip(inside, edge, strict=False)][:16],
                          columns=8, thumb=128)
  cv2.imwrite(str(out_dir / "occlusion_abnormal_test.png"), grid[..., ::-1])
  return {"n": len(imgs), "head_region": "segmentation model" if seg is not None else
          "content-box ellipse (proxy)", "evidence_on_head_mean": float(np.nanmean(inside)),
          "head_area_fraction_mean": float(np.mean(area)),
          "evidence_in_border_mean": float(np.nanmean(edge)),
          "border_area_fraction": float(border.mean()),
          "figure": "occlusion_abnormal_test.png"}


def eval_real(workdir: str, out_dir: pathlib.Path) -> dict:
  clf = inference.load(workdir, kind="classifier")
  cfg = clf.config
  thr = _threshold(workdir)
  fba = cfg.sources.fba
  test = sources.block_source(fba, "test", masked=False)
  res = evaluators.predict_source(clf, test, 64, tta=_TTA.value)
  summ = _summaries(clf, res)
  y_ab = res["label_abnormal"]
  out = {"n_test": len(test), "decision_threshold": thr,
         "abnormal_head": _binary(y_ab, res["abnormal"][:, 1], thr),
         "abnormal_from_condition_head": _binary(y_ab, 1 - res["condition"][:, 0]),
         "condition": {"accuracy": summ["condition"]["accuracy"],
                       "macro_f1": summ["condition"]["macro_f1"],
                       "classes_in_test": int(len(np.unique(res["label_condition"]
                                                            [res["label_condition"] >= 0]))),
                       "per_class": _table(summ["condition"]),
                       "confusion_matrix": summ["condition"]["confusion_matrix"]}}
  am = anomaly.load(workdir) if anomaly.exists(workdir) else None
  if am is not None:
    out["unsupervised"] = unsupervised(am, y_ab, ae_outputs(am, test))

  # The shortcut baseline, trained on the abnormalities set's training split.
  train = sources.block_source(fba, "train", masked=False)
  val = sources.block_source(fba, "validation", masked=False)
  x_tr, y_tr = baselines.thumbnail_features(train)
  x_va, y_va = baselines.thumbnail_features(val)
  x_te, y_te = baselines.thumbnail_features(test)
  m_ab, b_thr = baselines.fit_calibrated(x_tr, y_tr["abnormal"], x_va, y_va["abnormal"], 0.95)
  p_te = baselines.probs(m_ab, x_te, 2)[:, 1]
  yc_tr = baselines.condition_labels(y_tr["condition"], cfg.condition_classes)
  yc_te = baselines.condition_labels(y_te["condition"], cfg.condition_classes)
  m_c = baselines.fit(x_tr, yc_tr)
  pc = baselines.probs(m_c, x_te, len(cfg.condition_classes))
  out["baseline_thumbnail_histogram"] = {
      "abnormal": _binary(y_te["abnormal"], p_te, b_thr),
      "condition": {"accuracy": metrics.accuracy(yc_te, pc.argmax(1)),
                    "macro_f1": metrics.macro_f1(yc_te, pc.argmax(1))}}

  # Unseen normal screening images from another source: HC18's test images.
  hc18 = sources.block_source(cfg.sources.hc18, "test", masked=False)
  r_h = evaluators.predict_source(clf, hc18, 64, tta=_TTA.value)
  x_h, _ = baselines.thumbnail_features(hc18)
  out["hc18_test_flagged_abnormal"] = {
      "n": len(hc18), "model": float(np.mean(r_h["abnormal"][:, 1] > thr)),
      "baseline": float(np.mean(baselines.probs(m_ab, x_h, 2)[:, 1] > b_thr))}
  if am is not None:
    s_h = ae_outputs(am, hc18)
    out["hc18_test_flagged_abnormal"]["anomaly_score"] = float(
        np.mean(s_h[am.primary] > am.thresholds[am.primary]))

  # Where the abnormal head looks.
  out["occlusion"] = occlusion_check(clf, test, res["abnormal"][:, 1], y_ab,
                                     _OCCLUSION.value, out_dir)

  # Planes on the real labelled test images: FETAL_PLANES_DB + the normals with planes.
  fpdb = sources.block_source(cfg.sources.fpdb, "test", masked=False)
  r_p = evaluators.predict_source(clf, fpdb, 64, tta=_TTA.value)
  y_pl = np.concatenate([r_p["label_plane"], res["label_plane"]])
  p_pl = np.concatenate([r_p["plane"], res["plane"]])
  sp = metrics.classification_summary(y_pl, p_pl, clf.class_names("plane"))
  # Baseline for planes: the same features, trained on the training images with planes.
  x_f, y_f = baselines.thumbnail_features(
      sources.block_source(cfg.sources.fpdb, "train", masked=False))
  x_fte, y_fte = baselines.thumbnail_features(fpdb)
  m_p = baselines.fit(np.concatenate([x_tr, x_f]), np.concatenate([y_tr["plane"], y_f["plane"]]))
  pp = baselines.probs(m_p, np.concatenate([x_fte, x_te]), 4)
  yb = np.concatenate([y_fte["plane"], y_te["plane"]])
  out["planes_real"] = {"n": sp["n"], "accuracy": sp["accuracy"], "macro_f1": sp["macro_f1"],
                        "per_class": _table(sp), "confusion_matrix": sp["confusion_matrix"],
                        "baseline_macro_f1": metrics.macro_f1(yb, pp.argmax(1)),
                        "baseline_accuracy": metrics.accuracy(yb, pp.argmax(1))}
  return out


# ---------------------------------------------------------------------------
# Speed
# ---------------------------------------------------------------------------


def speed_segmenter(size=(128, 128), width=8, depth=4):
  """The segmentation stand-in when no --seg_workdir is given: a U-Net of the given size
  (random weights: the compute is that of a trained one; default: the main job's demo
  segmenter) whose head map is replaced by a plausible ellipse, so the ellipse fit and
  the overlay cost what they cost."""

  model = unet.Model(width=width, depth=depth)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *size)))["params"]
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: (0.05 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)
  e = ellipse_fit.Ellipse.make(size[1] / 2, size[0] / 2, 0.32 * size[1], 0.26 * size[1], 0.3)
  head = jnp.asarray(ellipse_fit.rasterize(e, size).astype(np.float32))

  def fn(images):
    logits, _ = model.apply({"params": params}, images)
    probs = jax.nn.sigmoid(logits)
    return probs.at[..., 0].set(jnp.clip(head + 0.0 * probs[..., 0], 0, 1))

  return predict.Segmenter(size=tuple(size), predict=fn, method="robust")


def speed(cls_workdir: str, out_dir: pathlib.Path) -> dict:
  clf_cfg = inference.load(cls_workdir, kind="classifier").config
  block = type(clf_cfg.sources.phantom)(clf_cfg.sources.phantom.to_dict())
  src = sources.get_source(block, "unlabelled")
  folder = out_dir / "phantom_unlabelled"
  folder.mkdir(parents=True, exist_ok=True)
  n = min(_SPEED_IMAGES.value, len(src))
  for i in range(n):
    p = folder / f"{i:05d}.png"
    if not p.exists():
      cv2.imwrite(str(p), pipeline.grey(src[i]["image"]))
  if _SEG.value:
    seg, seg_note = predict.load_segmenter(_SEG.value), f"trained model {_SEG.value}"
  else:
    size = tuple(int(v) for v in _SEG_SIZE.value)
    seg = speed_segmenter(size, _SEG_WIDTH.value)
    seg_note = (f"U-Net width {_SEG_WIDTH.value}, depth 4 at {size[0]}x{size[1]} (random "
                "weights) + robust ellipse fit of a fixed head ellipse")
  run_out = out_dir / "predict_phantom_unlabelled"
  summary = predict.run(cls_workdir, None, folder, run_out, batch_size=_SPEED_BATCH.value,
                        segmenter=seg, progress=False, report=True, log=lambda s: None,
                        num_overlays=_SPEED_OVERLAYS.value)
  rows = sum(1 for _ in open(run_out / "predictions.csv")) - 1
  errs = sum(1 for _ in open(run_out / "errors.csv")) - 1
  # Batch-1 latency: read + letterbox + networks + ellipse + CSV row (no overlay file).
  p1 = predict.Predictor(cls_workdir, segmenter=seg, batch_size=1)
  p1.warmup()
  paths = sorted(folder.glob("*.png"))[:100]
  lat = []
  for path in paths:
    t0 = time.perf_counter()
    item = p1.prepare(path)
    out = p1.infer([item])
    p1.finish(item, out, 0, math.nan, None)
    lat.append(time.perf_counter() - t0)
  lat = np.asarray(lat[5:]) * 1e3
  return {"images": n, "rows": rows, "error_rows": errs,
          "every_file_has_a_row": rows + errs == n,
          "images_per_s": summary["timing"]["images_per_s"],
          "batch_size": _SPEED_BATCH.value, "compile_s": summary["timing"]["compile_s"],
          "device": summary["timing"]["device"], "cpu_count": os.cpu_count(),
          "load_average_1min": os.getloadavg()[0], "overlays": _SPEED_OVERLAYS.value,
          "segmenter": seg_note, "classifier_grid": list(schema.size_of(clf_cfg)),
          "latency_batch1_ms": {"median": float(np.median(lat)),
                                "p95": float(np.percentile(lat, 95)), "n": int(lat.size)}}


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def markdown(r: dict) -> str:
  f = lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else (
      f"{v:.3f}" if isinstance(v, float) else str(v))
  lines = ["| measurement | model | baseline / reference | goal |", "|---|---|---|---|"]
  if "phantom" in r:
    p = r["phantom"]
    lines += [f"| phantom test plane accuracy (n={p['n_test']}) | {f(p['plane']['accuracy'])} "
              "| | >= 0.98 |",
              f"| phantom test abnormal AUROC | {f(p['abnormal_head']['auroc'])} | prototype "
              f"rule {f(p['unsupervised']['prototype_brightness_rule']['auroc'])} | |",
              f"| phantom test condition macro-F1 | {f(p['condition']['macro_f1'])} | | |",
              f"| phantom test anomaly score AUROC ({'mahalanobis'}) | "
              f"{f(p['unsupervised']['mahalanobis']['auroc'])} | recon error "
              f"{f(p['unsupervised']['recon']['auroc'])} | |"]
  if "real" in r:
    q = r["real"]
    a, b = q["abnormal_head"], q["baseline_thumbnail_histogram"]
    lines += [
        f"| FBA test normal-vs-abnormal AUROC (n={a['n']}) | {f(a['auroc'])} | thumbnail+hist "
        f"{f(b['abnormal']['auroc'])} | >= 0.99 |",
        f"| FBA test sensitivity / specificity (val-calibrated) | {f(a.get('sensitivity'))} / "
        f"{f(a.get('specificity'))} | {f(b['abnormal'].get('sensitivity'))} / "
        f"{f(b['abnormal'].get('specificity'))} | Xie 2020: 0.969 / 0.959 |",
        f"| FBA test condition macro-F1 | {f(q['condition']['macro_f1'])} | "
        f"{f(b['condition']['macro_f1'])} | >= 0.60 |",
        f"| FBA test condition accuracy | {f(q['condition']['accuracy'])} | "
        f"{f(b['condition']['accuracy'])} | |",
        f"| HC18 test images flagged abnormal (unseen normals) | "
        f"{f(q['hc18_test_flagged_abnormal']['model'])} | "
        f"{f(q['hc18_test_flagged_abnormal']['baseline'])} | 0.05 |",
        f"| real planes macro-F1 (n={q['planes_real']['n']}) | {f(q['planes_real']['macro_f1'])}"
        f" | {f(q['planes_real']['baseline_macro_f1'])} | >= 0.85 |"]
    if "unsupervised" in q:
      u = q["unsupervised"]
      lines.append(f"| FBA test anomaly score AUROC (mahalanobis / recon) | "
                   f"{f(u['mahalanobis']['auroc'])} / {f(u['recon']['auroc'])} | prototype "
                   f"rule {f(u['prototype_brightness_rule']['auroc'])} | |")
    if q.get("occlusion"):
      o = q["occlusion"]
      lines.append(f"| occlusion evidence on head / in border (n={o['n']}, head: "
                   f"{o['head_region']}) | {f(o['evidence_on_head_mean'])} / "
                   f"{f(o['evidence_in_border_mean'])} | area: head "
                   f"{f(o['head_area_fraction_mean'])}, border {f(o['border_area_fraction'])} | |")
  if "speed" in r:
    s = r["speed"]
    lines += [f"| predict images/s ({s['device']}, batch {s['batch_size']}) | "
              f"{f(s['images_per_s'])} | | >= 50 |",
              f"| predict batch-1 latency (ms, median) | {f(s['latency_batch1_ms']['median'])} "
              "| | <= 33 |",
              f"| files with a row or error row | {s['rows'] + s['error_rows']} / {s['images']} "
              "| | all |"]
  return "\n".join(lines) + "\n"


def aligned(s: dict, out: pathlib.Path) -> dict:
  """`python -m benchmarks.classify_aligned` at cls_real's steps, its JSON."""
  if not _SEG.value:
    raise ValueError("the aligned stage needs --seg_workdir (head ellipses of FETAL_PLANES_DB "
                     "and the abnormalities set)")
  path = out / "aligned" / f"aligned_{'_'.join(aligned_config.RUNS)}.json"   # its default
  subprocess.run([sys.executable, "-m", "benchmarks.classify_aligned",
                  f"--real_data={os.path.abspath(_REAL.value)}",
                  f"--seg_workdir={os.path.abspath(_SEG.value)}", f"--data_dir={_DATA_DIR.value}",
                  f"--workdir={out / 'aligned'}", f"--steps={s['steps'][3]}", f"--out={path}"],
                 check=True, cwd=REPO, stdout=sys.stderr)   # stdout is this run's JSON
  return json.loads(path.read_text())


def main(argv):
  del argv
  s = _preset()
  out = pathlib.Path(_WORKDIR.value)
  if _DRY_RUN.value:
    ae_p, ae_r = str(out / "ae_phantom"), str(out / "ae_real")
    runs = {"phantom": {"ae_phantom": stage_config("ae_phantom", s),
                        "cls_phantom": stage_config("cls_phantom", s, ae_p)},
            "real": {"ae_real": stage_config("ae_real", s),
                     "cls_real": stage_config("cls_real", s, ae_r)}}
    print(json.dumps({n: c.to_dict() for stage in _STAGES.value
                      for n, c in runs.get(stage, {}).items()}, indent=1))
    return
  out.mkdir(parents=True, exist_ok=True)
  result = {"setup": {"device": _DEVICE.value, "size": s["size"], "steps": list(s["steps"]),
                      "batch": s["batch"], "encoder": s["ae"], "tta": _TTA.value}}
  timing = {}
  if "phantom" in _STAGES.value:
    ae_w, cls_w = str(out / "ae_phantom"), str(out / "cls_phantom")
    timing["ae_phantom_s"] = train("ae_phantom", s, ae_w)
    timing["cls_phantom_s"] = train("cls_phantom", s, cls_w, init_from=ae_w)
    result["phantom"] = eval_phantom(cls_w)
  if "real" in _STAGES.value:
    ae_w, cls_w = str(out / "ae_real"), str(out / "cls_real")
    timing["ae_real_s"] = train("ae_real", s, ae_w)
    timing["cls_real_s"] = train("cls_real", s, cls_w, init_from=ae_w)
    result["real"] = eval_real(cls_w, out)
  if "aligned" in _STAGES.value:
    result["aligned"] = aligned(s, out)
  if "speed" in _STAGES.value:
    cls_w = str(out / "cls_phantom")
    if not (pathlib.Path(cls_w) / "config.json").exists():
      raise ValueError("the speed stage predicts with the phantom stage's model: run "
                       "--stages=phantom first (same --workdir)")
    result["speed"] = speed(cls_w, out)
  result["train_seconds"] = timing
  pathlib.Path(_OUT.value or out / "benchmark.json").write_text(
      json.dumps(result, indent=1, default=float) + "\n")
  (out / "benchmark.md").write_text(markdown(result))
  print(json.dumps(result, indent=1, default=float))
  print(markdown(result))


if __name__ == "__main__":
  app.run(main)
