"""Prediction over a folder of images: one CSV row per image, overlays and an HTML report.

    from fbjax import predict
    summary = predict.run("runs/cls", "runs/seg", "images/", "out/", pixel_spacing_mm=0.15)
    summary = predict.run("fbjax_head_v1", "fbjax_head_v1", "images/", "out/")  # the bundle
    rows = predict.predict_images(["scan.png", array])     # no files written (the bundle)

Per image: the image is read (`fbjax.data.io`: PNG/JPEG, 8/16-bit, grey/RGB/
RGBA) and letterboxed onto each model's grid; the classifier
(`fbjax.evaluation.inference.load`, with its enhancement chain) gives the plane,
abnormal and condition probabilities; the autoencoder of `<workdir>/anomaly/`
gives the anomaly score; the segmentation model (`seg_workdir`, optional)
gives head / skull / brain probabilities, from which the head ellipse is
fitted and mapped back to the original image (`fbjax.geometry.segment_post`), so
HC, BPD and OFD are measured in original pixels and, where the pixel spacing
is known (`spacing_csv` or `pixel_spacing_mm`), in millimetres.

A classifier whose config.json says `input.kind: "aligned_head"` reads the aligned
head instead of the image: `fbjax.evaluation.heads.crop` (the crop training cut, from the
8-bit image) around the segmenter's ellipse (with the alignment its `input`
records), in both canonical orientations, the probabilities averaged; it
needs a segmenter. A file's pixels are taken as square (a data set's
`pixel_aspect`, which training undoes, is not known for a file).

"Not a fetal head": the head step (`fbjax.evaluation.heads`, the rule training's crops
and `launch.evaluate` use too) must find one: the segmenter's head passes
`fbjax.geometry.head_gate` (image content, head size, ellipse fit, a skull ring along
the ellipse) and the shape rule and, with a known spacing, has an HC within
`head_gate.HC_MM_RANGE`; otherwise `seg_quality` is "no_head",
`no_head_reason` says which evidence failed, and the plane, condition,
abnormal and biometry cells stay empty.

Inputs (`fbjax.predict.inputs.scan`, streamed): files with an image suffix, or
whose first bytes are an image signature, are predicted; a file that then
cannot be decoded, an image under `MIN_SIDE` pixels a side (a 3x3 image
holds no head), a dangling link or a directory named like an image is an
error row naming the problem; anything else (`notes.txt`, `labels.csv`,
hidden files) is skipped and counted.

Mechanics: files are read and decoded by a thread pool (OpenCV releases the
GIL) while the device runs the previous batch; every batch has the same shape
(the last one is padded), so each network is compiled once; post-processing
(ellipse fit, overlay PNG) runs in the same pool. Rows are appended batch by
batch (`fbjax.predict.files.Appender`), so a killed run loses at most the
batch in flight; the same call again predicts only the files with neither a
row nor an error row (and refuses to continue a run of another model or
setting, `identity.json`). With `num_shards` > 1 each shard takes the files
whose relative path hashes to it and writes under `out/shards/`; `merge`
(run by the last shard to finish) writes the outputs below for all of them.

Outputs under `out`:
  predictions.csv   one row per readable image (columns: `COLUMNS`)
  errors.csv        file, reason (one row per file that should be but is no readable image)
  skipped.csv       file, reason (files that are not images)
  overlays/*.png    the image with masks, head ellipse and a caption (and, inset
                    bottom right, the aligned head the classifier read): the first
                    `num_overlays` images and every image the report shows
  crops/*.png       the aligned head of each overlay (aligned-head classifiers)
  report.html       counts, distributions, the most abnormal and least certain
                    images, and occlusion maps of where the abnormal head looks
  report_files/     the report's figures (the folder opens from disk as it is)
  summary.json      the counts and timings shown in the report (whole folder)
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import csv
import dataclasses
import json
import logging
import math
import os
import pathlib
import time
from collections.abc import Callable, Iterable, Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from fbjax.core import metrics, plots, schema
from fbjax.core import workdir as workdir_lib
from fbjax.data import io
from fbjax.evaluation import anomaly as anomaly_lib
from fbjax.evaluation import heads as heads_lib
from fbjax.evaluation import inference
from fbjax.geometry import align as align_lib
from fbjax.geometry import biometry, head_gate, preprocess
from fbjax.predict import files
from fbjax.predict import inputs as inputs_lib

COLUMNS = (
    "file", "width", "height", "pixel_spacing_mm",
    "plane", "plane_prob", "abnormal_prob", "abnormal", "condition", "condition_prob",
    "anomaly_score", "anomaly", "anomaly_recon_error",
    "hc_mm", "bpd_mm", "ofd_mm", "hc_px", "bpd_px", "ofd_px",
    "seg_quality", "no_head_reason", "head_area_fraction", "ellipse_dice", "uncertainty", "overlay")
ERROR_COLUMNS = ("file", "reason")
SKIPPED_COLUMNS = ("file", "reason")
# Smaller images (icons, a 3x3 test pattern) hold no head to measure: an error, not a row.
MIN_SIDE = 8
SEG_QUALITY = (*heads_lib.QUALITY, "no_segmenter")   # the head step's verdicts, or no segmenter


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


def list_inputs(spec: str | os.PathLike | Sequence) -> list[pathlib.Path]:
  """The image files named by a folder, a glob or a list (see `fbjax.predict.inputs.scan`)."""
  return [pathlib.Path(e.path) for e in inputs_lib.scan(spec) if e.kind == "image"]


# Spacing column names that mean "mm per pixel" (lower case, spaces/underscores ignored).
_SPACING_WORDS = ("pixelsize", "pixelspacing", "spacing", "mmperpixel", "mmperpx", "mm/px",
                  "mm/pixel", "resolution")
_FILE_WORDS = ("filename", "file", "image", "imagename", "name", "path")


def _norm(h: str) -> str:
  return "".join(c for c in h.strip().lower() if c not in " _-")


def find_column(header: Sequence[str], path, *, explicit: str | None, what: str,
                exact: Sequence[str], contains: Sequence[str] = (),
                flag: str = "") -> int:
  """Index of the column named `explicit`, else of the one column that clearly is `what`.

  Exact (normalised) names win; else names containing one of `contains`.
  Zero or several candidates: a ValueError naming the file and listing the columns.
  """
  cols = [h.strip() for h in header]
  hint = f" (name it with {flag})" if flag else ""
  if explicit is not None:
    if explicit.strip() not in cols:
      raise ValueError(f"{path}: no column {explicit!r}; the columns are {cols}")
    return cols.index(explicit.strip())
  norm = [_norm(h) for h in cols]
  for words in (exact, contains):
    hits = [i for i, h in enumerate(norm) if any(
        (h == w if words is exact else w in h) for w in words)]
    if len(hits) == 1:
      return hits[0]
    if len(hits) > 1:
      raise ValueError(f"{path}: {len(hits)} columns could be the {what} "
                       f"({[cols[i] for i in hits]}); the columns are {cols}{hint}")
  raise ValueError(f"{path}: no {what} column; the columns are {cols}{hint}")


def read_spacing_csv(path: str | os.PathLike, column: str | None = None,
                     file_column: str | None = None) -> dict[str, float]:
  """{file name: mm per pixel} from a CSV with a file column and a spacing column.

  `column` names the spacing column; without it the column is found only
  when exactly one name says "pixel size" / "spacing" / "mm per pixel" (HC18's
  `pixel size(mm)` does; `hc_mm` does not), else a ValueError lists the
  columns. Keys are the names as written, their base names and their stems.
  """
  path = pathlib.Path(os.path.expanduser(os.fspath(path)))
  with open(path, newline="", encoding="utf-8-sig") as f:
    rows = list(csv.reader(f))
  if not rows:
    raise ValueError(f"{path}: empty spacing CSV")
  fcol = find_column(rows[0], path, explicit=file_column, what="file name",
                     exact=_FILE_WORDS, contains=("file", "image"))
  scol = find_column(rows[0], path, explicit=column, what="pixel spacing (mm)",
                     exact=("pixelsize(mm)", "pixelspacingmm", "pixelsizemm", "spacingmm"),
                     contains=_SPACING_WORDS, flag="--spacing_column")
  if fcol == scol:
    raise ValueError(f"{path}: the file column and the spacing column are both {rows[0][fcol]!r}")
  out = {}
  for n, r in enumerate(rows[1:], start=2):
    if len(r) <= max(fcol, scol) or not r[fcol].strip():
      continue
    try:
      v = float(r[scol])
    except ValueError:
      raise ValueError(f"{path}:{n}: spacing {r[scol]!r} is not a number") from None
    if not (math.isfinite(v) and v > 0):
      raise ValueError(f"{path}:{n}: spacing {r[scol]!r} must be a positive number of mm")
    name = r[fcol].strip()
    out[name] = v
    out[pathlib.Path(name).name] = v
    out[pathlib.Path(name).stem] = v
  return out


def spacing_for(path: pathlib.Path, table: dict[str, float] | None,
                default: float | None, missing: collections.Counter | None = None) -> float:
  """The image's mm per pixel: its row of `table`, else `default`, else NaN. An image a
  table lacks is counted in `missing` and warned about (its mm columns stay empty
  unless `default` is given)."""
  if table:
    for key in (str(path), path.name, path.stem):
      if key in table:
        return float(table[key])
    if missing is not None:
      missing["images"] += 1
      if missing["images"] <= 5:
        logging.warning("%s: not in the spacing CSV: %s", path, "spacing --pixel_spacing_mm "
                        f"{default}" if default else "HC/BPD/OFD in pixels only")
  return float(default) if default else math.nan


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


Segmenter = heads_lib.Segmenter


# `--segmenter_tta` of launch.predict and benchmarks/predict.py -> `seg_tta`.
SEG_TTA = {"workdir": None, "on": True, "off": False}


load_segmenter = heads_lib.load_segmenter


def check_artefacts(workdir, clf, anomaly, abnormal_threshold: float | None,
                    log=print) -> float:
  """The abnormal decision threshold, from the flag or `decision.json`, never a silent default.

  A classifier with an "abnormal" head needs its `decision` (the workdir's
  decision.json: the threshold the trainer calibrated on normal validation images)
  unless a threshold is given. A workdir without an anomaly model is said so.
  """
  if workdir and anomaly is None:
    log(f"{workdir}: no anomaly model ({pathlib.Path(workdir) / anomaly_lib.FOLDER}/"
        "anomaly.json): the anomaly columns stay empty")
  if abnormal_threshold is not None:
    t = float(abnormal_threshold)
    if not 0.0 <= t <= 1.0:
      raise ValueError(f"abnormal_threshold must be in [0, 1], got {t}")
    return t
  if clf is None or "abnormal" not in clf.tasks:
    return math.nan
  decision = clf.decision
  if decision is None:
    raise workdir_lib.MissingArtefact(
        workdir, workdir_lib.DECISION,
        "the threshold of the abnormal probability, fitted on normal validation images; "
        "or give one: --abnormal_threshold")
  try:
    return float(decision["abnormal_threshold"])
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{workdir}/decision.json: no readable 'abnormal_threshold' ({e})") \
        from None


def _where(path, base: str = "") -> str:
  from fbjax.core import bundle as bundle_lib  # noqa: PLC0415 (bundle builds on inference)

  found = bundle_lib.resolve(path)
  if found is not None:
    return str(found)
  p = os.path.expanduser(os.fspath(path))
  return os.path.realpath(os.path.join(base, p) if base and not os.path.isabs(p) else p)


def check_segmenter(workdir, clf, seg_workdir) -> None:
  """An aligned-head classifier runs on crops of the segmenter its training crops came
  from (`input.seg_workdir` in its config; a bundle's: the bundle's own), else a
  ValueError names both. Nothing to compare for a classifier trained on mask crops only
  or a segmenter given as an object."""
  from fbjax.core import bundle as bundle_lib  # noqa: PLC0415

  if seg_workdir is None or clf is None:
    return
  if workdir and bundle_lib.resolve(workdir) is not None:
    recorded = str(bundle_lib.resolve(workdir))
  else:
    recorded = schema.input_of(clf.config).get("seg_workdir", "")
    if not recorded:
      return
    recorded = _where(recorded, getattr(clf, "workdir", "") or "")
  given = _where(seg_workdir)
  if given != recorded:
    raise ValueError(f"{workdir}: its aligned-head crops were cut around the ellipses of "
                     f"{recorded} (config.json input.seg_workdir), but --seg_workdir is "
                     f"{given}; give that segmenter, or --other_segmenter to run on "
                     "another's crops (they then differ from training's)")


def classifier_input(workdir, clf, seg) -> tuple[str, dict]:
  """What the classifier reads (`schema.CLASSIFIER_INPUTS`) and, for the aligned head,
  `align.aligned_head`'s keyword arguments, from the workdir's config.json (`input`)."""
  if clf is None:
    return "image", {}
  a = schema.input_of(clf.config).to_dict()
  kind = a.pop("kind")
  if kind not in schema.CLASSIFIER_INPUTS:
    raise ValueError(f"{workdir}/config.json: input kind {kind!r}; expected one of "
                     f"{schema.CLASSIFIER_INPUTS}")
  if kind == "image":
    return kind, {}
  if seg is None:
    raise ValueError(f"{workdir}: the classifier reads the aligned head (config.json input "
                     "'aligned_head'), which is cut around the head ellipse of a "
                     "segmentation model: give one (--seg_workdir)")
  # `seg_workdir` names the segmenter whose ellipses cut the training crops: a record,
  # not an argument of the crop (predict uses --seg_workdir's).
  unknown = sorted(set(a) - {"size", *schema.ALIGN_KEYS})
  if unknown:
    raise ValueError(f"{workdir}/config.json: unknown input arguments {unknown}; "
                     f"expected size, {', '.join(schema.ALIGN_KEYS)}")
  return kind, {"size": tuple(int(v) for v in a["size"]),
                "head_fraction": float(a.get("head_fraction", align_lib.DEFAULT_HEAD_FRACTION)),
                "margin": float(a.get("margin", align_lib.DEFAULT_MARGIN))}


def read_calibration(workdir, clf) -> dict[str, float]:
  """{task: temperature} from the classifier's `calibration` (its workdir's calibration.json,
  fitted on validation images by the classification trainer); {} when it has none (said in
  the log)."""
  if clf is None:
    return {}
  cal = clf.calibration
  if cal is None:
    logging.info("%s: no calibration.json: the probabilities are the network's own", workdir)
    return {}
  try:
    out = {t: float(v["temperature"]) for t, v in cal["tasks"].items()}
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{workdir}/calibration.json: not a calibration file ({e})") from None
  bad = {t: v for t, v in out.items() if not (math.isfinite(v) and v > 0)}
  if bad:
    raise ValueError(f"{workdir}/calibration.json: temperatures must be finite and > 0, "
                     f"got {bad}")
  return {t: v for t, v in out.items() if t in clf.tasks}


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
               abnormal_threshold: float | None = None, overlay_max_side: int = 512,
               gate: dict | None = None, seg_tta: bool | None = None,
               seg_stages: int | None = None, other_segmenter: bool = False):
    self.batch_size = int(batch_size)
    self.seg_tta = seg_tta     # None: the segmentation workdir's own eval_flip
    self.seg_stages = seg_stages   # None: every stage the segmentation workdir has
    # Minimum evidence of a fetal head (`fbjax.geometry.head_gate.THRESHOLDS`; {}: no gate,
    # nor the plausible HC range).
    self.gate = dict(head_gate.THRESHOLDS if gate is None else gate)
    if workdir is not None and not isinstance(workdir, (str, os.PathLike)):
      self.clf, workdir = workdir, getattr(workdir, "workdir", "")   # a loaded classifier
    else:
      self.clf = inference.load(workdir, kind="classifier") if workdir else None
    self.anomaly = self.clf.anomaly if self.clf is not None else None
    self.seg = segmenter or (load_segmenter(seg_workdir, tta=seg_tta, stages=seg_stages)
                             if seg_workdir else None)
    if self.clf is None and self.seg is None:
      raise ValueError("nothing to predict with: give a classification workdir and/or a "
                       "segmentation workdir")
    self.temperatures = read_calibration(workdir, self.clf)
    self.abnormal_threshold = check_artefacts(workdir, self.clf, self.anomaly,
                                              abnormal_threshold)
    if "abnormal" in self.temperatures:
      # The threshold (decision.json's, or one given) is on the uncalibrated probability,
      # as `launch.evaluate` prints it; the same decision on the calibrated probability
      # the row holds (temperature scaling is monotone).
      t = self.abnormal_threshold
      self.abnormal_threshold = float(metrics.apply_temperature(
          [[1.0 - t, t]], self.temperatures["abnormal"])[0, 1])
    self.overlay_max_side = overlay_max_side
    self.input, self.align = classifier_input(workdir, self.clf, self.seg)
    if self.input == "aligned_head" and not other_segmenter:
      check_segmenter(workdir, self.clf, seg_workdir)
      if self.seg is not None and self.seg.not_as_trained:
        logging.warning("%s: the segmenter runs with %s; the classifier's training crops were "
                        "cut with the workdir's own settings, so heads near the gate and "
                        "their crops may differ from training's", workdir,
                        self.seg.not_as_trained)
    aligned = self.input == "aligned_head"
    self.sizes = sorted({tuple(s) for s in (
        self.clf.size if self.clf and not aligned else None,
        self.anomaly.ae.size if self.anomaly else None,
        self.seg.size if self.seg else None) if s})
    cls_fn = self.clf.make_predict(jit=False) if self.clf else None
    # The aligned heads need the ellipse first: the classifier runs on its own
    # batch of (2 * batch_size) crops, both canonical orientations of each image.
    self._cls = jax.jit(cls_fn) if aligned else None
    if aligned:
      cls_fn = None
    ae_fn = anomaly_lib.make_score_fn(self.anomaly.ae, jit=False) if self.anomaly else None
    seg_fn = self.seg.predict if self.seg and self.seg.jittable else None

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
    # The grids the jitted step reads (a host-side segmenter's is not sent to the device).
    self._jit_sizes = {tuple(s) for s in (
        self.clf.size if cls_fn is not None else None,
        self.anomaly.ae.size if ae_fn is not None else None,
        self.seg.size if seg_fn is not None else None) if s}

  # -- CPU side ---------------------------------------------------------------

  def prepare(self, path: pathlib.Path) -> Prepared:
    """Reads and letterboxes one file (raises `io.ImageReadError` naming it)."""
    return self.prepare_array(io.read_image(path), path)

  def prepare_array(self, img: np.ndarray, path="<array>") -> Prepared:
    """Letterboxes one decoded image: float grey in [0, 1], HxW (`io.read_image`'s)."""
    if img.ndim != 2 or min(img.shape) < MIN_SIDE:
      raise io.ImageReadError(path, f"image too small ({img.shape[1]}x{img.shape[0]} px; "
                              f"at least {MIN_SIDE} px a side)")
    grids, geoms = {}, {}
    for s in self.sizes:
      grids[s], geoms[s] = heads_lib.grid(img, s)   # what training's head step reads
    return Prepared(pathlib.Path(path), img, grids, geoms)

  # -- device side ------------------------------------------------------------

  def infer(self, items: Sequence[Prepared], pool: cf.Executor | None = None) -> dict:
    """Runs the networks on up to `batch_size` items (padded to it); numpy outputs.

    With an aligned-head classifier the heads are found first (`locate`, in
    `pool` when given): `out["heads"]` holds them, `out["cls"]` the
    probabilities averaged over both orientations (NaN where no head).
    """
    n = len(items)
    if not 0 < n <= self.batch_size:
      raise ValueError(f"batch of {n} items, batch size {self.batch_size}")
    host = {}
    for s in self.sizes:
      b = np.zeros((self.batch_size, *s), np.float32)
      for i, it in enumerate(items):
        b[i] = it.grids[s]
      host[s] = b
    out = self._run({s: jnp.asarray(b) for s, b in host.items() if s in self._jit_sizes})
    out = jax.tree.map(lambda a: np.asarray(a)[:n], jax.device_get(out))
    if self.seg is not None and not self.seg.jittable:
      out["seg"] = np.asarray(self.seg.predict(host[tuple(self.seg.size)]))[:n]
    if self._cls is not None:
      seg = [out["seg"][i] for i in range(n)]
      heads = list(pool.map(self.locate, items, seg) if pool else map(self.locate, items, seg))
      out["heads"] = heads
      out["cls"] = self.classify_heads(heads)
    return out

  def locate(self, item: Prepared, probs: np.ndarray) -> dict:
    """The head of one image from its segmentation: `head_of`, plus the aligned crops."""
    head = self.head_of(item, probs)
    if self.input == "aligned_head" and head["_ellipse"] is not None:
      # The crop training cut (`fbjax.evaluation.heads.crop`: uint8); flip=True is exactly this crop
      # rotated by 180 degrees (`fbjax.geometry.align`): one warp instead of two.
      crop = heads_lib.crop(item.image, head["_ellipse"], **self.align)
      crop = crop.astype(np.float32) / np.float32(255.0)
      head["_crops"] = np.stack([crop, crop[::-1, ::-1]])
    return head

  def classify_heads(self, heads: Sequence[dict]) -> dict:
    """{task: (n, C)}: the classifier's probabilities averaged over the two crops of a head."""
    b = np.zeros((2 * self.batch_size, *self.clf.size), np.float32)
    for i, h in enumerate(heads):
      if "_crops" in h:
        b[2 * i: 2 * i + 2] = h["_crops"]
    probs = jax.device_get(self._cls(jnp.asarray(b)))
    n = len(heads)
    has = np.array(["_crops" in h for h in heads])
    out = {}
    for t in self.clf.tasks:
      p = np.asarray(probs[t], np.float32)[: 2 * n].reshape(n, 2, -1).mean(axis=1)
      out[t] = np.where(has[:, None], p, np.nan)
    return out

  def warmup(self) -> float:
    """Compiles the networks for the batch shape; returns the seconds it took."""
    t0 = time.perf_counter()
    grids = {s: jnp.zeros((self.batch_size, *s), jnp.float32) for s in self._jit_sizes}
    jax.block_until_ready(self._run(grids))
    if self.seg is not None and not self.seg.jittable:
      self.seg.predict(np.zeros((self.batch_size, *self.seg.size), np.float32))
    if self._cls is not None:
      jax.block_until_ready(self._cls(jnp.zeros((2 * self.batch_size, *self.clf.size))))
    return time.perf_counter() - t0

  # -- per image results ------------------------------------------------------

  def finish(self, item: Prepared, out: dict, i: int, spacing_mm: float,
             overlay_path: pathlib.Path | None, details: dict | None = None) -> dict:
    """The CSV row of image `i` of a batch's outputs (and its overlay PNG, if a path is given).

    Where a segmenter finds no fetal head (`seg_quality` "no_head": the gate
    of `fbjax.geometry.head_gate`), the plane, condition and abnormal cells stay empty,
    as they do for an aligned-head classifier wherever no head ellipse was fitted.
    `details`, when given, receives what the row summarises: `ellipse` (the head
    in original pixels, or None) and `probabilities` ({task: calibrated (C,)}).
    """
    h, w = item.image.shape
    row = {"file": str(item.path), "width": w, "height": h, "pixel_spacing_mm": spacing_mm}
    head = None
    if "seg" in out:
      head = out["heads"][i] if "heads" in out else self.head_of(item, out["seg"][i])
      row.update({k: v for k, v in head.items() if not k.startswith("_")})
      ellipse = head["_ellipse"]
      if ellipse is not None and np.isfinite(spacing_mm) and spacing_mm > 0:
        mm = biometry.biometry_from_ellipse(ellipse, spacing_mm)
        row.update(hc_mm=mm.hc_mm, bpd_mm=mm.bpd_mm, ofd_mm=mm.ofd_mm)
        judged = heads_lib.with_spacing(head["_head"], spacing_mm, check=bool(self.gate))
        if not judged.found:
          row.update(seg_quality=judged.quality, no_head_reason=judged.reason)
    else:
      row["seg_quality"] = "no_segmenter"
    no_head = row["seg_quality"] == "no_head" or (
        self.input == "aligned_head" and (head is None or "_crops" not in head))
    if no_head and head is not None:
      for k in ("hc", "bpd", "ofd"):
        row[f"{k}_mm"] = row[f"{k}_px"] = math.nan
    ents = []
    if "cls" in out and not no_head:
      cls = out["cls"]
      for t in self.clf.tasks:
        p = cls[t][i]
        if t in self.temperatures:
          p = metrics.apply_temperature(p[None], self.temperatures[t])[0]
        if details is not None:
          details.setdefault("probabilities", {})[t] = np.asarray(p, np.float64)
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
    if overlay_path is not None:
      masks, ellipse, crop = None, None, None
      if head is not None:
        probs = out["seg"][i]
        g = item.geometries[tuple(self.seg.size)]
        masks = {c: preprocess.unletterbox((probs[..., j] > 0.5).astype(np.uint8), g,
                                           nearest=True)
                 for j, c in enumerate(("head", "skull", "brain")) if c != "head"}
        ellipse = None if row["seg_quality"] == "no_head" else head["_ellipse"]
        crop = None if no_head else head.get("_crops", [None])[0]
      text = caption(row)
      if row["seg_quality"] == "no_head":
        text = "no fetal head" + (f"\n{text}" if text else "")
      write_overlay(overlay_path, item.image, masks, ellipse, text, self.overlay_max_side,
                    crop=crop)
      if crop is not None:
        write_crop(crop_path(overlay_path), crop)
      row["overlay"] = overlay_path.name
    if details is not None:
      details["ellipse"] = None if no_head or head is None else head["_ellipse"]
      details.setdefault("probabilities", {})
    text_cols = ("overlay", "plane", "condition", "no_head_reason")
    return {k: row.get(k, math.nan if k not in text_cols else "") for k in COLUMNS}

  def judge(self, item: Prepared, probs: np.ndarray) -> heads_lib.Head:
    """The head of one image from its segmentation: `fbjax.evaluation.heads.from_segmentation`."""
    g = item.geometries[tuple(self.seg.size)]
    return heads_lib.from_segmentation(item.grids[tuple(self.seg.size)], probs, g,
                                       item.image.shape, method=self.seg.method,
                                       gate=self.gate)

  def head_of(self, item: Prepared, probs: np.ndarray) -> dict:
    """Head ellipse (original pixels, `_ellipse`), its biometry in px and its quality.

    The verdict of `fbjax.evaluation.heads` (the gate of `fbjax.geometry.head_gate`, the plausible
    shape); `_head` holds it, `_ellipse` its ellipse (None unless a head was found).
    """
    h = self.judge(item, probs)
    px = h.px()
    return {"head_area_fraction": h.area_fraction, "ellipse_dice": h.ellipse_dice,
            "seg_quality": h.quality, "no_head_reason": h.reason,
            "hc_px": px.hc_mm, "bpd_px": px.bpd_mm, "ofd_px": px.ofd_mm,
            "_ellipse": h.ellipse, "_head": h}


cut_by_border = heads_lib.cut_by_border


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


def crop_path(overlay_path: pathlib.Path) -> pathlib.Path:
  """Where the aligned head of an overlay goes: `<out>/crops/<overlay name>`."""
  return overlay_path.parent.parent / "crops" / overlay_path.name


def crop_picture(crop: np.ndarray, height: int) -> np.ndarray:
  """The classifier's input crop as an RGB picture `height` px high (white frame)."""
  c = plots.to_rgb_uint8(crop)
  w = max(1, round(c.shape[1] * height / c.shape[0]))
  c = cv2.resize(c, (w, height), interpolation=cv2.INTER_LINEAR if height < c.shape[0]
                 else cv2.INTER_NEAREST)
  return cv2.copyMakeBorder(c, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=(255, 255, 255))


def write_crop(path: pathlib.Path, crop: np.ndarray) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  pic = crop_picture(crop, max(crop.shape[0], 96))
  cv2.imwrite(os.fspath(path), pic[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])


def write_overlay(path: pathlib.Path, image: np.ndarray, masks, ellipse, text: str,
                  max_side: int = 512, crop: np.ndarray | None = None) -> None:
  """The image with masks, head ellipse and caption; `crop` (the aligned head the
  classifier read) is inset in the bottom-right corner."""
  img, m, e = image, masks, ellipse
  s = max_side / max(image.shape)
  if s < 1:
    size = (max(1, round(image.shape[1] * s)), max(1, round(image.shape[0] * s)))
    img = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    m = {k: cv2.resize(v, size, interpolation=cv2.INTER_NEAREST) for k, v in (masks or {}).items()}
    # Exact per-axis scales and pixel centres of the resize (as in `preprocess.Geometry`).
    sx, sy = size[0] / image.shape[1], size[1] / image.shape[0]
    e = ellipse.affine((sx, sy), (0.5 * sx - 0.5, 0.5 * sy - 0.5)) if ellipse is not None \
        else None
  rgb = plots.overlay(img, masks=m, ellipse=e, text=text)
  if crop is not None:
    hh, ww = rgb.shape[:2]
    inset = crop_picture(crop, max(8, min(hh // 3, round(ww / 3 * crop.shape[0]
                                                         / crop.shape[1]))))
    ih, iw = inset.shape[:2]
    if ih < hh and iw < ww:
      rgb[hh - ih:, ww - iw:] = inset
  cv2.imwrite(os.fspath(path), rgb[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])


# ---------------------------------------------------------------------------
# Python API: arrays or files in, results out (no files written)
# ---------------------------------------------------------------------------


def predict_images(images, model=None, seg_model=None, *, pixel_spacing_mm=None,
                   batch_size: int = 8, seg_tta: bool | None = None,
                   gate: dict | None = None, predictor: Predictor | None = None) -> list[dict]:
  """Predictions for images given as arrays or file paths, with the shipped bundle by default.

      rows = predict.predict_images(["scan.png"], pixel_spacing_mm=0.15)
      rows[0]["hc_mm"], rows[0]["plane"], rows[0]["probabilities"]["plane"]

  `images`: one or a list of file paths and/or arrays (HxW grey, HxWx3 RGB or HxWx4;
  uint8, uint16 or float in [0, 1]). `model` / `seg_model`: a classification and a
  segmentation workdir, or a bundle (default: `fbjax.core.bundle.DEFAULT`, both).
  `pixel_spacing_mm`: one value or one per image (None: HC in pixels only).
  Per image: the `predictions.csv` row (`COLUMNS`, `file` is the path or "<array k>")
  plus `ellipse` (cx, cy, a, b, theta in original pixels; None without a head) and
  `probabilities` ({task: {class: calibrated probability}}). An unreadable file raises
  `io.ImageReadError` naming it.
  """
  from fbjax.core import bundle as bundle_lib  # noqa: PLC0415

  single = isinstance(images, (str, os.PathLike, np.ndarray))
  images = [images] if single else list(images)
  if predictor is None:
    model = bundle_lib.DEFAULT if model is None and seg_model is None else model
    seg_model = model if seg_model is None and bundle_lib.resolve(model or "") else seg_model
    predictor = Predictor(model, seg_model, batch_size=batch_size, gate=gate,
                          seg_tta=seg_tta)
  spacings = (list(pixel_spacing_mm) if isinstance(pixel_spacing_mm, (list, tuple, np.ndarray))
              else [pixel_spacing_mm] * len(images))
  if len(spacings) != len(images):
    raise ValueError(f"{len(spacings)} pixel spacings for {len(images)} images")
  out = []
  bs = predictor.batch_size
  for start in range(0, len(images), bs):
    items = []
    for k, im in enumerate(images[start:start + bs], start=start):
      if isinstance(im, np.ndarray):
        items.append(predictor.prepare_array(array_to_grey(im, f"<array {k}>"),
                                             f"<array {k}>"))
      else:
        items.append(predictor.prepare(pathlib.Path(im)))
    res = predictor.infer(items)
    for i, item in enumerate(items):
      sp = spacings[start + i]
      details: dict = {}
      row = predictor.finish(item, res, i, math.nan if sp is None else float(sp), None,
                             details=details)
      e = details["ellipse"]
      row["ellipse"] = None if e is None else tuple(float(v) for v in (e.cx, e.cy, e.a, e.b,
                                                                        e.theta))
      row["probabilities"] = {t: dict(zip(predictor.clf.class_names(t),
                                          (float(x) for x in p), strict=True))
                              for t, p in details["probabilities"].items()}
      out.append(row)
  return out


def array_to_grey(arr: np.ndarray, name: str = "<array>") -> np.ndarray:
  """An image array as float32 grey in [0, 1]: uint8 / uint16 (grey, RGB or RGBA, as
  `fbjax.data.io` reads files) or float already in [0, 1]."""
  a = np.asarray(arr)
  if a.ndim == 3 and a.shape[2] in (3, 4):
    a = a[..., [2, 1, 0]] if a.shape[2] == 3 else a[..., [2, 1, 0, 3]]   # RGB -> OpenCV's BGR
  if a.dtype in (np.uint8, np.uint16):
    scale = 65535.0 if a.dtype == np.uint16 else 255.0
    return io.to_grey(a).astype(np.float32) / np.float32(scale)
  if np.issubdtype(a.dtype, np.floating):
    g = io.to_grey(a.astype(np.float32)) if a.ndim == 3 else a.astype(np.float32)
    if g.size and not (np.nanmin(g) >= 0.0 and np.nanmax(g) <= 1.0):
      raise io.ImageReadError(name, "float image outside [0, 1]")
    return g
  raise io.ImageReadError(name, f"unsupported pixel type {a.dtype}")


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


def _failed(path: str, reason: str):
  raise io.ImageReadError(path, reason)


def iterate(predictor: Predictor, paths: Iterable, *, workers: int = 2,
            spacing: Callable[[pathlib.Path], float] = lambda p: math.nan,
            overlay_dir: pathlib.Path | None = None, num_overlays: int = -1,
            progress=None):
  """Yields ("row", dict) or ("error", dict) per file, in input order.

  `paths` are paths or `fbjax.predict.inputs.Entry`s (an "error" entry becomes an
  error row). Decoding runs `2 * batch_size` files ahead in a thread pool; a
  batch goes to the device as soon as it is complete, and its post-processing
  (ellipse fit, overlay) is handed to the same pool, so reading, the networks
  and the post-processing overlap. Overlays are written for the first
  `num_overlays` images (-1: all).
  """
  bs = predictor.batch_size
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
        idx, e = nxt
        if not isinstance(e, inputs_lib.Entry):
          e = inputs_lib.Entry(os.fspath(e), os.fspath(e), "image")
        fn = (predictor.prepare, e.path) if e.kind == "image" else (_failed, e.path, e.reason)
        reads.append((idx, e.path, pool.submit(*fn)))

    def flush():
      nonlocal n_overlays
      if not batch:
        return
      out = predictor.infer([p for _, p in batch], pool)
      for i, (idx, item) in enumerate(batch):
        opath = None
        if overlay_dir is not None and (num_overlays < 0 or n_overlays < num_overlays):
          opath = overlay_dir / files.overlay_name(str(item.path))
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


def shard_folder(out: pathlib.Path, num_shards: int, shard_index: int) -> pathlib.Path:
  """Where one shard's CSVs go: `out` itself for one shard, else out/shards/IIIII-of-NNNNN."""
  if num_shards == 1:
    return out
  return out / "shards" / f"{shard_index:05d}-of-{num_shards:05d}"


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
    from tqdm import tqdm  # noqa: PLC0415

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
    from fbjax.predict import report as report_lib  # noqa: PLC0415

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
  from fbjax.core import bundle as bundle_lib  # noqa: PLC0415

  found = bundle_lib.resolve(workdir)
  if found is not None:
    return [bundle_lib.identity(found)]
  d = pathlib.Path(workdir) / "checkpoints"
  return sorted(p.name for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def run_identity(workdir, seg_workdir, segmenter, predictor: Predictor, inputs, spacing_csv,
                 spacing_column, pixel_spacing_mm) -> dict:
  """What the rows of a run depend on: a rerun may only continue a run with the same."""
  from fbjax.core import bundle as bundle_lib  # noqa: PLC0415 (it builds on inference)

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
    from fbjax.predict import report as report_lib  # noqa: PLC0415

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
  import ml_collections  # noqa: PLC0415

  from fbjax.runtime import tracking  # noqa: PLC0415

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
