r"""The "not a fetal head" gate (`fbjax.geometry.head_gate`): its evidence on heads and non-heads.

    python -m benchmarks.head_gate --seg_workdir ~/runs/seg \
        --hc18 ../shared/data/hc18 --num_train 200 --out head_gate.json

Positives are HC18 images of the `train` split (`fbjax.data.splits.assign`,
the builder's rule), up to `--num_train`, on which thresholds are proposed,
and every image of the `validation` split, on which the false rejection
rate of `fbjax.geometry.head_gate.THRESHOLDS` (the gate `launch.predict` applies) is
measured. Negatives are synthetic 800x540 pictures (`negatives`): blank
(black, grey, white), noise (uniform, Rayleigh speckle), smooth gradients,
random filled shapes, an abdomen-like speckled disc without a skull, and a
femur-like bright bar. Everything goes through the segmentation model as in
`launch.predict` (`fbjax.predict.Predictor`).

Prints one JSON object (also to `--out` when given): per feature, the percentiles on
train positives and the maxima on negatives; the threshold proposed per feature (the 1st
percentile of train positives, times `--margin`); and, with the gate in use,
the rejection rate of validation heads and of each negative kind.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import tempfile
import types

import cv2
import numpy as np
from absl import app, flags

from fbjax import predict
from fbjax.data import splits
from fbjax.evaluation import heads
from fbjax.geometry import head_gate
from fbjax.phantom.negatives import KINDS, negative
from fbjax.runtime import tracking

_SEG = flags.DEFINE_string("seg_workdir", None, "Segmentation workdir (the gate's input).")
_HC18 = flags.DEFINE_string("hc18", os.path.join(os.environ.get("FBJAX_REAL_DATA", ""), "hc18"),
                            "HC18 manual folder (training_set/, CSVs).")
_NUM_TRAIN = flags.DEFINE_integer("num_train", 200, "HC18 train-split heads thresholds are "
                                  "proposed on.")
_NUM_NEGATIVES = flags.DEFINE_integer("num_negatives", 20, "Synthetic negatives per kind.")
_MARGIN = flags.DEFINE_float("margin", 0.5, "Proposed threshold = margin x 1st percentile of "
                             "train heads.")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Predictor batch size.")
_OUT = flags.DEFINE_string("out", "", "Also write the JSON here.")
flags.mark_flag_as_required("seg_workdir")


def evidence_of(predictor: predict.Predictor, paths) -> list[dict]:
  rows = []
  for k in range(0, len(paths), predictor.batch_size):
    items = [predictor.prepare(p) for p in paths[k:k + predictor.batch_size]]
    out = predictor.infer(items)
    for i, item in enumerate(items):
      size = tuple(predictor.seg.size)
      h = heads.from_segmentation(item.grids[size], out["seg"][i], item.geometries[size],
                                  item.image.shape, method=predictor.seg.method, gate={})
      rows.append({"file": str(item.path), "fitted": h.found,
                   **dataclasses.asdict(h.evidence)})
  return rows


def rejected(row: dict, thresholds: dict) -> bool:
  if row["area_fraction"] == 0 or not row["fitted"]:
    return True
  return bool(head_gate.Evidence(**{k: row[k] for k in (
      "spread", "area_fraction", "ellipse_dice", "ring_contrast", "ring_support")}).failed(
          thresholds))


def main(argv) -> dict:
  del argv
  tracking.quiet_library_logs()   # orbax's and grain's INFO chatter
  args = types.SimpleNamespace(seg_workdir=_SEG.value, hc18=_HC18.value,
                               num_train=_NUM_TRAIN.value, num_negatives=_NUM_NEGATIVES.value,
                               margin=_MARGIN.value, batch_size=_BATCH.value)
  predictor = predict.Predictor(None, args.seg_workdir, batch_size=args.batch_size, gate={})
  by_split = splits.hc18_split(pathlib.Path(args.hc18))
  rng = np.random.default_rng(0)
  train = list(rng.permutation(by_split["train"])[:args.num_train])
  val = by_split["validation"]
  pos_train = evidence_of(predictor, train)
  pos_val = evidence_of(predictor, val)
  neg = {}
  with tempfile.TemporaryDirectory() as tmp:
    for kind in KINDS:
      paths = []
      for j in range(args.num_negatives):
        p = pathlib.Path(tmp) / f"{kind}_{j:03d}.png"
        cv2.imwrite(str(p), negative(kind, rng))
        paths.append(p)
      neg[kind] = evidence_of(predictor, paths)
  feats = ("spread", "area_fraction", "ellipse_dice", "ring_contrast", "ring_support")

  def values(rows, k):
    return np.array([r[k] for r in rows if r["fitted"] and math.isfinite(r[k])])

  report = {"seg_workdir": args.seg_workdir, "num_train_heads": len(pos_train),
            "num_validation_heads": len(pos_val), "num_negatives_per_kind": args.num_negatives,
            "features": {}, "proposed": {}, "thresholds": dict(head_gate.THRESHOLDS)}
  for k in feats:
    v = values(pos_train, k)
    report["features"][k] = {
        "train_heads_percentiles_0_1_5_50": [float(np.percentile(v, q)) for q in (0, 1, 5, 50)]
        if len(v) else None,
        "negatives_max": {kind: float(values(rows, k).max()) if len(values(rows, k)) else None
                          for kind, rows in neg.items()}}
    if len(v):
      report["proposed"][k] = float(args.margin * np.percentile(v, 1))
  t = head_gate.THRESHOLDS
  report["false_rejection"] = {
      "train": float(np.mean([rejected(r, t) for r in pos_train])),
      "validation": float(np.mean([rejected(r, t) for r in pos_val])),
      "validation_rejected": [r["file"] for r in pos_val if rejected(r, t)]}
  report["rejection_of_negatives"] = {kind: float(np.mean([rejected(r, t) for r in rows]))
                                      for kind, rows in neg.items()}
  # The trade-off of the one threshold that separates heads from structured
  # negatives (a ring, not a step or a bar): rejection rates as it varies.
  all_neg = [r for rows in neg.values() for r in rows]
  report["ring_contrast_sweep"] = []
  for v in (0.0, 0.02, 0.03, 0.05, 0.08, 0.1):
    tv = dict(t, ring_contrast=v)
    report["ring_contrast_sweep"].append({
        "ring_contrast": v, "train_false_rejection": float(np.mean([rejected(r, tv)
                                                                    for r in pos_train])),
        "validation_false_rejection": float(np.mean([rejected(r, tv) for r in pos_val])),
        "negatives_rejected": float(np.mean([rejected(r, tv) for r in all_neg]))})
  report["segmenter_finds_a_head_on_negatives"] = {
      kind: float(np.mean([r["fitted"] for r in rows])) for kind, rows in neg.items()}
  text = json.dumps(report, indent=1)
  if _OUT.value:
    pathlib.Path(_OUT.value).write_text(text + "\n")
  print(text)
  return report


if __name__ == "__main__":
  app.run(main)
