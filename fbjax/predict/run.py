"""The run over a folder: listing, shards, resume (`identity.json`), the outputs at the end.
"""

from __future__ import annotations

import collections
import csv
import json
import math
import os
import pathlib
import time

import jax
from tqdm import tqdm

from fbjax.core import bundle as bundle_lib
from fbjax.predict import files
from fbjax.predict import inputs as inputs_lib
from fbjax.predict import report as report_lib
from fbjax.predict.artefacts import Segmenter
from fbjax.predict.engine import Predictor
from fbjax.predict.files import shard_folder
from fbjax.predict.outputs import (
  ERROR_COLUMNS,
  SKIPPED_COLUMNS,
  ensure_overlays,
  merge,
  write_outputs,
)
from fbjax.predict.rows import COLUMNS
from fbjax.predict.spacing import read_spacing_csv, spacing_for
from fbjax.predict.stream import iterate


def run(workdir: str | os.PathLike | None, seg_workdir: str | os.PathLike | None,
        inputs, out: str | os.PathLike, *, spacing_csv: str | None = None,
        spacing_column: str | None = None,
        pixel_spacing_mm: float | None = None, batch_size: int = 32, workers: int = 2,
        num_overlays: int = -1, report: bool = True, num_report_images: int = 12,
        num_saliency: int = 6, abnormal_threshold: float | None = None,
        segmenter: Segmenter | None = None, progress: bool = True,
        wandb_mode: str | None = None, num_shards: int = 1, shard_index: int = 0,
        gate: dict | None = None, seg_tta: bool | None = None,
        seg_stages: int | None = None, other_segmenter: bool = False,
        log=print) -> dict:
  """Predicts every image of `inputs` (folder, glob or list) of this shard; resumes.

  Rows are appended batch by batch; rerunning with the same `inputs` and
  `out` predicts only the files with neither a row nor an error row. With
  several shards, each writes under `shard_folder(...)`, and the shard that
  finds every shard complete merges them (`merge`). `gate`: the "not a fetal
  head" thresholds (default `fbjax.geometry.head_gate.THRESHOLDS`; {}: none). Returns the summary of
  the whole folder (of this shard while other shards are still running).
  """
  t0 = time.perf_counter()
  if not (num_shards >= 1 and 0 <= shard_index < num_shards):
    raise ValueError(f"shard_index {shard_index} is not in [0, num_shards={num_shards})")
  out = pathlib.Path(out)
  folder = shard_folder(out, num_shards, shard_index)
  folder.mkdir(parents=True, exist_ok=True)
  table = read_spacing_csv(spacing_csv, spacing_column) if spacing_csv else None
  if pixel_spacing_mm is not None and not (pixel_spacing_mm > 0):
    raise ValueError(f"pixel_spacing_mm must be > 0, got {pixel_spacing_mm}")
  if table is None and pixel_spacing_mm is None and (seg_workdir or segmenter):
    log("no pixel spacing given (--spacing_csv or --pixel_spacing_mm): HC/BPD/OFD in pixels "
        "only, the mm columns stay empty")
  predictor = Predictor(workdir, seg_workdir, segmenter=segmenter, batch_size=batch_size,
                        abnormal_threshold=abnormal_threshold, gate=gate, seg_tta=seg_tta,
                        seg_stages=seg_stages, other_segmenter=other_segmenter)
  check_same_run(folder, run_identity(workdir, seg_workdir, segmenter, predictor, inputs,
                                      spacing_csv, spacing_column, pixel_spacing_mm))
  overlay_dir = out / "overlays"
  overlay_dir.mkdir(exist_ok=True)
  preds = files.Appender(folder / "predictions.csv", COLUMNS)
  errs = files.Appender(folder / "errors.csv", ERROR_COLUMNS)
  done = files.done_hashes([preds.path, errs.path])
  t_load = time.perf_counter() - t0
  t_compile = predictor.warmup()
  bar = None
  if progress:

    bar = tqdm(unit="img", dynamic_ncols=True, desc="predict" if num_shards == 1 else
               f"predict shard {shard_index} of {num_shards}")
  counts = collections.Counter()
  not_in_csv = collections.Counter()   # images the spacing CSV has no row for
  skipped_tmp = folder / f"skipped.csv.{os.getpid()}.tmp"
  t1 = time.perf_counter()
  with open(skipped_tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as sf:
    skipped = csv.writer(sf, lineterminator="\n")
    skipped.writerow(SKIPPED_COLUMNS)

    def todo():
      for e in inputs_lib.scan(inputs):
        if inputs_lib.shard_of(e.key, num_shards) != shard_index:
          continue
        if e.kind == "skipped":
          skipped.writerow((e.path, e.reason))
        elif files.is_done(done, e.path):
          counts["already_done"] += 1
        else:
          yield e

    rows, errors = [], []

    def commit():
      errs.append(errors)      # a row implies its overlay exists: finish() wrote it first
      preds.append(rows)
      counts["rows"] += len(rows)
      counts["errors"] += len(errors)
      rows.clear()
      errors.clear()

    try:
      for kind, r in iterate(predictor, todo(), workers=workers,
                             spacing=lambda p: spacing_for(p, table, pixel_spacing_mm,
                                                           not_in_csv),
                             overlay_dir=overlay_dir if num_overlays != 0 else None,
                             num_overlays=num_overlays, progress=bar):
        (rows if kind == "row" else errors).append(r)
        if len(rows) + len(errors) >= batch_size:
          commit()
      commit()
    finally:
      if bar is not None:
        bar.close()
  os.replace(skipped_tmp, folder / "skipped.csv")
  t_predict = time.perf_counter() - t1
  n_new = counts["rows"] + counts["errors"]
  c = files.collect([folder], num_report_images)
  t2 = time.perf_counter()
  occ = []
  if report:
    ensure_overlays(predictor, c, overlay_dir, table, pixel_spacing_mm, workers)

    ranked = c.most_abnormal["abnormal_prob"].rows()[:num_saliency]
    occ = report_lib.occlusion_figures(predictor, ranked, out / "report_files", num_saliency)
  info = {"complete": True, "num_shards": num_shards, "shard_index": shard_index,
          "inputs": str(inputs) if not isinstance(inputs, (list, tuple)) else len(inputs),
          "workdir": str(workdir or ""), "seg_workdir": str(seg_workdir or ""),
          "num_report_images": num_report_images, "num_saliency": num_saliency,
          "report": report, "occlusion": occ, **model_info(predictor),
          "not_in_spacing_csv": int(not_in_csv["images"]),
          "timing": {"load_s": t_load, "compile_s": t_compile, "predict_s": t_predict,
                     "new_images": n_new, "resumed_after": counts["already_done"],
                     "images_per_s": n_new / t_predict if t_predict > 0 else math.nan,
                     "report_prep_s": time.perf_counter() - t2,
                     "batch_size": batch_size, "workers": workers,
                     "device": str(jax.devices()[0].device_kind)}}
  files.write_atomic(folder / "run.json", json.dumps(info, indent=1, default=str) + "\n")
  where = "" if num_shards == 1 else f"shard {shard_index} (of {num_shards}, from 0): "
  if not_in_csv["images"]:
    log(f"{where}{not_in_csv['images']} images have no row in {spacing_csv}: "
        + (f"spacing {pixel_spacing_mm} mm" if pixel_spacing_mm else "their mm columns are "
           "empty (HC/BPD/OFD in pixels)"))
  log(f"{where}predicted {counts['rows']} images, "
      f"{counts['errors']} errors in {t_predict:.1f} s ({info['timing']['images_per_s']:.1f} "
      f"images/s), {counts['already_done']} done before, {c.skipped} skipped; wrote {folder}")
  if num_shards == 1:
    return write_outputs(out, [folder], [info], wandb_mode=wandb_mode)
  missing = [i for i in range(num_shards) if not (
      files.read_json(shard_folder(out, num_shards, i) / "run.json") or {}).get("complete")]
  if missing:
    log(f"waiting for shards {missing} of {num_shards}; `launch.predict --merge {out}` "
        "merges once all are complete (the last shard to finish does it itself)")
    return files.summarize(c)
  return merge(out, wandb_mode=wandb_mode, log=log)


def _checkpoints(workdir) -> list[str]:
  """The workdir's checkpoint steps; for a shipped bundle its name, version and manifest hash."""

  found = bundle_lib.resolve(workdir)
  if found is not None:
    return [bundle_lib.identity(found)]
  d = pathlib.Path(workdir) / "checkpoints"
  return sorted(p.name for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def run_identity(workdir, seg_workdir, segmenter, predictor: Predictor, inputs, spacing_csv,
                 spacing_column, pixel_spacing_mm) -> dict:
  """What the rows of a run depend on: a rerun may only continue a run with the same."""

  ident = {"inputs": os.fspath(inputs) if not isinstance(inputs, (list, tuple)) else
           [os.fspath(x) for x in inputs], **model_info(predictor),
           "spacing_csv": os.path.abspath(spacing_csv) if spacing_csv else None,
           "spacing_column": spacing_column, "pixel_spacing_mm": pixel_spacing_mm}
  for k, w in (("workdir", workdir), ("seg_workdir", seg_workdir)):
    if w is not None and not isinstance(w, (str, os.PathLike)):
      w = getattr(w, "workdir", "")   # a loaded classifier
    found = bundle_lib.resolve(w) if w else None
    ident[k] = str(found) if found else (os.path.abspath(w) if w else None)
    ident[f"{k}_checkpoints"] = _checkpoints(w) if w else []
  if segmenter is not None:
    ident["segmenter"] = f"{list(segmenter.size)} {segmenter.method}"
  return json.loads(json.dumps(ident, default=str))


def check_same_run(folder: pathlib.Path, ident: dict) -> None:
  """Writes `identity.json` on a fresh run; a rerun must match it (else its rows would mix)."""
  path = folder / "identity.json"
  old = files.read_json(path)
  if old is None:
    files.write_atomic(path, json.dumps(ident, indent=1) + "\n")
    return
  diff = {k: (old.get(k), ident.get(k)) for k in sorted(set(old) | set(ident))
          if old.get(k) != ident.get(k)}
  if diff:
    raise ValueError(f"{folder} holds rows of another run; resuming would mix them. "
                     "Differences (before, now): "
                     + "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
                     + ". Give another --out, or remove the folder to start over.")


def model_info(predictor: Predictor) -> dict:
  t = predictor.abnormal_threshold
  d = {"abnormal_threshold": t if math.isfinite(t) else None,
       "classifier_input": predictor.input, "head_gate": predictor.gate}
  if predictor.seg_tta is not None:   # only when chosen: earlier runs keep their identity
    d["segmenter_tta"] = bool(predictor.seg_tta)
  if predictor.seg_stages is not None:
    d["segmenter_stages"] = int(predictor.seg_stages)
  if predictor.anomaly is not None:
    a = predictor.anomaly
    d.update(anomaly_threshold=a.thresholds[a.primary], anomaly_score_kind=a.primary,
             anomaly_calibration_specificity=a.specificity)
  return d
