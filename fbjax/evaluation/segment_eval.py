"""Segmentation + biometry evaluation of a predictor over a data source.

    rows, summary = segment_eval.evaluate(source, predict, size=(128, 192), out_dir=OUT)

`source` is random access over examples in the tfds feature layout (what
`tfds.data_source` returns); `predict(images)` maps a (B, H, W) float32
batch on the network grid to (B, H, W, 3) head/skull/brain probabilities.

Everything is measured on the ORIGINAL image: the probabilities are mapped
back from the grid (`preprocess.unletterbox`, bilinear) and thresholded at
0.5; ellipses are fitted and mapped back by the methods of
`fbjax.geometry.segment_post`; HC/BPD/OFD use the original pixel spacing; Dice and
HD95 are computed against the reference masks at their own resolution.

Per-image columns (NaN where a reference or a prediction is missing):
  id, group, pixel_spacing_mm, ref_hc_mm, ref_bpd_mm, ref_ofd_mm
  seg_dice_{head,skull,brain}, seg_hd95_head_mm   network masks
  prototype_dice_head, prototype_hd95_head_mm      the prototype's mask
  {method}_hc_mm, _bpd_mm, _ofd_mm, _hc_abs_mm, _hc_rel, _dice_ellipse,
  _fit_ok                                          each ellipse method
  seg_quality, no_head_reason                      the head step's verdict (`evaluation.heads`,
                                                   as `launch.predict` writes it)
`summary` holds `metrics.summarize` of every numeric column, the rate of
failed fits per method, per method the number of images above 10 % relative
HC error (a failed fit counts) and the error by HC tercile (`by_hc_tercile`); `seg_quality`
counts the verdicts and how many images above / within 10 % they flag
(`quality_counts`).
`write` saves `per_image.csv`, `summary.json` and overlays
`overlays/<id>.png` (reference outline green, fitted ellipse red, prototype
ellipse blue, predicted skull yellow and brain cyan).
"""

from __future__ import annotations

import csv
import json
import math
import os
import pathlib
import re
import time
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from fbjax.core import metrics
from fbjax.data import pipeline
from fbjax.evaluation import heads
from fbjax.geometry import biometry, ellipse_fit, preprocess, segment_post
from fbjax.runtime import tracking

CHANNELS = ("head", "skull", "brain")


def _text(v) -> str:
  if isinstance(v, bytes):
    return v.decode()
  if isinstance(v, np.ndarray):
    return _text(v.item())
  return str(v)


def grid_input(ex: dict, size: tuple[int, int]) -> tuple[np.ndarray, preprocess.Geometry]:
  """The example's image on the network grid (float32 [0,1]) and its geometry: what
  prediction gives the segmenter (`fbjax.evaluation.heads.grid`)."""
  return heads.grid(ex["image"], size)


def measure_example(ex: dict, probs: np.ndarray, g: preprocess.Geometry,
                    methods: Sequence[str] = segment_post.METHODS, *,
                    grid_image: np.ndarray | None = None,
                    head_method: str = "robust") -> tuple[dict, dict]:
  """One row of metrics for one example, plus what an overlay needs.

  `probs` (H, W, 3) head/skull/brain probabilities on the network grid. With the
  grid image the segmenter read (`grid_image`), the row also holds the head step's
  verdict (`fbjax.evaluation.heads`, fitted by `head_method`): `seg_quality`, `no_head_reason`,
  as `launch.predict` writes them for the same image. Every example is measured
  whatever its verdict.
  """
  image = pipeline.grey(ex["image"])
  spacing = float(ex["pixel_spacing_mm"])
  row = {"id": _text(ex["id"]), "group": _text(ex["group"]), "pixel_spacing_mm": spacing,
         "ref_hc_mm": float(ex.get("hc_mm", math.nan)),
         "ref_bpd_mm": float(ex.get("bpd_mm", math.nan)),
         "ref_ofd_mm": float(ex.get("ofd_mm", math.nan))}
  sp = spacing if math.isfinite(spacing) and spacing > 0 else 1.0  # HD95 in px if unknown
  ref = {c: (pipeline.grey(ex[f"{c}_mask"]) if bool(ex[f"has_{c}_mask"]) else None)
         for c in CHANNELS}
  pred = {}
  for k, c in enumerate(CHANNELS):
    p = preprocess.unletterbox(np.ascontiguousarray(probs[..., k], np.float32), g)
    pred[c] = (p > 0.5).astype(np.uint8)
    row[f"seg_dice_{c}"] = (float(metrics.dice(pred[c], ref[c]))
                            if ref[c] is not None else math.nan)
  row["seg_hd95_head_mm"] = (metrics.hd95_mm(pred["head"], ref["head"], sp)
                             if ref["head"] is not None else math.nan)
  ellipses = {}
  for m in methods:
    if m == "prototype":
      pmask, c = segment_post.prototype_mask(image)
      e = ellipse_fit.fit_cv2(c.reshape(-1, 2)) if c is not None and len(c) >= 5 else None
      if ref["head"] is not None:
        row["prototype_dice_head"] = float(metrics.dice(pmask, ref["head"]))
        row["prototype_hd95_head_mm"] = metrics.hd95_mm(pmask, ref["head"], sp)
      else:
        row["prototype_dice_head"] = row["prototype_hd95_head_mm"] = math.nan
    else:
      e = segment_post.head_ellipse(m, prob=probs[..., 0], geometry=g)
    ellipses[m] = e
    b = biometry.biometry_from_ellipse(e, spacing)
    row[f"{m}_hc_mm"], row[f"{m}_bpd_mm"], row[f"{m}_ofd_mm"] = b.hc_mm, b.bpd_mm, b.ofd_mm
    row[f"{m}_hc_abs_mm"] = float(metrics.hc_abs_diff_mm(b.hc_mm, row["ref_hc_mm"]))
    row[f"{m}_hc_rel"] = float(metrics.hc_rel_diff(b.hc_mm, row["ref_hc_mm"]))
    if e is not None and ref["head"] is not None:
      row[f"{m}_dice_ellipse"] = float(metrics.dice(ellipse_fit.rasterize(e, image.shape),
                                                    ref["head"]))
    else:
      row[f"{m}_dice_ellipse"] = math.nan
    row[f"{m}_fit_ok"] = e is not None
  if grid_image is not None:
    h = heads.with_spacing(heads.from_segmentation(grid_image, probs, g, image.shape,
                                                   method=head_method), spacing)
    row["seg_quality"], row["no_head_reason"] = h.quality, h.reason
  return row, {"image": image, "ref": ref, "pred": pred, "ellipses": ellipses}


def overlay(vis: dict, *, method: str = "robust", text: str = "") -> np.ndarray:
  """BGR uint8 picture of prediction vs reference on the original image."""
  img = cv2.cvtColor(np.asarray(vis["image"], np.uint8), cv2.COLOR_GRAY2BGR)
  t = max(1, round(max(img.shape) / 400))
  for c, colour in (("skull", (0, 255, 255)), ("brain", (255, 255, 0))):
    cs, _ = cv2.findContours(vis["pred"][c], cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(img, cs, -1, colour, 1)
  if vis["ref"]["head"] is not None:
    cs, _ = cv2.findContours(vis["ref"]["head"].astype(np.uint8), cv2.RETR_EXTERNAL,
                             cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(img, cs, -1, (0, 255, 0), t)
  for m, colour in (("prototype", (255, 0, 0)), (method, (0, 0, 255))):
    e = vis["ellipses"].get(m)
    if e is not None:
      cv2.ellipse(img, e.to_cv2(), colour, t)
  if text:
    cv2.putText(img, text, (8, 12 + 12 * t), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * t, (255, 255, 255),
                t)
  return img


def summarize(rows: Sequence[dict]) -> dict:
  out = {"num_images": len(rows)}
  if not rows:
    return out
  for k in rows[0]:
    v = [r[k] for r in rows]
    if k.endswith("_fit_ok"):
      out[k.replace("_fit_ok", "_fail_rate")] = float(np.mean([not x for x in v]))
    elif all(isinstance(x, int | float) and not isinstance(x, bool) for x in v):
      out[k] = metrics.summarize(v)
  return out


TERCILES = ("small", "middle", "large")


def by_hc_tercile(rows: Sequence[dict], method: str = "robust") -> dict:
  """HC error of `method` per tercile of the reference HC (small / middle / large heads).

  Per tercile: the reference-HC range, the number of images, the mean and
  median absolute HC error (mm), the mean relative error, the ellipse Dice
  and how many images are above 10 % relative error. Rows without a
  reference HC are left out.
  """
  ref = np.array([r["ref_hc_mm"] for r in rows], np.float64)
  ok = np.isfinite(ref)
  if not ok.any():
    return {}
  edges = np.quantile(ref[ok], [1 / 3, 2 / 3])
  part = np.digitize(ref, edges)      # 0, 1, 2 by reference HC (edges go up)
  out = {}
  for k, name in enumerate(TERCILES):
    sel = [r for r, p, o in zip(rows, part, ok, strict=True) if o and p == k]
    err = np.array([r[f"{method}_hc_abs_mm"] for r in sel], np.float64)
    rel = np.array([r[f"{method}_hc_rel"] for r in sel], np.float64)
    refs = np.array([r["ref_hc_mm"] for r in sel], np.float64)
    out[name] = {"n": len(sel), "ref_hc_mm_range": [float(refs.min()), float(refs.max())]
                 if len(sel) else [math.nan, math.nan],
                 "hc_abs_mm_mean": float(np.nanmean(err)) if len(sel) else math.nan,
                 "hc_abs_mm_median": float(np.nanmedian(err)) if len(sel) else math.nan,
                 "hc_rel_mean": float(np.nanmean(rel)) if len(sel) else math.nan}
    if all(f"{method}_dice_ellipse" in r for r in sel):
      dice = np.array([r[f"{method}_dice_ellipse"] for r in sel], np.float64)
      out[name]["dice_ellipse_mean"] = float(np.nanmean(dice)) if len(sel) else math.nan
    out[name]["n_over_10pct"] = int(np.sum(~(rel <= 0.10)))   # a failed fit counts
  return out


# ---------------------------------------------------------------------------
# Choosing a post-processing parameter without scoring on the images it was chosen on
# ---------------------------------------------------------------------------


def group_folds(groups, k: int, seed: int = 0) -> np.ndarray:
  """Fold index per image: groups shuffled, then dealt round-robin (no group in two folds)."""
  uniq = np.array(sorted(set(groups)))
  if len(uniq) < k:
    raise ValueError(f"{len(uniq)} groups cannot make {k} folds")
  order = np.random.default_rng(seed).permutation(len(uniq))
  fold_of = {g: i % k for i, g in enumerate(uniq[order])}
  return np.array([fold_of[g] for g in groups])


def kfold_choice(errors: dict[str, np.ndarray], folds: np.ndarray,
                 ref_hc_mm: np.ndarray | None = None, ids: Sequence[str] | None = None) -> dict:
  """Per fold: the variant with the lowest mean error on the other folds, scored on the fold.

  `errors`: absolute HC error (mm) per variant and image (NaN: a failed fit).
  With the reference HC per image (`ref_hc_mm`) the result also pools every
  image's held-out error (its fold's chosen variant) into `held_out_images`:
  mean and median absolute error, images above 10 % relative error (a failed
  fit counts; listed by `ids` where given) and the error by HC tercile.
  """
  names = list(errors)
  table = np.stack([np.asarray(errors[n], np.float64) for n in names])   # (V, N)
  per_fold = []
  pooled = np.full(table.shape[1], np.nan)
  for f in sorted(set(folds.tolist())):
    train, test = folds != f, folds == f
    choice = int(np.argmin(np.nanmean(table[:, train], axis=1)))
    pooled[test] = table[choice, test]
    per_fold.append({"fold": int(f), "n": int(test.sum()), "chosen": names[choice],
                     "hc_abs_mm": float(np.nanmean(table[choice, test]))})
  held = np.array([p["hc_abs_mm"] for p in per_fold])
  out = {"folds": per_fold, "hc_abs_mm_mean": float(held.mean()),
         "hc_abs_mm_std": float(held.std(ddof=1)) if len(held) > 1 else 0.0,
         "all_images": {n: float(np.nanmean(errors[n])) for n in names}}
  if ref_hc_mm is not None:
    ref = np.asarray(ref_hc_mm, np.float64)
    rel = pooled / ref
    over = np.nonzero(~(rel <= 0.10))[0]
    rows = [{"ref_hc_mm": r, "held_out_hc_abs_mm": e, "held_out_hc_rel": q}
            for r, e, q in zip(ref, pooled, rel, strict=True)]
    out["held_out_images"] = {
        "n": int(len(pooled)), "hc_abs_mm_mean": float(np.nanmean(pooled)),
        "hc_abs_mm_median": float(np.nanmedian(pooled)),
        "n_failed": int(np.sum(~np.isfinite(pooled))), "n_over_10pct": int(len(over)),
        "over_10pct": [{"id": ids[i] if ids is not None else int(i),
                        "hc_rel": float(rel[i]), "ref_hc_mm": float(ref[i])} for i in over],
        "hc_terciles": by_hc_tercile(rows, "held_out")}
  return out


def _safe(name: str) -> str:
  name = re.sub(r"\.(png|jpe?g|bmp|tiff?)$", "", name, flags=re.IGNORECASE)
  return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "image"


def evaluate(source, predict: Callable[[np.ndarray], np.ndarray], *, size: tuple[int, int],
             methods: Sequence[str] = segment_post.METHODS, batch_size: int = 16,
             out_dir: str | os.PathLike | None = None, num_overlays: int = 16,
             overlay_method: str = "robust", limit: int | None = None,
             log: Callable[[str], None] | None = None) -> tuple[list[dict], dict]:
  """Runs `predict` over `source` and measures every example (see module doc).

  Overlays are written for the first `num_overlays` examples (-1: all) when
  `out_dir` is given, as are `per_image.csv` and `summary.json`.
  """
  n = len(source) if limit is None else min(limit, len(source))
  overlay_dir = None
  if out_dir is not None and num_overlays:
    overlay_dir = pathlib.Path(out_dir) / "overlays"
    overlay_dir.mkdir(parents=True, exist_ok=True)
  rows, t_predict, t_post = [], 0.0, 0.0
  for start in range(0, n, batch_size):
    exs = [source[i] for i in range(start, min(n, start + batch_size))]
    grid = [grid_input(ex, size) for ex in exs]
    t0 = time.perf_counter()
    probs = np.asarray(predict(np.stack([x for x, _ in grid])))
    t1 = time.perf_counter()
    for ex, (x, g), p in zip(exs, grid, probs, strict=True):
      row, vis = measure_example(ex, p, g, methods, grid_image=x, head_method=overlay_method)
      rows.append(row)
      if overlay_dir is not None and (num_overlays < 0 or len(rows) <= num_overlays):
        hc = row.get(f"{overlay_method}_hc_mm", math.nan)
        text = f"HC {hc:.1f} mm (ref {row['ref_hc_mm']:.1f})"
        cv2.imwrite(str(overlay_dir / f"{len(rows) - 1:05d}_{_safe(row['id'])}.png"),
                    overlay(vis, method=overlay_method, text=text))
    t_post += time.perf_counter() - t1
    t_predict += t1 - t0
    if log:
      log(f"evaluated {len(rows)}/{n} images")
  summary = summarize(rows)
  for m in methods:
    if rows:
      rel = np.array([r[f"{m}_hc_rel"] for r in rows], np.float64)
      summary[f"{m}_n_over_10pct"] = int(np.sum(~(rel <= 0.10) & np.isfinite(
          [r["ref_hc_mm"] for r in rows])))
      summary[f"{m}_hc_terciles"] = by_hc_tercile(rows, m)
  if rows:
    summary["seg_quality"] = quality_counts(rows, overlay_method)
  summary["seconds"] = {"predict": t_predict, "measure": t_post}
  if out_dir is not None:
    write(rows, summary, out_dir)
  return rows, summary


def quality_counts(rows: Sequence[dict], method: str = "robust") -> dict:
  """Images per `seg_quality` (the head step's verdict), and among the images with a
  reference HC, how many of those above 10 % HC error (`method`) and of the others the
  verdict flags (anything but "ok")."""
  q = [r["seg_quality"] for r in rows]
  out = {"counts": {k: q.count(k) for k in heads.QUALITY if k in q}}
  ref = [r for r in rows if math.isfinite(r["ref_hc_mm"])]
  if ref and f"{method}_hc_rel" in ref[0]:   # `method` among the methods measured
    bad = [r for r in ref if not r[f"{method}_hc_rel"] <= 0.10]
    good = [r for r in ref if r[f"{method}_hc_rel"] <= 0.10]
    out["over_10pct"] = {"n": len(bad), "flagged": sum(r["seg_quality"] != "ok" for r in bad)}
    out["within_10pct"] = {"n": len(good),
                           "flagged": sum(r["seg_quality"] != "ok" for r in good)}
  return out


def write(rows: Sequence[dict], summary: dict, out_dir: str | os.PathLike) -> None:
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  if rows:
    with open(out / "per_image.csv", "w", newline="") as f:
      w = csv.DictWriter(f, fieldnames=list(rows[0]))
      w.writeheader()
      w.writerows(rows)
  with open(out / "summary.json", "w") as f:
    json.dump(tracking.jsonable(summary), f, indent=1, sort_keys=True)
