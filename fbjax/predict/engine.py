"""The batched engine: the networks of a prediction run on fixed-shape batches (classifier,
anomaly autoencoder, segmenter; the aligned-head classifier on its crops), and the
head step on their outputs. No files: `rows` turns the outputs into a CSV row.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import os
import pathlib
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fbjax.core import metrics
from fbjax.data import io
from fbjax.evaluation import anomaly as anomaly_lib
from fbjax.evaluation import heads as heads_lib
from fbjax.evaluation import inference
from fbjax.geometry import head_gate
from fbjax.predict import overlays, rows
from fbjax.predict.artefacts import (
    Segmenter,
    check_artefacts,
    check_segmenter,
    classifier_input,
    load_segmenter,
    read_calibration,
)

# Smaller images (icons, a 3x3 test pattern) hold no head to measure: an error, not a row.
MIN_SIDE = 8


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
    """The CSV row of image `i` of a batch's outputs (`rows.make_row`), and its overlay PNG
    if a path is given (`overlays.draw`).

    `details`, when given, receives what the row summarises: `ellipse` (the head
    in original pixels, or None) and `probabilities` ({task: calibrated (C,)}).
    """
    head = None
    if "seg" in out:
      head = out["heads"][i] if "heads" in out else self.head_of(item, out["seg"][i])
    clf = self.clf
    row, no_head, calibrated = rows.make_row(
        str(item.path), item.image.shape, spacing_mm,
        segmented="seg" in out, head=head, gate=bool(self.gate),
        aligned=self.input == "aligned_head",
        probs={t: out["cls"][t][i] for t in clf.tasks} if "cls" in out else None,
        class_names={t: clf.class_names(t) for t in clf.tasks} if clf is not None else {},
        temperatures=self.temperatures, abnormal_threshold=self.abnormal_threshold,
        anomaly=(self.anomaly.scores({k: v[i:i + 1] for k, v in out["ae"].items()}),
                 self.anomaly.primary, self.anomaly.thresholds) if "ae" in out else None)
    if overlay_path is not None:
      geometry = item.geometries[tuple(self.seg.size)] if head is not None else None
      overlays.draw(overlay_path, item.image, row, head=head, no_head=no_head,
                    probs=out["seg"][i] if head is not None else None, geometry=geometry,
                    max_side=self.overlay_max_side)
    if details is not None:
      if calibrated:
        details.setdefault("probabilities", {}).update(calibrated)
      details["ellipse"] = None if no_head or head is None else head["_ellipse"]
      details.setdefault("probabilities", {})
    return rows.complete(row)

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
