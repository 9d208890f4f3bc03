"""The outputs of a run: shards merged, the summary, the report, wandb.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
import time
from collections.abc import Sequence

import cv2
import ml_collections

from fbjax.data import io
from fbjax.predict import files
from fbjax.predict import report as report_lib
from fbjax.predict.engine import Predictor
from fbjax.predict.files import shard_folder
from fbjax.predict.spacing import spacing_for
from fbjax.runtime import tracking

ERROR_COLUMNS = ("file", "reason")


SKIPPED_COLUMNS = ("file", "reason")


def ensure_overlays(predictor: Predictor, c: files.Collected, overlay_dir: pathlib.Path,
                    table, pixel_spacing_mm, workers: int) -> int:
  """Writes the overlays of the images a report shows, whatever `num_overlays` said."""
  want = {r["file"]: r for rows in ([t.rows() for t in c.most_abnormal.values()]
                                    + [c.least_certain.rows()]) for r in rows}
  todo = [f for f in want if not (overlay_dir / files.overlay_name(f)).exists()]
  n = 0
  for i in range(0, len(todo), predictor.batch_size):
    items = []
    for f in todo[i:i + predictor.batch_size]:
      try:
        items.append(predictor.prepare(pathlib.Path(f)))
      except (io.ImageReadError, OSError) as e:
        # Gone or changed since its row was written: the report shows it without a picture.
        logging.warning("%s: no overlay for the report (%s)", f, e)
    if not items:
      continue
    out = predictor.infer(items)
    for k, item in enumerate(items):
      predictor.finish(item, out, k, spacing_for(item.path, table, pixel_spacing_mm),
                       overlay_dir / files.overlay_name(str(item.path)))
      n += 1
  return n


def _concat(sources: Sequence[pathlib.Path], dest: pathlib.Path) -> None:
  """Concatenates CSVs with one header (streamed) into `dest`, atomically."""
  tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
  with open(tmp, "wb") as f:
    header = None
    for src in sources:
      if not src.exists():
        continue
      with open(src, "rb") as g:
        first = g.readline()
        if header is None:
          header = first
          f.write(first)
        elif first != header:
          raise ValueError(f"{src}: columns {first!r} differ from {header!r}")
        while chunk := g.read(1 << 20):
          f.write(chunk)
  os.replace(tmp, dest)


def merge(out: str | os.PathLike, *, wandb_mode: str | None = None, log=print) -> dict:
  """One predictions.csv, errors.csv, skipped.csv, summary.json and report.html from the shards."""
  out = pathlib.Path(out)
  folders = sorted(p for p in (out / "shards").glob("*-of-*") if p.is_dir())
  if not folders:
    raise FileNotFoundError(f"{out}/shards: no shard folders to merge (run launch.predict "
                            "with --num_shards first)")
  n = {int(p.name.split("-of-")[1]) for p in folders}
  if len(n) != 1:
    raise ValueError(f"{out}/shards: shards of different runs ({sorted(n)} shards); "
                     "remove the stale ones")
  num_shards = n.pop()
  infos, missing = [], []
  for i in range(num_shards):
    info = files.read_json(shard_folder(out, num_shards, i) / "run.json")
    if not (info or {}).get("complete"):
      missing.append(i)
    infos.append(info)
  if missing:
    raise ValueError(f"{out}: shards {missing} of {num_shards} are not complete "
                     "(rerun them with the same --input, --out and --num_shards)")
  folders = [shard_folder(out, num_shards, i) for i in range(num_shards)]
  for name in ("predictions.csv", "errors.csv", "skipped.csv"):
    _concat([f / name for f in folders], out / name)
  summary = write_outputs(out, [out], infos, wandb_mode=wandb_mode)
  log(f"merged {num_shards} shards: {summary['predicted']} images, {summary['errors']} errors, "
      f"{summary['skipped']} skipped; wrote {out}")
  return summary


def write_outputs(out: pathlib.Path, folders: Sequence[pathlib.Path], infos: Sequence[dict],
                  *, wandb_mode: str | None = None) -> dict:
  """summary.json and report.html of the whole folder, from the CSVs in `folders`."""
  first = infos[0]
  c = files.collect(folders, first["num_report_images"])
  summary = files.summarize(c)
  for k in ("abnormal_threshold", "anomaly_threshold", "anomaly_score_kind",
            "anomaly_calibration_specificity", "inputs", "workdir", "seg_workdir"):
    if k in first:
      summary[k] = first[k]
  timings = [i["timing"] for i in infos]
  summary["timing"] = dict(timings[0]) if len(timings) == 1 else {
      "shards": timings, "new_images": sum(t["new_images"] for t in timings),
      "images_per_s": sum(t["images_per_s"] for t in timings
                          if math.isfinite(t["images_per_s"])),
      "device": timings[0]["device"]}
  if first.get("report", True):

    t2 = time.perf_counter()
    occ = sorted((o for i in infos for o in i.get("occlusion", [])),
                 key=lambda o: (-o["abnormal_prob"], o["file"]))[:first["num_saliency"]]
    report_lib.write(out, c, summary, occlusion=occ)
    summary["timing"]["report_s"] = time.perf_counter() - t2
  files.write_atomic(out / "summary.json", json.dumps(summary, indent=1, default=str) + "\n")
  if wandb_mode:
    _log_wandb(out, c, summary, wandb_mode)
  return summary


def _log_wandb(out: pathlib.Path, c: files.Collected, summary: dict, mode: str) -> None:
  """The run summary, the report's figures and example overlays to wandb (`mode`)."""


  cfg = ml_collections.ConfigDict({"task": "predict", "workdir": summary["workdir"],
                                   "seg_workdir": summary["seg_workdir"],
                                   "wandb": {"mode": mode, "project": "fbjax",
                                             "tags": ("predict",)}})
  writer = tracking.Writer(out / "wandb_run", cfg)
  try:
    flat = {f"predict/{k}": v for k, v in summary.items() if isinstance(v, (int, float))}
    flat.update({f"predict/{k}": v for k, v in summary["timing"].items()
                 if isinstance(v, (int, float))})
    writer.scalars(0, flat)
    figs = {}
    for p in sorted((out / "report_files").glob("*.png"))[:24]:
      figs[f"predict/{p.stem}"] = cv2.imread(os.fspath(p))[..., ::-1] / 255.0
    for r in c.top_abnormal()[1][:8]:
      name = files.overlay_name(r["file"])
      img = cv2.imread(os.fspath(out / "overlays" / name))
      if img is not None:
        figs[f"predict/examples/{pathlib.Path(name).stem}"] = img[..., ::-1] / 255.0
    writer.images(0, figs)
  finally:
    writer.close()
