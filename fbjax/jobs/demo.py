"""The main job: phantom data -> segmentation -> autoencoder -> heads -> report.

`make demo` (`python -m launch.demo --out demo_out`) runs, on the built-in
phantom and without any download:

  1. data       build `fetal_brain_synth` (config `small`: 128 px, 1200/300/300
                labelled + 2,949 unlabelled images) into the tfds data_dir;
  2. segment    train the head/skull/brain U-Net on the phantom and measure it
                on the test split (Dice, HC error; `fbjax.evaluation.segment_eval`);
  3. autoencoder  train the convolutional autoencoder on normal heads
                (`configs/autoencoder.py:demo`);
  4. classify   train the plane / abnormal / condition heads on its encoder and
                fit the unsupervised anomaly score (`configs/classify.py:demo`),
                then measure them on the test split;
  5. predict    export the unlabelled split as PNG files (+ a pixel-spacing
                CSV) and run `fbjax.predict` over them: predictions.csv,
                overlays, report.html;
  6. summary    `metrics.json` and `report.png` (one picture of the run) in
                `--out`, and a two-line headline on stdout.

Every stage writes into its own folder under `--out`; rerunning with the same
`--out` resumes finished trainings from their checkpoints instead of starting
again. `size="smoke"` is the same pipeline at toy size (the test suite runs it).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import pathlib
import shutil
import time

import cv2
import numpy as np

from configs import autoencoder as ae_cfg
from configs import classify as cls_cfg
from configs import common
from configs import segment as seg_cfg
from fbjax import predict
from fbjax.core import metrics, plots
from fbjax.data import builders, sources
from fbjax.evaluation import anomaly, anomaly_fit, evaluators, inference
from fbjax.jobs import evaluate
from fbjax.predict.files import overlay_name
from fbjax.runtime import tracking
from fbjax.trainers import autoencoder, classify, segment

__all__ = ["SIZES", "Size", "run"]


@dataclasses.dataclass(frozen=True)
class Size:
  phantom: str           # fetal_brain_synth builder config
  seg_grid: int          # segmentation grid (square: the phantom's images are square)
  seg_steps: int
  seg_width: int
  ae_arg: str            # configs/autoencoder.py argument
  cls_arg: str           # configs/classify.py argument
  num_overlays: int
  report_images: int


SIZES = {
    "demo": Size(phantom="small", seg_grid=128, seg_steps=250, seg_width=8, ae_arg="demo",
                 cls_arg="demo", num_overlays=48, report_images=12),
    "smoke": Size(phantom="tiny", seg_grid=64, seg_steps=6, seg_width=4, ae_arg="runlocal",
                  cls_arg="runlocal", num_overlays=4, report_images=4),
}


def _set_data_dir(config, data_dir: str) -> None:
  """Points every data block of `config` (anything with `name` and `data_dir`) at `data_dir`."""
  for key in list(config.keys()):
    v = config[key]
    if hasattr(v, "keys"):
      if "name" in v and "data_dir" in v:
        v.data_dir = data_dir
      else:
        _set_data_dir(v, data_dir)


def _common(config, data_dir: str, wandb_mode: str):
  _set_data_dir(config, data_dir)
  config.wandb.mode = wandb_mode
  return config


def segment_config(size: Size, data_dir: str, wandb_mode: str):
  """configs/segment.py, phantom only, on a square grid the size of the phantom's images."""

  c = seg_cfg.get_config("data=phantom")
  # The phantom alone (HC18 is not used), read whole and cached.
  c.input.size = (size.seg_grid, size.seg_grid)
  c.sources = common.sources(common.data(f"fetal_brain_synth:{size.phantom}"))
  c.data_cache = True
  c.total_steps = size.seg_steps
  c.model.width = size.seg_width
  if size.seg_width < 8:
    c.model.update(depth=2, max_width=16, groups=2)
  c.checkpoint_every = size.seg_steps
  c.eval_every = size.seg_steps
  return _common(c, data_dir, wandb_mode)


def autoencoder_config(size: Size, data_dir: str, wandb_mode: str):

  c = ae_cfg.get_config(size.ae_arg)
  if size.ae_arg == "runlocal":   # the smoke size: the phantom's normal heads, as in `demo`
    c.sources.phantom.where = "abnormal=0"
  return _common(c, data_dir, wandb_mode)


def classify_config(size: Size, data_dir: str, wandb_mode: str, ae_workdir: str):

  c = cls_cfg.get_config(f"{size.cls_arg},init_from={ae_workdir}")
  return _common(c, data_dir, wandb_mode)


def _train(config, workdir: pathlib.Path, log) -> float:

  trainer = {"autoencoder": autoencoder, "classify": classify, "segment": segment}[
      config.trainer]
  t0 = time.perf_counter()
  trainer.train_and_evaluate(config, str(workdir))
  dt = time.perf_counter() - t0
  log(f"[demo] {config.trainer}: trained in {dt:.0f} s -> {workdir}")
  return dt


def build_data(size: Size, data_dir: str, log) -> dict:

  t0 = time.perf_counter()
  b = builders.prepare("fetal_brain_synth", data_dir=data_dir, config=size.phantom)
  counts = {s: int(v.num_examples) for s, v in b.info.splits.items()}
  log(f"[demo] data: fetal_brain_synth:{size.phantom} in {data_dir}: {counts}")
  return {"counts": counts, "seconds": time.perf_counter() - t0}


def evaluate_segment(config, workdir: pathlib.Path, out: pathlib.Path, size: Size) -> dict:
  """The segmentation model on the phantom's test split (per-image CSV, overlays in `out`)."""

  full = evaluate.evaluate_workdir(str(workdir), config, data="phantom", split="test",
                                   out_dir=str(out), num_overlays=size.num_overlays // 4)
  entry = full["sources"]["phantom"]
  return seg_headline(entry["rows"], entry["original_resolution"], config.eval_method)


def evaluate_classify(workdir: pathlib.Path) -> dict:
  """Plane, abnormal and condition heads and the anomaly score on the phantom's test split."""

  clf = inference.load(str(workdir), kind="classifier")
  src = sources.block_source(clf.config.sources.phantom, "test", masked=False)
  res = evaluators.predict_source(clf, src, 64)
  _, summ = evaluators.classification(res, {t: clf.class_names(t) for t in clf.tasks}, "test")
  out: dict = {"n_test": len(src)}
  for t, s in summ.items():
    out[t] = {k: s[k] for k in ("accuracy", "macro_f1", "ece") if k in s}
  y = res["label_abnormal"]
  keep = y >= 0
  if len(np.unique(y[keep])) == 2:
    p = res["abnormal"][keep, 1]
    out["abnormal"]["auroc"] = metrics.auroc(y[keep], p)
    out["abnormal"]["sens_at_95spec"] = metrics.sensitivity_at_specificity(y[keep], p, 0.95)
    if anomaly.exists(workdir):
      am = anomaly.load(workdir)
      outputs, _ = anomaly_fit.scores_over(am.ae, src, 64, anomaly.make_score_fn(am.ae))
      score = am.scores(outputs)[am.primary]
      out["anomaly_score"] = {"kind": am.primary,
                              "auroc": metrics.auroc(y[keep], score[keep])}
  return out


def export_unlabelled(size: Size, data_dir: str, folder: pathlib.Path, log) -> pathlib.Path:
  """The unlabelled split as PNG files and `pixel_spacing.csv` (what a user's folder holds)."""


  images = folder / "images"
  spacing_csv = folder / "pixel_spacing.csv"
  src = builders.data_source("fetal_brain_synth", "unlabelled", data_dir=data_dir,
                             config=size.phantom)
  done = spacing_csv.exists() and len(list(images.glob("*.png"))) == len(src)
  if done:
    return spacing_csv
  images.mkdir(parents=True, exist_ok=True)
  rows = []
  for i in range(len(src)):
    ex = src[i]
    ident = ex["id"]
    name = f"{ident.decode() if isinstance(ident, bytes) else ident}.png"
    img = np.asarray(ex["image"])
    img = img[..., 0] if img.ndim == 3 else img
    if not cv2.imwrite(str(images / name), img):
      raise OSError(f"{images / name}: could not write the PNG")
    rows.append((name, f"{float(ex['pixel_spacing_mm']):.6f}"))
  tmp = spacing_csv.with_suffix(".tmp")
  with open(tmp, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(("filename", "pixel_spacing_mm"))
    w.writerows(rows)
  tmp.replace(spacing_csv)
  log(f"[demo] exported {len(rows)} unlabelled images to {images}")
  return spacing_csv


def report_picture(out: pathlib.Path, pred_dir: pathlib.Path, metrics_: dict) -> pathlib.Path:
  """One PNG of the run: overlays of the most abnormal / least certain images and the
  distributions the report shows, under a line of headline metrics."""


  with open(pred_dir / "predictions.csv", newline="") as f:
    rows = list(csv.DictReader(f))

  def num(r, k):
    try:
      return float(r.get(k) or "nan")
    except ValueError:
      return math.nan


  # The report's images always have overlays (fbjax.predict.ensure_overlays), listed or not.
  for r in rows:
    r["overlay"] = r.get("overlay") or overlay_name(r["file"])
  with_overlay = [r for r in rows if (pred_dir / "overlays" / r["overlay"]).exists()]
  most_abnormal = sorted(with_overlay, key=lambda r: -num(r, "abnormal_prob"))[:4]
  rest = [r for r in with_overlay if r not in most_abnormal]
  least_certain = sorted(rest, key=lambda r: -num(r, "uncertainty"))[:4]
  thumbs, texts = [], []
  for r in most_abnormal + least_certain:
    img = cv2.imread(str(pred_dir / "overlays" / r["overlay"]), cv2.IMREAD_COLOR)
    if img is None:
      continue
    thumbs.append(img[..., ::-1])
    hc = num(r, "hc_mm")
    texts.append(f"{r.get('plane', '')} | {r.get('condition', '')} "
                 f"p={num(r, 'abnormal_prob'):.2f}"
                 + (f" | HC {hc:.0f} mm" if math.isfinite(hc) else ""))
  grid = plots.label_grid(thumbs, texts, columns=4, thumb=240) if thumbs else None
  hists = []
  for key, title in (("abnormal_prob", "abnormal probability"),
                     ("anomaly_score", "anomaly score"), ("hc_mm", "HC (mm)")):
    v = np.array([num(r, key) for r in rows])
    v = v[np.isfinite(v)]
    if v.size:
      hists.append(plots.histogram_image(v, title=f"{title}, n={v.size}"))
  parts = [p for p in (grid,) if p is not None]
  if not parts and not hists:
    raise ValueError(f"{pred_dir / 'predictions.csv'}: no predictions to draw")
  if hists:
    h = max(x.shape[0] for x in hists)
    hists = [np.pad(x, ((0, h - x.shape[0]), (0, 0), (0, 0)), constant_values=255)
             for x in hists]
    parts.append(np.concatenate(hists, axis=1))
  width = max(p.shape[1] for p in parts)
  parts = [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=255)
           for p in parts]
  head = np.full((56, width, 3), 255, np.uint8)
  lines = headline(metrics_)
  for i, line in enumerate(lines[:2]):
    cv2.putText(head, line, (8, 22 + 24 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                cv2.LINE_AA)
  picture = np.concatenate([head, *parts], axis=0)
  path = out / "report.png"
  cv2.imwrite(str(path), picture[..., ::-1])
  return path


def headline(m: dict) -> list[str]:
  """Two lines of the numbers that matter."""
  seg = m.get("segment", {})
  cls = m.get("classify", {})
  pred = m.get("predict", {})

  def f(x, fmt=".3f"):
    return format(x, fmt) if isinstance(x, (int, float)) and math.isfinite(x) else "-"

  one = (f"phantom test: Dice head {f(seg.get('dice_head'))} brain {f(seg.get('dice_brain'))} "
         f"| HC error {f(seg.get('hc_rel_err_pct'), '.2f')} % | plane acc "
         f"{f(cls.get('plane', {}).get('accuracy'))} | abnormal AUROC "
         f"{f(cls.get('abnormal', {}).get('auroc'))}")
  two = (f"unlabelled: {pred.get('predicted', 0)} images, {pred.get('errors', 0)} errors, "
         f"{pred.get('abnormal_flagged', 0)} flagged abnormal, "
         f"{f(pred.get('images_per_s'), '.0f')} images/s")
  return [one, two]


def seg_headline(rows, summary: dict, method: str = "robust") -> dict:
  """Mean Dice (head, skull, brain), HD95 and HC error of an evaluation."""
  def mean(k):
    v = summary.get(k)
    return float(v["mean"]) if isinstance(v, dict) and "mean" in v else math.nan

  out = {f"dice_{c}": mean(f"seg_dice_{c}") for c in ("head", "skull", "brain")}
  out["hd95_head_mm"] = mean("seg_hd95_head_mm")
  out["hc_abs_err_mm"] = mean(f"{method}_hc_abs_mm")
  rel = np.array([r.get(f"{method}_hc_rel", math.nan) for r in rows], np.float64)
  out["hc_rel_err_pct"] = (100 * float(np.nanmean(np.abs(rel))) if np.isfinite(rel).any()
                           else math.nan)
  out["fit_fail_rate"] = float(summary.get(f"{method}_fail_rate", math.nan))
  out["n"] = int(summary.get("num_images", 0))
  return out


def run(out: str | os.PathLike, *, size: str = "demo", data_dir: str | None = None,
        wandb_mode: str = "disabled", log=tracking.log) -> dict:
  """Runs the main job into `out`; returns the metrics (also `out/metrics.json`)."""

  if size not in SIZES:
    raise KeyError(f"unknown size {size!r}; expected one of {sorted(SIZES)}")
  s = SIZES[size]
  out = pathlib.Path(out).resolve()
  out.mkdir(parents=True, exist_ok=True)
  data_dir = os.path.abspath(data_dir or sources.default_data_dir())
  t_start = time.perf_counter()
  m: dict = {"size": size, "data_dir": data_dir, "seconds": {}}

  def stage(name):
    log(f"[demo] === {name} ===")
    return time.perf_counter()

  t = stage("data")
  m["data"] = build_data(s, data_dir, log)
  m["seconds"]["data"] = time.perf_counter() - t

  t = stage("segment")
  seg_cfg = segment_config(s, data_dir, wandb_mode)
  _train(seg_cfg, out / "segment", log)
  m["segment"] = evaluate_segment(seg_cfg, out / "segment", out / "segment_eval", s)
  m["seconds"]["segment"] = time.perf_counter() - t

  t = stage("autoencoder")
  ae_cfg = autoencoder_config(s, data_dir, wandb_mode)
  _train(ae_cfg, out / "autoencoder", log)
  recs = tracking.read_metrics(out / "autoencoder")
  val = [r for r in recs if "val/mse" in r]
  m["autoencoder"] = {"val_mse": val[-1]["val/mse"] if val else None}
  m["seconds"]["autoencoder"] = time.perf_counter() - t

  t = stage("classify")
  cls_cfg = classify_config(s, data_dir, wandb_mode, str(out / "autoencoder"))
  _train(cls_cfg, out / "classify", log)
  m["classify"] = evaluate_classify(out / "classify")
  m["seconds"]["classify"] = time.perf_counter() - t

  t = stage("predict")
  spacing_csv = export_unlabelled(s, data_dir, out / "unlabelled", log)
  # Predicted afresh on every run, so that the metrics describe a whole run (not a resumed one).
  shutil.rmtree(out / "predict", ignore_errors=True)
  summary = predict.run(out / "classify", out / "segment", out / "unlabelled" / "images",
                        out / "predict", spacing_csv=str(spacing_csv),
                        num_overlays=s.num_overlays, num_report_images=s.report_images,
                        num_saliency=min(6, s.report_images), log=log)
  m["predict"] = {k: summary.get(k) for k in ("images", "predicted", "errors",
                                               "plane_counts", "condition_counts",
                                               "abnormal_flagged", "anomaly_flagged",
                                               "seg_quality_counts", "hc_mm_quantiles")}
  m["predict"]["images_per_s"] = summary["timing"]["images_per_s"]
  m["seconds"]["predict"] = time.perf_counter() - t

  m["seconds"]["total"] = time.perf_counter() - t_start
  (out / "metrics.json").write_text(json.dumps(tracking.jsonable(m), indent=1) + "\n")
  picture = report_picture(out, out / "predict", m)
  for line in headline(m):
    log(f"[demo] {line}")
  log(f"[demo] done in {m['seconds']['total']:.0f} s: {out / 'predict' / 'report.html'}, "
      f"{picture}, {out / 'metrics.json'}")
  return m
