"""Prediction over a folder of images: one CSV row per image, overlays and an HTML report.

    from fbjax import predict
    summary = predict.run("runs/cls", "runs/seg", "images/", "out/", pixel_spacing_mm=0.15)

Per image: the image is read (`fbjax.data.io`: PNG/JPEG, 8/16-bit, grey/RGB/
RGBA) and letterboxed onto each model's grid; the classifier
(`fbjax.trainers.classify`, with its enhancement chain) gives the plane,
abnormal and condition probabilities; the autoencoder of `<workdir>/anomaly/`
gives the anomaly score; the segmentation model (`seg_workdir`, optional)
gives head / skull / brain probabilities, from which the head ellipse is
fitted and mapped back to the original image (`fbjax.segment_post`), so
HC, BPD and OFD are measured in original pixels and, where the pixel spacing
is known (`spacing_csv` or `pixel_spacing_mm`), in millimetres.

Mechanics: files are read and decoded by a thread pool (OpenCV releases the
GIL) while the device runs the previous batch; every batch has the same shape
(the last one is padded), so each network is compiled once; post-processing
(ellipse fit, overlay PNG) runs in the same pool. Unreadable files go to
`errors.csv` with the reason and the run goes on.

Outputs under `out`:
  predictions.csv   one row per readable image (columns: `COLUMNS`)
  errors.csv        file, reason (one row per unreadable file)
  overlays/*.png    the image with masks, head ellipse and a caption
  report.html       counts, distributions, the most abnormal and least certain
                    images, and occlusion maps of where the abnormal head looks
  summary.json      the counts and timings shown in the report
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import csv
import dataclasses
import glob
import json
import logging
import math
import os
import pathlib
import time
from collections.abc import Callable, Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from fbjax import anomaly as anomaly_lib
from fbjax import biometry, inference, plots, segment_post
from fbjax.data import io, preprocess

COLUMNS = (
    "file", "width", "height", "pixel_spacing_mm",
    "plane", "plane_prob", "abnormal_prob", "abnormal", "condition", "condition_prob",
    "anomaly_score", "anomaly", "anomaly_recon_error",
    "hc_mm", "bpd_mm", "ofd_mm", "hc_px", "bpd_px", "ofd_px",
    "seg_quality", "head_area_fraction", "ellipse_dice", "uncertainty", "overlay")
ERROR_COLUMNS = ("file", "reason")
SEG_QUALITY = ("ok", "no_head", "fit_failed", "poor_fit", "cut_by_border", "no_segmenter")


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


def list_inputs(spec: str | os.PathLike | Sequence) -> list[pathlib.Path]:
  """Files named by a folder (every non-hidden file below it), a glob, or a list of paths."""
  if isinstance(spec, (list, tuple)):
    return [pathlib.Path(p) for p in spec]
  s = os.fspath(spec)
  p = pathlib.Path(s).expanduser()
  if p.is_dir():
    return sorted(f for f in p.rglob("*") if f.is_file()
                  and not any(part.startswith(".") for part in f.relative_to(p).parts))
  if p.is_file():
    return [p]
  hits = sorted(pathlib.Path(h) for h in glob.glob(os.path.expanduser(s), recursive=True))
  hits = [h for h in hits if h.is_file()]
  if not hits:
    raise FileNotFoundError(f"--input {s!r}: no such folder or file, and no file matches it")
  return hits


def read_spacing_csv(path: str | os.PathLike) -> dict[str, float]:
  """{file name: mm per pixel} from a CSV with a file column and a spacing column.

  The file column is the first whose name contains "file" or "image"; the
  spacing column the first whose name contains "spacing", "pixel size" or
  "mm" (HC18's `test_set_pixel_size.csv` has `filename,pixel size(mm)`).
  Keys are the names as written and their stems, so either matches.
  """
  path = pathlib.Path(path)
  with open(path, newline="", encoding="utf-8-sig") as f:
    rows = list(csv.reader(f))
  if not rows:
    raise ValueError(f"{path}: empty spacing CSV")
  head = [h.strip().lower() for h in rows[0]]
  fcol = next((i for i, h in enumerate(head) if "file" in h or "image" in h), None)
  scol = next((i for i, h in enumerate(head) if any(k in h for k in ("spacing", "pixel size",
                                                                     "mm"))), None)
  if fcol is None or scol is None:
    raise ValueError(f"{path}: need a file column and a spacing column, header is {rows[0]}")
  out = {}
  for n, r in enumerate(rows[1:], start=2):
    if len(r) <= max(fcol, scol) or not r[fcol].strip():
      continue
    try:
      v = float(r[scol])
    except ValueError:
      raise ValueError(f"{path}:{n}: spacing {r[scol]!r} is not a number") from None
    name = r[fcol].strip()
    out[name] = v
    out[pathlib.Path(name).name] = v
    out[pathlib.Path(name).stem] = v
  return out


def spacing_for(path: pathlib.Path, table: dict[str, float] | None,
                default: float | None) -> float:
  if table:
    for key in (str(path), path.name, path.stem):
      if key in table:
        return float(table[key])
  return float(default) if default else math.nan


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Segmenter:
  """A segmentation model: (B, H, W) grid images -> (B, H, W, 3) head/skull/brain probs."""

  size: tuple[int, int]
  predict: Callable
  method: str = "robust"


def load_segmenter(seg_workdir: str | os.PathLike) -> Segmenter:
  """The segmentation workdir's model (`inference.load`: what the workdir records)."""
  model = inference.load(seg_workdir, kind="segmenter")
  return Segmenter(size=model.size, predict=model.make_predict(),
                   method=model.config.get("eval_method", "robust"))


@dataclasses.dataclass
class Prepared:
  """One decoded image: the original (float grey) and its grid versions."""

  path: pathlib.Path
  image: np.ndarray
  grids: dict          # size -> (H, W) float32
  geometries: dict     # size -> preprocess.Geometry


class Predictor:
  """Everything that runs per batch: the classifier, the anomaly model, the segmenter."""

  def __init__(self, workdir: str | os.PathLike | None, seg_workdir=None, *,
               segmenter: Segmenter | None = None, batch_size: int = 32,
               abnormal_threshold: float | None = None, overlay_max_side: int = 512):
    self.batch_size = int(batch_size)
    self.clf = inference.load(workdir, kind="classifier") if workdir else None
    self.anomaly = anomaly_lib.load(workdir) if workdir and anomaly_lib.exists(workdir) else None
    self.seg = segmenter or (load_segmenter(seg_workdir) if seg_workdir else None)
    if self.clf is None and self.seg is None:
      raise ValueError("nothing to predict with: give a classification workdir and/or a "
                       "segmentation workdir")
    decision = pathlib.Path(workdir or "") / "decision.json"
    if abnormal_threshold is None and self.clf and "abnormal" in self.clf.tasks:
      if decision.exists():
        abnormal_threshold = json.loads(decision.read_text())["abnormal_threshold"]
      else:
        logging.warning("%s not found (a run stopped before its final evaluation?): the "
                        "abnormal decision threshold is 0.5, not one calibrated on normal "
                        "validation images", decision)
    abnormal_threshold = 0.5 if abnormal_threshold is None else abnormal_threshold
    self.abnormal_threshold = float(abnormal_threshold)
    self.overlay_max_side = overlay_max_side
    self.sizes = sorted({tuple(s) for s in (
        self.clf.size if self.clf else None, self.anomaly.ae.size if self.anomaly else None,
        self.seg.size if self.seg else None) if s})
    cls_fn = self.clf.make_predict(jit=False) if self.clf else None
    ae_fn = anomaly_lib.make_score_fn(self.anomaly.ae, jit=False) if self.anomaly else None
    seg_fn = self.seg.predict if self.seg else None

    def run(grids):
      out = {}
      if cls_fn is not None:
        out["cls"] = cls_fn(grids[tuple(self.clf.size)])
        out["cls"].pop("features", None)
      if ae_fn is not None:
        o = ae_fn(grids[tuple(self.anomaly.ae.size)])
        out["ae"] = {"features": o["features"], "recon": o["recon"]}
      if seg_fn is not None:
        out["seg"] = seg_fn(grids[tuple(self.seg.size)])
      return out

    self._run = jax.jit(run)

  # -- CPU side ---------------------------------------------------------------

  def prepare(self, path: pathlib.Path) -> Prepared:
    """Reads and letterboxes one file (raises `io.ImageReadError` naming it)."""
    img = io.read_image(path)
    if img.ndim != 2 or min(img.shape) < 8:
      raise io.ImageReadError(path, f"image too small ({img.shape})")
    grids, geoms = {}, {}
    for s in self.sizes:
      grids[s], geoms[s] = preprocess.letterbox(img, s)
    return Prepared(pathlib.Path(path), img, grids, geoms)

  # -- device side ------------------------------------------------------------

  def infer(self, items: Sequence[Prepared]) -> dict:
    """Runs the networks on up to `batch_size` items (padded to it); numpy outputs."""
    n = len(items)
    if not 0 < n <= self.batch_size:
      raise ValueError(f"batch of {n} items, batch size {self.batch_size}")
    grids = {}
    for s in self.sizes:
      b = np.zeros((self.batch_size, *s), np.float32)
      for i, it in enumerate(items):
        b[i] = it.grids[s]
      grids[s] = jnp.asarray(b)
    out = self._run(grids)
    return jax.tree.map(lambda a: np.asarray(a)[:n], jax.device_get(out))

  def warmup(self) -> float:
    """Compiles the networks for the batch shape; returns the seconds it took."""
    t0 = time.perf_counter()
    grids = {s: jnp.zeros((self.batch_size, *s), jnp.float32) for s in self.sizes}
    jax.block_until_ready(self._run(grids))
    return time.perf_counter() - t0

  # -- per image results ------------------------------------------------------

  def finish(self, item: Prepared, out: dict, i: int, spacing_mm: float,
             overlay_path: pathlib.Path | None) -> dict:
    """The CSV row of image `i` of a batch's outputs (and its overlay PNG, if a path is given)."""
    h, w = item.image.shape
    row = {"file": str(item.path), "width": w, "height": h, "pixel_spacing_mm": spacing_mm}
    ents = []
    if "cls" in out:
      cls = out["cls"]
      for t in self.clf.tasks:
        p = cls[t][i]
        k = int(np.argmax(p))
        ents.append(float(-(p * np.log(np.clip(p, 1e-12, 1))).sum() / math.log(len(p))))
        if t == "abnormal":
          row["abnormal_prob"] = float(p[1])
          row["abnormal"] = int(p[1] > self.abnormal_threshold)
        else:
          row[t], row[f"{t}_prob"] = self.clf.class_names(t)[k], float(p[k])
    row["uncertainty"] = float(np.mean(ents)) if ents else math.nan
    if "ae" in out:
      s = self.anomaly.scores({k: v[i:i + 1] for k, v in out["ae"].items()})
      row["anomaly_score"] = float(s[self.anomaly.primary][0])
      row["anomaly"] = int(row["anomaly_score"] > self.anomaly.thresholds[self.anomaly.primary])
      row["anomaly_recon_error"] = float(s["recon"][0])
    masks, ellipse = None, None
    if "seg" in out:
      size = tuple(self.seg.size)
      g = item.geometries[size]
      probs = out["seg"][i]
      row.update(self._biometry(probs, g, spacing_mm))
      ellipse = row.pop("_ellipse")
      if overlay_path is not None:
        masks = {c: preprocess.unletterbox((probs[..., j] > 0.5).astype(np.uint8), g,
                                           nearest=True)
                 for j, c in enumerate(("head", "skull", "brain")) if c != "head"}
    else:
      row["seg_quality"] = "no_segmenter"
    if overlay_path is not None:
      write_overlay(overlay_path, item.image, masks, ellipse, caption(row),
                    self.overlay_max_side)
      row["overlay"] = overlay_path.name
    return {k: row.get(k, math.nan if k not in ("overlay", "plane", "condition") else "")
            for k in COLUMNS}

  def _biometry(self, probs: np.ndarray, g: preprocess.Geometry, spacing_mm: float) -> dict:
    head = probs[..., 0]
    box = biometry.valid_box(g, head.shape)
    y0, x0, y1, x1 = box
    region = head[y0:y1, x0:x1] > 0.5
    out = {"head_area_fraction": float(region.mean()) if region.size else 0.0,
           "ellipse_dice": math.nan, "_ellipse": None}
    for k in ("hc", "bpd", "ofd"):
      out[f"{k}_mm"] = out[f"{k}_px"] = math.nan
    if not region.any():
      out["seg_quality"] = "no_head"
      return out
    method = self.seg.method if self.seg.method in segment_post.NETWORK_METHODS else "robust"
    e = segment_post.head_ellipse(method, prob=head, geometry=g)
    if e is None or not (np.isfinite(e.a) and np.isfinite(e.b)) or e.b <= 0:
      out["seg_quality"] = "fit_failed"
      return out
    out["_ellipse"] = e
    px = biometry.biometry_from_ellipse(e, 1.0)
    out.update(hc_px=px.hc_mm, bpd_px=px.bpd_mm, ofd_px=px.ofd_mm)
    if np.isfinite(spacing_mm) and spacing_mm > 0:
      mm = biometry.biometry_from_ellipse(e, spacing_mm)
      out.update(hc_mm=mm.hc_mm, bpd_mm=mm.bpd_mm, ofd_mm=mm.ofd_mm)
    # Agreement of the fitted ellipse with the predicted head region (on the grid).
    eg = e.scaled(g.scale, (g.offset_yx[1], g.offset_yx[0]))
    ell = biometry.rasterize(eg, head.shape)[y0:y1, x0:x1] > 0
    inter = np.logical_and(ell, region).sum()
    out["ellipse_dice"] = float(2 * inter / max(ell.sum() + region.sum(), 1))
    full = biometry.rasterize(eg, head.shape).sum()
    if full > 1.02 * max(ell.sum(), 1):
      out["seg_quality"] = "cut_by_border"
    elif out["ellipse_dice"] < 0.9:
      out["seg_quality"] = "poor_fit"
    else:
      out["seg_quality"] = "ok"
    return out


def caption(row: dict) -> str:
  lines = []
  if row.get("plane"):
    lines.append(f"{row['plane']} {row['plane_prob']:.2f}")
  if "abnormal_prob" in row and np.isfinite(row["abnormal_prob"]):
    lines.append(f"abnormal {row['abnormal_prob']:.2f}"
                 + (f" | {row['condition']}" if row.get("condition") else ""))
  if "anomaly_score" in row and np.isfinite(row.get("anomaly_score", math.nan)):
    lines.append(f"anomaly {row['anomaly_score']:.1f}" + (" !" if row.get("anomaly") else ""))
  if np.isfinite(row.get("hc_mm", math.nan)):
    lines.append(f"HC {row['hc_mm']:.0f} mm")
  elif np.isfinite(row.get("hc_px", math.nan)):
    lines.append(f"HC {row['hc_px']:.0f} px")
  return "\n".join(lines)


def write_overlay(path: pathlib.Path, image: np.ndarray, masks, ellipse, text: str,
                  max_side: int = 512) -> None:
  img, m, e = image, masks, ellipse
  s = max_side / max(image.shape)
  if s < 1:
    size = (max(1, round(image.shape[1] * s)), max(1, round(image.shape[0] * s)))
    img = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    m = {k: cv2.resize(v, size, interpolation=cv2.INTER_NEAREST) for k, v in (masks or {}).items()}
    e = ellipse.scaled(s) if ellipse is not None else None
  rgb = plots.overlay(img, masks=m, ellipse=e, text=text)
  cv2.imwrite(os.fspath(path), rgb[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


def _overlay_name(path: pathlib.Path, used: set) -> str:
  base = "".join(c if c.isalnum() or c in "-_." else "_" for c in path.stem)[:80] or "image"
  name, k = f"{base}.png", 1
  while name in used:
    k += 1
    name = f"{base}_{k}.png"
  used.add(name)
  return name


def iterate(predictor: Predictor, paths: Sequence[pathlib.Path], *, workers: int = 2,
            spacing: Callable[[pathlib.Path], float] = lambda p: math.nan,
            overlay_dir: pathlib.Path | None = None, num_overlays: int = -1,
            progress=None):
  """Yields ("row", dict) or ("error", dict) per file, in input order.

  Decoding runs `2 * batch_size` files ahead in a thread pool; a batch goes
  to the device as soon as it is complete, and its post-processing (ellipse
  fit, overlay) is handed to the same pool, so reading, the networks and the
  post-processing overlap.
  """
  bs = predictor.batch_size
  used: set = set()
  results: dict[int, tuple | None] = {}   # input index -> None (in the open batch) or result
  batch: list[tuple[int, Prepared]] = []
  n_overlays = 0
  with cf.ThreadPoolExecutor(max(1, workers)) as pool:
    reads: collections.deque = collections.deque()
    todo = iter(enumerate(paths))

    def refill():
      while len(reads) < 2 * bs:
        nxt = next(todo, None)
        if nxt is None:
          return
        idx, path = nxt
        reads.append((idx, path, pool.submit(predictor.prepare, path)))

    def flush():
      nonlocal n_overlays
      if not batch:
        return
      out = predictor.infer([p for _, p in batch])
      for i, (idx, item) in enumerate(batch):
        opath = None
        if overlay_dir is not None and (num_overlays < 0 or n_overlays < num_overlays):
          opath = overlay_dir / _overlay_name(item.path, used)
          n_overlays += 1
        results[idx] = ("row", pool.submit(predictor.finish, item, out, i,
                                           spacing(item.path), opath))
      batch.clear()

    next_out = 0

    def ready():
      nonlocal next_out
      while next_out in results and results[next_out] is not None:
        kind, payload = results.pop(next_out)
        next_out += 1
        if progress is not None:
          progress.update(1)
        yield kind, (payload.result() if kind == "row" else payload)

    refill()
    while reads:
      idx, path, fut = reads.popleft()
      refill()
      try:
        item = fut.result()
        results[idx] = None
        batch.append((idx, item))
      except io.ImageReadError as e:
        results[idx] = ("error", {"file": str(path), "reason": e.reason})
      except Exception as e:  # noqa: BLE001 (one bad file must not stop the run)
        results[idx] = ("error", {"file": str(path), "reason": f"{type(e).__name__}: {e}"})
      if len(batch) == bs:
        flush()
      yield from ready()
    flush()
    yield from ready()


def _write_csv(path: pathlib.Path, columns, rows) -> None:
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
    w.writeheader()
    for r in rows:
      w.writerow({k: _fmt(r.get(k, "")) for k in columns})


def _fmt(v):
  if isinstance(v, float):
    return "" if not math.isfinite(v) else f"{v:.6g}"
  return v


def run(workdir: str | os.PathLike | None, seg_workdir: str | os.PathLike | None,
        inputs, out: str | os.PathLike, *, spacing_csv: str | None = None,
        pixel_spacing_mm: float | None = None, batch_size: int = 32, workers: int = 2,
        num_overlays: int = -1, report: bool = True, num_report_images: int = 12,
        num_saliency: int = 6, abnormal_threshold: float | None = None,
        segmenter: Segmenter | None = None, progress: bool = True,
        wandb_mode: str | None = None, log=print) -> dict:
  """Predicts every file of `inputs` (folder, glob or list); writes CSVs, overlays, report.

  Returns the summary (also written as `summary.json`).
  """
  t0 = time.perf_counter()
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  paths = list_inputs(inputs)
  table = read_spacing_csv(spacing_csv) if spacing_csv else None
  if pixel_spacing_mm is not None and not (pixel_spacing_mm > 0):
    raise ValueError(f"pixel_spacing_mm must be > 0, got {pixel_spacing_mm}")
  predictor = Predictor(workdir, seg_workdir, segmenter=segmenter, batch_size=batch_size,
                        abnormal_threshold=abnormal_threshold)
  overlay_dir = out / "overlays" if num_overlays != 0 else None
  if overlay_dir is not None:
    overlay_dir.mkdir(exist_ok=True)
  t_load = time.perf_counter() - t0
  t_compile = predictor.warmup()
  bar = None
  if progress:
    from tqdm import tqdm  # noqa: PLC0415

    bar = tqdm(total=len(paths), unit="img", desc="predict", dynamic_ncols=True)
  rows, errors = [], []
  t1 = time.perf_counter()
  try:
    for kind, r in iterate(predictor, paths, workers=workers,
                           spacing=lambda p: spacing_for(p, table, pixel_spacing_mm),
                           overlay_dir=overlay_dir, num_overlays=num_overlays, progress=bar):
      (rows if kind == "row" else errors).append(r)
  finally:
    if bar is not None:
      bar.close()
  t_predict = time.perf_counter() - t1
  _write_csv(out / "predictions.csv", COLUMNS, rows)
  _write_csv(out / "errors.csv", ERROR_COLUMNS, errors)
  summary = summarize(rows, errors, predictor)
  summary["timing"] = {"load_s": t_load, "compile_s": t_compile, "predict_s": t_predict,
                       "images_per_s": len(paths) / t_predict if t_predict > 0 else math.nan,
                       "batch_size": batch_size, "workers": workers,
                       "device": str(jax.devices()[0].device_kind)}
  summary["inputs"] = str(inputs) if not isinstance(inputs, (list, tuple)) else len(inputs)
  summary["workdir"], summary["seg_workdir"] = str(workdir or ""), str(seg_workdir or "")
  if report:
    from fbjax import report as report_lib  # noqa: PLC0415

    t2 = time.perf_counter()
    report_lib.write(out, rows, errors, summary, predictor, num_images=num_report_images,
                     num_saliency=num_saliency)
    summary["timing"]["report_s"] = time.perf_counter() - t2
  (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
  if wandb_mode:
    _log_wandb(out, rows, summary, wandb_mode)
  log(f"predicted {len(rows)} images, {len(errors)} errors in {t_predict:.1f} s "
      f"({summary['timing']['images_per_s']:.1f} images/s); wrote {out}")
  return summary


def summarize(rows: list[dict], errors: list[dict], predictor: Predictor | None = None) -> dict:
  s: dict = {"images": len(rows) + len(errors), "predicted": len(rows), "errors": len(errors)}
  if errors:
    s["error_reasons"] = dict(collections.Counter(
        e["reason"].split(":")[0] for e in errors).most_common())
  for k in ("plane", "condition", "seg_quality"):
    vals = [r[k] for r in rows if r.get(k)]
    if vals:
      s[f"{k}_counts"] = dict(collections.Counter(vals).most_common())
  for k in ("abnormal", "anomaly"):
    vals = [r[k] for r in rows if isinstance(r.get(k), int)]
    if vals:
      s[f"{k}_flagged"] = int(sum(vals))
  for k in ("abnormal_prob", "anomaly_score", "hc_mm", "hc_px", "uncertainty"):
    v = np.array([r.get(k, math.nan) for r in rows], np.float64)
    v = v[np.isfinite(v)]
    if v.size:
      s[f"{k}_quantiles"] = {q: float(np.quantile(v, float(q))) for q in
                             ("0.05", "0.25", "0.5", "0.75", "0.95")}
  if predictor is not None:
    s["abnormal_threshold"] = predictor.abnormal_threshold
    if predictor.anomaly is not None:
      s["anomaly_threshold"] = predictor.anomaly.thresholds[predictor.anomaly.primary]
      s["anomaly_score_kind"] = predictor.anomaly.primary
      s["anomaly_calibration_specificity"] = predictor.anomaly.specificity
  return s


def _log_wandb(out: pathlib.Path, rows: list[dict], summary: dict, mode: str) -> None:
  """The run summary, the report's figures and example overlays to wandb (`mode`)."""
  import ml_collections  # noqa: PLC0415

  from fbjax import tracking  # noqa: PLC0415

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
    for r in rows[:8]:
      if r.get("overlay"):
        img = cv2.imread(os.fspath(out / "overlays" / r["overlay"]))
        if img is not None:
          figs[f"predict/examples/{pathlib.Path(r['overlay']).stem}"] = img[..., ::-1] / 255.0
    writer.images(0, figs)
  finally:
    writer.close()
