"""One CSV row per image from the engine's outputs (pure: no networks, no files): the
head's biometry in mm, the calibrated probabilities (temperature), the decisions.
"""

from __future__ import annotations

import math

import numpy as np

from fbjax.core import metrics
from fbjax.evaluation import heads as heads_lib
from fbjax.geometry import biometry

COLUMNS = (
    "file", "width", "height", "pixel_spacing_mm",
    "plane", "plane_prob", "abnormal_prob", "abnormal", "condition", "condition_prob",
    "anomaly_score", "anomaly", "anomaly_recon_error",
    "hc_mm", "bpd_mm", "ofd_mm", "hc_px", "bpd_px", "ofd_px",
    "seg_quality", "no_head_reason", "head_area_fraction", "ellipse_dice", "uncertainty", "overlay")


SEG_QUALITY = (*heads_lib.QUALITY, "no_segmenter")   # the head step's verdicts, or no segmenter


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


def head_cells(head: dict | None, spacing_mm: float, *, segmented: bool, gate: bool) -> dict:
  """The head step's cells (`Predictor.head_of`'s dict): quality, biometry in px and, with a
  spacing, in mm (`biometry.biometry_from_ellipse`); the plausible HC range is judged
  there too (`heads.with_spacing`, unless `gate` is off)."""
  if not segmented:
    return {"seg_quality": "no_segmenter"}
  row = {k: v for k, v in head.items() if not k.startswith("_")}
  ellipse = head["_ellipse"]
  if ellipse is not None and np.isfinite(spacing_mm) and spacing_mm > 0:
    mm = biometry.biometry_from_ellipse(ellipse, spacing_mm)
    row.update(hc_mm=mm.hc_mm, bpd_mm=mm.bpd_mm, ofd_mm=mm.ofd_mm)
    judged = heads_lib.with_spacing(head["_head"], spacing_mm, check=gate)
    if not judged.found:
      row.update(seg_quality=judged.quality, no_head_reason=judged.reason)
  return row


def uncertainty(p: np.ndarray) -> float:
  """The normalised entropy of one probability vector: 0 certain, 1 uniform."""
  return float(-(p * np.log(np.clip(p, 1e-12, 1))).sum() / math.log(len(p)))


def class_cells(probs: dict, class_names: dict, temperatures: dict,
                abnormal_threshold: float) -> tuple[dict, dict]:
  """{task: (C,) probabilities} -> (cells, {task: calibrated (C,)}): each task's
  temperature (`metrics.apply_temperature`), the class and its probability, the abnormal
  decision (calibrated probability above `abnormal_threshold`), the mean `uncertainty`."""
  row, calibrated, ents = {}, {}, []
  for t, p in probs.items():
    if t in temperatures:
      p = metrics.apply_temperature(p[None], temperatures[t])[0]
    calibrated[t] = np.asarray(p, np.float64)
    k = int(np.argmax(p))
    ents.append(uncertainty(p))
    if t == "abnormal":
      row["abnormal_prob"] = float(p[1])
      row["abnormal"] = int(p[1] > abnormal_threshold)
    else:
      row[t], row[f"{t}_prob"] = class_names[t][k], float(p[k])
  row["uncertainty"] = float(np.mean(ents)) if ents else math.nan
  return row, calibrated


def anomaly_cells(scores: dict, primary: str, thresholds: dict) -> dict:
  """The anomaly model's scores of one image (`AnomalyModel.scores`, batch of one)."""
  score = float(scores[primary][0])
  return {"anomaly_score": score, "anomaly": int(score > thresholds[primary]),
          "anomaly_recon_error": float(scores["recon"][0])}


def make_row(file: str, shape, spacing_mm: float, *, segmented: bool, head: dict | None,
             gate: bool, aligned: bool, probs: dict | None, class_names: dict,
             temperatures: dict, abnormal_threshold: float,
             anomaly: tuple | None) -> tuple[dict, bool, dict]:
  """One image's row (before `complete`), whether it holds no head, and the calibrated
  probabilities.

  Where a segmenter finds no fetal head (`seg_quality` "no_head": the gate
  of `fbjax.geometry.head_gate`), the plane, condition and abnormal cells stay empty,
  as they do for an aligned-head classifier wherever no head ellipse was fitted (no crop).
  `anomaly`: (scores, primary, thresholds) or None.
  """
  h, w = shape
  row = {"file": file, "width": w, "height": h, "pixel_spacing_mm": spacing_mm}
  row.update(head_cells(head, spacing_mm, segmented=segmented, gate=gate))
  no_head = row["seg_quality"] == "no_head" or (
      aligned and (head is None or "_crops" not in head))
  if no_head and head is not None:
    for k in ("hc", "bpd", "ofd"):
      row[f"{k}_mm"] = row[f"{k}_px"] = math.nan
  calibrated = {}
  if probs is not None and not no_head:
    cells, calibrated = class_cells(probs, class_names, temperatures, abnormal_threshold)
    row.update(cells)
  else:
    row["uncertainty"] = math.nan
  if anomaly is not None:
    row.update(anomaly_cells(*anomaly))
  return row, no_head, calibrated


TEXT_COLUMNS = ("overlay", "plane", "condition", "no_head_reason")


def complete(row: dict) -> dict:
  """`row` in `COLUMNS` order, a missing cell NaN (or "" for a text column)."""
  return {k: row.get(k, math.nan if k not in TEXT_COLUMNS else "") for k in COLUMNS}
