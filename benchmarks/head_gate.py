r"""The "not a fetal head" gate (`fbjax.geometry.head_gate`): its evidence on heads and non-heads.

    python benchmarks/head_gate.py --seg_workdir ~/runs/seg \
        --hc18 ../shared/data/hc18 --num_train 200 > head_gate.json

Positives are HC18 images of the `train` split (`fbjax.data.splits.assign`,
the builder's rule), up to `--num_train`, on which thresholds are proposed,
and every image of the `validation` split, on which the false rejection
rate of `fbjax.geometry.head_gate.THRESHOLDS` (the gate `launch.predict` applies) is
measured. Negatives are synthetic 800x540 pictures (`negatives`): blank
(black, grey, white), noise (uniform, Rayleigh speckle), smooth gradients,
random filled shapes, an abdomen-like speckled disc without a skull, and a
femur-like bright bar. Everything goes through the segmentation model as in
`launch.predict` (`fbjax.predict.Predictor`).

Prints one JSON object: per feature, the percentiles on train positives and
the maxima on negatives; the threshold proposed per feature (the 1st
percentile of train positives, times `--margin`); and, with the gate in use,
the rejection rate of validation heads and of each negative kind.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import sys
import tempfile

import cv2
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fbjax import predict  # noqa: E402
from fbjax.data import splits  # noqa: E402
from fbjax.evaluation import heads  # noqa: E402
from fbjax.geometry import head_gate  # noqa: E402

KINDS = ("black", "grey", "white", "uniform_noise", "speckle", "gradient", "shapes",
         "abdomen", "femur")


def speckle(rng, shape, scale=0.25):
  """Fully developed speckle: Rayleigh amplitude, low-passed a little as a scanner does."""
  s = rng.rayleigh(scale, shape).astype(np.float32)
  return cv2.GaussianBlur(s, (0, 0), 1.0)


def negative(kind: str, rng: np.random.Generator, hw=(540, 800)) -> np.ndarray:
  """One synthetic picture without a fetal head, uint8 (H, W)."""
  h, w = hw
  if kind == "black":
    img = np.zeros(hw, np.float32)
  elif kind == "grey":
    img = np.full(hw, rng.uniform(0.2, 0.8), np.float32)
  elif kind == "white":
    img = np.ones(hw, np.float32)
  elif kind == "uniform_noise":
    img = rng.uniform(0, 1, hw).astype(np.float32)
  elif kind == "speckle":
    img = speckle(rng, hw)
  elif kind == "gradient":
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = rng.uniform(0, np.pi)
    img = (np.cos(t) * xx / w + np.sin(t) * yy / h)
    img = (img - img.min()) / max(np.ptp(img), 1e-6)
  elif kind == "shapes":
    img = np.zeros(hw, np.float32)
    for _ in range(rng.integers(2, 6)):
      v = float(rng.uniform(0.2, 1.0))
      c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
      if rng.uniform() < 0.5:
        ax = (int(rng.integers(20, 250)), int(rng.integers(20, 200)))
        cv2.ellipse(img, c, ax, float(rng.uniform(0, 180)), 0, 360, v, -1)
      else:
        d = (int(rng.integers(20, 300)), int(rng.integers(20, 200)))
        cv2.rectangle(img, c, (c[0] + d[0], c[1] + d[1]), v, -1)
  elif kind == "abdomen":
    # A round, homogeneous speckled region in a darker field: an abdomen has
    # a thin soft-tissue wall, no bright bony ring.
    img = 0.3 * speckle(rng, hw)
    mask = np.zeros(hw, np.float32)
    ax = (int(rng.integers(120, 220)), int(rng.integers(100, 180)))
    cv2.ellipse(mask, (w // 2 + int(rng.integers(-80, 80)), h // 2 + int(rng.integers(-60, 60))),
                ax, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    img = img + mask * speckle(rng, hw, 0.35)
  elif kind == "femur":
    img = 0.4 * speckle(rng, hw)
    c = (w // 2 + int(rng.integers(-100, 100)), h // 2 + int(rng.integers(-80, 80)))
    length, t = float(rng.uniform(150, 350)), float(rng.uniform(0, np.pi))
    d = (int(length / 2 * np.cos(t)), int(length / 2 * np.sin(t)))
    cv2.line(img, (c[0] - d[0], c[1] - d[1]), (c[0] + d[0], c[1] + d[1]), 1.0,
             int(rng.integers(10, 22)))
    img = cv2.GaussianBlur(img, (0, 0), 1.5)
  else:
    raise ValueError(f"unknown negative kind {kind!r}; known: {KINDS}")
  return np.clip(np.rint(np.clip(img, 0, 1) * 255), 0, 255).astype(np.uint8)


def hc18_split(root: pathlib.Path) -> dict[str, list[pathlib.Path]]:
  """HC18 labelled image paths by split, by the builder's own scan and split rule."""
  from fbjax.data import builders  # noqa: PLC0415

  # The builder module as fbjax imports it (once; tfds registers a builder per import).
  hc18 = builders.builder_module("hc18")
  labelled, unlabelled = hc18.scan(root)
  split_of = splits.assign(i.group for i in labelled + unlabelled)
  out: dict[str, list[pathlib.Path]] = {}
  for i in labelled:
    out.setdefault(split_of[i.group], []).append(pathlib.Path(i.image))
  return {k: sorted(v) for k, v in out.items()}


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


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--seg_workdir", required=True)
  ap.add_argument("--hc18", default=os.path.join(os.environ.get("FBJAX_REAL_DATA", ""), "hc18"))
  ap.add_argument("--num_train", type=int, default=200)
  ap.add_argument("--num_negatives", type=int, default=20, help="per kind")
  ap.add_argument("--margin", type=float, default=0.5,
                  help="proposed threshold = margin x 1st percentile of train heads")
  ap.add_argument("--batch_size", type=int, default=16)
  args = ap.parse_args(argv)
  predictor = predict.Predictor(None, args.seg_workdir, batch_size=args.batch_size, gate={})
  by_split = hc18_split(pathlib.Path(args.hc18))
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
  print(json.dumps(report, indent=1))
  return report


if __name__ == "__main__":
  main()
