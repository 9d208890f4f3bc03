"""The shipped bundle measured as shipped, on every validation split, beside the shortcut.

    m = bundle_eval.validation("fbjax_head_v1", real_data="../shared/data", data_dir=TMP)

The release recipe writes these numbers into the bundle's manifest; a real-data test
measures them again and compares. Everything runs through the bundle's own models
(float16 weights read back as float32), on the validation splits only:

  segmentation  HC18 validation, both stages from the original image (`segment_eval`):
                head Dice, HC error (mean, median), images above 10 %, by tercile and by
                head-size band (HC < 100, 100-166, 166-182, > 182 mm), beside the
                prototype's threshold segmentation;
  planes        FETAL_PLANES_DB + the abnormalities set's normals, aligned heads cut
                around the bundle's ellipses: macro-F1 over TT/TC/TV/other and TT/TC/TV,
                per class, ECE before and after the temperature;
  abnormal      AUROC, sensitivity and specificity at the shipped threshold (the
                abnormalities set; with FETAL_PLANES_DB's normals pooled; HC18's
                screening images), condition macro-F1;
  anomaly       the unsupervised score's AUROC and its operating point;

each classification number beside the thumbnail shortcut (`fbjax.evaluation.baselines`) trained on
the same training images. Validation images also set the thresholds and temperatures,
so the operating points here are not held out (the manifest says so).
"""

from __future__ import annotations

import math

import numpy as np

from fbjax.core import metrics
from fbjax.core.bundle import fill_paths as fill
from fbjax.data import sources
from fbjax.evaluation import anomaly as anomaly_lib
from fbjax.evaluation import (
  anomaly_fit,
  baselines,
  evaluators,
  head_tables,
  networks,
  segment_eval,
)

PLANES_TT_TC_TV = [0, 1, 2]
BANDS_MM = ((0.0, 100.0), (100.0, 166.0), (166.0, 182.0), (182.0, math.inf))


def _r(v, nd: int = 4):
  return None if v is None or not math.isfinite(float(v)) else round(float(v), nd)


# ---------------------------------------------------------------------------
# Segmentation
# ---------------------------------------------------------------------------


def hc_bands(rows, method: str) -> dict:
  """HC error of `method` by band of the reference HC (`BANDS_MM`)."""
  out = {}
  ref = np.array([r["ref_hc_mm"] for r in rows], np.float64)
  for lo, hi in BANDS_MM:
    sel = [r for r, h in zip(rows, ref, strict=True) if lo <= h < hi]
    err = np.array([r[f"{method}_hc_abs_mm"] for r in sel], np.float64)
    rel = np.array([r[f"{method}_hc_rel"] for r in sel], np.float64)
    name = f"<{hi:.0f}" if lo == 0 else (f">{lo:.0f}" if math.isinf(hi) else f"{lo:.0f}-{hi:.0f}")
    out[name] = {"n": len(sel), "hc_abs_mm_mean": _r(np.nanmean(err), 3) if len(sel) else None,
                 "n_over_10pct": int(np.sum(~(rel <= 0.10)))}
  return out


def segmentation(seg, block, *, tta: bool | None = None, split: str = "validation") -> dict:
  """The two-stage segmenter on `block` (HC18) `split`, measured in the original images."""
  src = sources.block_source(block, split)
  predict = seg.make_predict(flip=tta)
  method = seg.config.get("eval_method", "robust")
  rows, s = segment_eval.evaluate(src, lambda x: np.asarray(predict(x)), size=seg.size,
                                  methods=("prototype", method), batch_size=16,
                                  overlay_method=method)

  def part(m):
    return {"dice_ellipse": _r(s[f"{m}_dice_ellipse"]["mean"]),
            "hc_abs_mm_mean": _r(s[f"{m}_hc_abs_mm"]["mean"], 3),
            "hc_abs_mm_median": _r(s[f"{m}_hc_abs_mm"]["median"], 3),
            "hc_rel_mean": _r(s[f"{m}_hc_rel"]["mean"]),
            "n_over_10pct": int(s[f"{m}_n_over_10pct"]), "fail_rate": _r(s[f"{m}_fail_rate"])}

  worst = sorted(rows, key=lambda r: -np.nan_to_num(r[f"{method}_hc_rel"], nan=np.inf))[:5]
  return {"n": len(rows), "split": split, "method": method,
          "tta": bool(seg.config.get("eval_flip", False)) if tta is None else bool(tta),
          "dice_head": _r(s["seg_dice_head"]["mean"]), **part(method),
          "terciles": s[f"{method}_hc_terciles"], "bands": hc_bands(rows, method),
          "worst": [{"id": segment_eval._text(r["id"]), "ref_hc_mm": _r(r["ref_hc_mm"], 1),
                     "hc_rel": _r(r[f"{method}_hc_rel"])} for r in worst],
          "prototype": {"dice_head": _r(s["prototype_dice_head"]["mean"]), **part("prototype")}}


# ---------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------


def member_sources(member, folder, values: dict, split: str, *, trained: bool = False) -> dict:
  """{source name: source} a member of the classifier set was validated on (or trained on:
  `trained`, at their training splits), aligned heads cut around the bundle's ellipses."""
  cfg = fill(member.config, values)
  with cfg.unlocked():
    cfg.input.seg_workdir = str(folder)
  out = {}
  for name, block in cfg.sources.items():
    if (block.weight > 0) if trained else block.get("eval", False):
      out[name] = sources.block_source(block, block.train_split if trained else split,
                                       model_input=cfg.input, head_table=head_tables.table)
  return out


def _calibrated(member, task: str, p: np.ndarray) -> np.ndarray:
  t = ((member.calibration or {}).get("tasks") or {}).get(task, {}).get("temperature")
  return metrics.apply_temperature(p, float(t)) if t else p


def _no_head(srcs: dict) -> dict:
  return {n: dict(getattr(s, "head_counts", None) or {}) for n, s in srcs.items()}


def planes(member, folder, values: dict, split: str = "validation") -> dict:
  srcs = member_sources(member, folder, values, split)
  res = {n: evaluators.predict_source(member, s, 64) for n, s in srcs.items()}
  y = np.concatenate([r["label_plane"] for r in res.values()])
  p = np.concatenate([r["plane"] for r in res.values()])
  q = _calibrated(member, "plane", p)
  s = metrics.classification_summary(y, p, member.class_names("plane"))
  train = [baselines.thumbnail_features(s) for s in member_sources(
      member, folder, values, split, trained=True).values()]
  shortcut = baselines.fit(np.concatenate([f[0] for f in train]),
                           np.concatenate([f[1]["plane"] for f in train]))
  base = np.concatenate([baselines.probs(shortcut, baselines.thumbnail_features(src)[0], 4)
                         for src in srcs.values()])   # the same images, in the same order
  return {"n": int(np.sum(y >= 0)), "sources": {n: int(np.sum(r["label_plane"] >= 0))
                                                for n, r in res.items()},
          "no_head": _no_head(srcs),
          "macro_f1": _r(s["macro_f1"]),
          "macro_f1_tt_tc_tv": _r(metrics.macro_f1(y, p.argmax(1), classes=PLANES_TT_TC_TV)),
          "accuracy": _r(s["accuracy"]),
          "per_class_f1": {k: _r(v["f1"]) for k, v in s["per_class"].items()},
          "support": {k: int(v["support"]) for k, v in s["per_class"].items()},
          "confusion_matrix": s["confusion_matrix"],
          "ece": _r(metrics.expected_calibration_error(p, y)),
          "ece_calibrated": _r(metrics.expected_calibration_error(q, y)),
          "shortcut": {"macro_f1": _r(metrics.macro_f1(y, base.argmax(1), 4)),
                       "macro_f1_tt_tc_tv": _r(metrics.macro_f1(
                           y, base.argmax(1), classes=PLANES_TT_TC_TV))}}


def _binary(y, score, threshold) -> dict:
  y = np.asarray(y)
  sens, spec = metrics.sensitivity_specificity(y, score, threshold)
  return {"n": int(np.sum(y >= 0)), "normals": int(np.sum(y == 0)),
          "auroc": _r(metrics.auroc(y, score)) if len(np.unique(y[y >= 0])) == 2 else None,
          "sensitivity": _r(sens) if np.any(y == 1) else None,
          "specificity": _r(spec) if np.any(y == 0) else None}


def abnormal(member, folder, values: dict, split: str = "validation") -> dict:
  srcs = member_sources(member, folder, values, split)
  res = {n: evaluators.predict_source(member, s, 64) for n, s in srcs.items()}
  thr = float(member.decision["abnormal_threshold"])
  pool = tuple(member.config.get("decision_sources", ())) or tuple(res)
  out = {"threshold": _r(thr, 6), "threshold_rests_on": {
      "normals": member.decision.get("validation_normals"),
      "sources": member.decision.get("sources")}, "no_head": _no_head(srcs), "sources": {}}
  for n, r in res.items():
    out["sources"][n] = _binary(r["label_abnormal"], r["abnormal"][:, 1], thr)
  pooled = [n for n in pool if n in res]
  y = np.concatenate([res[n]["label_abnormal"] for n in pooled])
  pa = np.concatenate([res[n]["abnormal"][:, 1] for n in pooled])
  out["pooled"] = {"sources": pooled, **_binary(y, pa, thr)}
  yc, pc = res["fba"]["label_condition"], res["fba"]["condition"]
  names = member.class_names("condition")
  present = sorted(int(c) for c in np.unique(yc[yc >= 0]))
  out["condition"] = {"n": int(np.sum(yc >= 0)), "classes_present": len(present),
                      "macro_f1": _r(metrics.macro_f1(yc, pc.argmax(1), classes=present)),
                      "accuracy": _r(metrics.accuracy(yc, pc.argmax(1)))}
  for t, p, lab in (("abnormal", np.concatenate([r["abnormal"] for r in res.values()]),
                     np.concatenate([r["label_abnormal"] for r in res.values()])),
                    ("condition", pc, yc)):
    out[f"{t}_ece"] = _r(metrics.expected_calibration_error(p, lab))
    out[f"{t}_ece_calibrated"] = _r(metrics.expected_calibration_error(
        _calibrated(member, t, p), lab))
  # The shortcut: trained on the same training images; its threshold at the same
  # specificity on its own validation normals of the same pooled sources.
  train = list(member_sources(member, folder, values, split, trained=True).values())
  feats = [baselines.thumbnail_features(s) for s in train]
  x = np.concatenate([f[0] for f in feats])
  model_ab = baselines.fit(x, np.concatenate([f[1]["abnormal"] for f in feats]))
  val_x = {n: baselines.thumbnail_features(srcs[n])[0] for n in res}
  base = {n: baselines.probs(model_ab, val_x[n], 2)[:, 1] for n in res}
  bp = np.concatenate([base[n] for n in pooled])
  spec = float(member.config.get("decision_specificity", 0.95))
  b_thr = metrics.threshold_at_specificity(bp[y == 0], spec)
  lookup = networks.condition_lookup(member.config.condition_classes)
  yc_tr = np.concatenate([f[1]["condition"] for f in feats])
  yc_tr = np.where(yc_tr >= 0, lookup[np.maximum(yc_tr, 0)], -1)
  model_c = baselines.fit(x, yc_tr)
  bc = baselines.probs(model_c, val_x["fba"], len(names))
  out["shortcut"] = {"threshold": _r(b_thr, 6),
                     "sources": {n: _binary(res[n]["label_abnormal"], base[n], b_thr)
                                 for n in res},
                     "pooled": _binary(y, bp, b_thr),
                     "condition_macro_f1": _r(metrics.macro_f1(yc, bc.argmax(1),
                                                               classes=present))}
  return out


def anomaly(am, member, folder, values: dict, split: str = "validation") -> dict:
  """The unsupervised score on whole images of the abnormal member's validated sources."""
  cfg = fill(member.config, values)
  out = {"kind": am.primary, "threshold": _r(am.thresholds[am.primary], 6),
         "calibrated_on": am.info.get("calibrated_on"), "n_calibrate": am.info.get("n_calibrate"),
         "sources": {}}
  ys, ss = [], []
  fn = None
  for n, block in cfg.sources.items():
    if not block.get("eval", False):
      continue

    fn = fn or anomaly_lib.make_score_fn(am.ae)
    src = sources.block_source(block, split, masked=False)
    o, y = anomaly_fit.scores_over(am.ae, src, 64, fn)
    s = am.scores(o)[am.primary]
    out["sources"][n] = _binary(y, s, am.thresholds[am.primary])
    if n in (am.info.get("calibrated_on") or ()):
      ys.append(y)
      ss.append(s)
  if ys:
    out["pooled"] = _binary(np.concatenate(ys), np.concatenate(ss), am.thresholds[am.primary])
  return out


def validation(bundle, *, real_data: str, data_dir: str, work: str = "",
               seg_tta: bool | None = None) -> dict:
  """Every validation measurement of a loaded bundle (see the module docstring)."""
  values = {"real_data": real_data, "data_dir": data_dir, "work": work or data_dir}
  seg = bundle.segmenter
  seg_block = fill(seg.config, values).sources.hc18
  clf = bundle.classifier
  return {"segmentation": segmentation(seg, seg_block, tta=seg_tta),
          "planes": planes(clf.members["planes"], bundle.folder, values),
          "abnormal": abnormal(clf.members["abnormal"], bundle.folder, values),
          "anomaly": anomaly(bundle.anomaly, clf.members["abnormal"], bundle.folder, values)}
