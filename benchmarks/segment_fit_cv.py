r"""The head-ellipse fit's parameters chosen by group K-fold, not on the set they are scored on.

  python -m benchmarks.segment_fit_cv --workdir /tmp/segbench/stage2 \
      --hc18 ../shared/data/hc18 --split validation --folds 5 --out /tmp/fit_cv.json

The segmenter of `--workdir` (one or two stages: `fbjax.evaluation.inference.load`)
predicts every image of the split once; each fit variant (the direct fit,
and RANSAC with inlier bands of `--bands` times the head radius) then
measures every image; for a two-stage segmenter each number of stage-2
refinement passes in `--refine` (`coarse_fine.TwoStage`) is a further
variant (`r<passes>_<fit>`). The images are split into `--folds` folds by group
(patient: no patient in two folds); for each fold the variant with the lowest
mean absolute HC error on the OTHER folds is chosen and scored on the fold.
Prints (and writes) the per-fold choice and error, their mean and spread,
every image's held-out error pooled (`held_out_images`: mean, median, images
above 10 % and the error by HC tercile), and each variant's error over all
images for reference. The chosen variant's
held-out error is the number to quote; the all-images minimum is tuned on
the images it is measured on and is not.
"""

from __future__ import annotations

import json
import os
import pathlib
import time

import numpy as np
from absl import app, flags

from fbjax.core import metrics
from fbjax.data import sources
from fbjax.evaluation import inference, segment_eval
from fbjax.geometry import biometry, segment_post

_WORKDIR = flags.DEFINE_string("workdir", None, "Trained segmenter workdir.")
_HC18 = flags.DEFINE_string(
    "hc18", os.path.join(os.environ.get("FBJAX_REAL_DATA", "../shared/data"), "hc18"),
    "HC18 manual folder.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "tfds data_dir (default: fbjax's cache).")
_SPLIT = flags.DEFINE_string("split", "validation", "HC18 split.")
_FOLDS = flags.DEFINE_integer("folds", 5, "Group folds.")
_BANDS = flags.DEFINE_list("bands", ["0.02", "0.03", "0.04", "0.06", "0.08"],
                           "RANSAC inlier bands (fractions of the head radius).")
_REFINE = flags.DEFINE_list("refine", None, "Two-stage: stage-2 refinement passes to "
                            "compare (default: the workdir's own).")
_LIMIT = flags.DEFINE_integer("limit", None, "First N images only (smoke runs).")
_OUT = flags.DEFINE_string("out", None, "JSON output path.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  os.environ.setdefault("WANDB_MODE", "disabled")

  model = inference.load(_WORKDIR.value, kind="segmenter")
  block = model.config.sources.hc18.copy_and_resolve_references()
  block.manual_dir = os.path.abspath(_HC18.value)
  if _DATA_DIR.value:
    block.data_dir = _DATA_DIR.value
  src = sources.block_source(block, _SPLIT.value)
  n = len(src) if _LIMIT.value is None else min(_LIMIT.value, len(src))
  predict = model.make_predict()
  fits = {"direct": dict(method="direct")}
  fits.update({f"robust_{b}": dict(method="robust", ransac_rel_threshold=float(b))
               for b in _BANDS.value})
  passes = [int(r) for r in _REFINE.value] if _REFINE.value and model.two_stage else [None]
  variants = {(f"r{r}_{f}" if r is not None else f): (r, kw)
              for r in passes for f, kw in fits.items()}
  errors = {v: [] for v in variants}
  groups, ids, refs = [], [], []
  t0 = time.perf_counter()
  for start in range(0, n, 16):
    exs = [src[i] for i in range(start, min(n, start + 16))]
    grid = [segment_eval.grid_input(ex, model.size) for ex in exs]
    x = np.stack([gx for gx, _ in grid])
    probs = {}
    for r in passes:
      if r is not None:
        predict.refine = r
      probs[r] = np.asarray(predict(x))
    for k, (ex, (_, g)) in enumerate(zip(exs, grid, strict=True)):
      groups.append(segment_eval._text(ex["group"]))
      ids.append(segment_eval._text(ex["id"]))
      refs.append(float(ex["hc_mm"]))
      for v, (r, kw) in variants.items():
        e = segment_post.fitted_ellipse(probs[r][k, ..., 0], g, **kw)
        hc = biometry.biometry_from_ellipse(e, float(ex["pixel_spacing_mm"])).hc_mm
        errors[v].append(float(metrics.hc_abs_diff_mm(hc, float(ex["hc_mm"]))))
    print(f"{len(groups)}/{n} images, {time.perf_counter() - t0:.0f} s", flush=True)
  res = {"workdir": os.path.abspath(_WORKDIR.value), "split": _SPLIT.value, "n": n,
         "two_stage": model.two_stage, "folds_k": _FOLDS.value,
         "seconds": time.perf_counter() - t0,
         **segment_eval.kfold_choice({v: np.array(e) for v, e in errors.items()},
                                     segment_eval.group_folds(groups, _FOLDS.value),
                                     ref_hc_mm=np.array(refs), ids=ids)}
  text = json.dumps(res, indent=1)
  print(text)
  if _OUT.value:
    pathlib.Path(_OUT.value).write_text(text)


if __name__ == "__main__":
  app.run(main)
