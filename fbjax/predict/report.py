"""The HTML report of a prediction run (`fbjax.predict.run` writes it as `report.html`).

Sections: counts (images, errors, planes, conditions, flags, segmentation
quality), distributions (abnormal probability, anomaly score, head
circumference, uncertainty), thumbnails of the most abnormal and the least
certain images (beside each overlay, the aligned head where the classifier
reads it: `crops/`), and occlusion maps of where the abnormal head looks, with
the share of each map that falls on the predicted head. Figures are PNG files in
`report_files/`; the page links the overlays in `overlays/` (written for every
image the page shows, `fbjax.predict.ensure_overlays`), all by relative paths,
so the output folder opens from disk and can be moved as a whole. Long file
names wrap inside their card or cell; wide tables scroll inside their box.
"""

from __future__ import annotations

import html
import math
import os
import pathlib
import urllib.parse

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from fbjax.core import plots
from fbjax.evaluation import saliency
from fbjax.geometry import align, preprocess
from fbjax.predict import files

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left;vertical-align:top;overflow-wrap:anywhere}th{background:#f4f4f4}
.grid{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
.card{width:200px;font-size:12px;overflow-wrap:anywhere;min-width:0}
.card img{display:block;width:200px;height:auto;border:1px solid #ddd;box-sizing:border-box}
.card.wide{width:400px}.card.wide img{width:400px}
.card.pair{width:304px}.pics{display:flex;gap:4px;align-items:flex-start}
.card .pics img.crop{width:100px}
.errors{table-layout:fixed;width:100%}.errors td:first-child{width:55%}
.figs img{margin:4px;border:1px solid #eee;max-width:100%}h2{margin-top:28px}
.small{color:#666;font-size:12px;overflow-wrap:anywhere}
"""


def _table(d: dict, head=("", "count")) -> str:
  rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_v(v))}</td></tr>"
                 for k, v in d.items())
  return f"<table><tr><th>{head[0]}</th><th>{head[1]}</th></tr>{rows}</table>"


def _v(v) -> str:
  if isinstance(v, float):
    return f"{v:.4g}"
  return str(v)


def _save(folder: pathlib.Path, name: str, rgb: np.ndarray) -> str:
  cv2.imwrite(os.fspath(folder / name), np.ascontiguousarray(rgb[..., ::-1]))
  return f"{folder.name}/{name}"


def _card(out: pathlib.Path, r: dict, extra: str = "") -> str:
  """One image: its overlay and, where the classifier read the aligned head, that crop."""
  name = files.overlay_name(r["file"])
  src = "overlays/" + urllib.parse.quote(name)
  img = f'<a href="{src}"><img src="{src}" alt="overlay"></a>'
  cls = "card"
  if (out / "crops" / name).exists():
    crop = "crops/" + urllib.parse.quote(name)
    img = (f'<div class="pics">{img}<a href="{crop}"><img class="crop" src="{crop}" '
           'alt="aligned head, as the classifier read it" title="aligned head, as the '
           'classifier read it"></a></div>')
    cls = "card pair"
  name = html.escape(pathlib.Path(r["file"]).name)
  bits = [f"<b>{name}</b>"]
  if r.get("plane"):
    bits.append(f"plane {r['plane']} ({r['plane_prob']:.2f})")
  if isinstance(r.get("abnormal_prob"), float) and math.isfinite(r["abnormal_prob"]):
    bits.append(f"abnormal {r['abnormal_prob']:.2f}; {html.escape(str(r.get('condition', '')))}")
  if isinstance(r.get("anomaly_score"), float) and math.isfinite(r["anomaly_score"]):
    bits.append(f"anomaly score {r['anomaly_score']:.2f}")
  if extra:
    bits.append(extra)
  sep = "" if cls == "card pair" else "<br>"
  return f'<div class="{cls}">{img}{sep}{"<br>".join(bits)}</div>'


def occlusion_figures(predictor, rows: list[dict], folder: pathlib.Path, num: int) -> list[dict]:
  """Occlusion maps of the abnormal logit for the `num` most abnormal of `rows`.

  Returns one JSON-able dict per map: file, abnormal_prob, src (relative to
  the report), inside_head (share of the evidence on the predicted head).
  """
  folder.mkdir(parents=True, exist_ok=True)
  clf = predictor.clf
  if clf is None or "abnormal" not in clf.tasks or num <= 0:
    return []
  ranked = sorted((r for r in rows if math.isfinite(r.get("abnormal_prob", math.nan))),
                  key=lambda r: -r["abnormal_prob"])[:num]
  if not ranked:
    return []
  logit = clf.logit_fn("abnormal", 1)
  params = jax.tree.map(jnp.asarray, clf.params)
  bs = 64
  fn = jax.jit(lambda x: logit(params, x))

  def score(batch):
    n = len(batch)
    pad = np.zeros((bs, *batch.shape[1:]), np.float32)
    out = []
    for i in range(0, n, bs):
      chunk = batch[i:i + bs]
      pad[: len(chunk)] = chunk
      out.append(np.asarray(fn(jnp.asarray(pad)))[: len(chunk)])
    return np.concatenate(out)

  size = tuple(clf.size)
  patch = max(4, size[0] // 8)
  figs = []
  for r in ranked:
    item = predictor.prepare(pathlib.Path(r["file"]))
    frac = math.nan
    if predictor.input == "aligned_head":
      # The map of the crop the classifier read (its first orientation); the
      # head is the ellipse on the crop.
      head = predictor.infer([item])["heads"][0]
      if "_crops" not in head:
        continue
      grid = head["_crops"][0]
      heat = saliency.occlusion_map(score, grid, patch=patch, stride=max(2, patch // 2))
      _, info = align.aligned_head(item.image, head["_ellipse"], pixel_aspect=1.0,
                                   **predictor.align)
      frac = saliency.inside_fraction(heat, align.head_region(info["alignment"], 0.0))
    else:
      grid = item.grids[size]
      heat = saliency.occlusion_map(score, grid, patch=patch, stride=max(2, patch // 2))
    if predictor.seg is not None and predictor.input != "aligned_head":
      out = predictor.infer([item])
      head = out["seg"][0][..., 0]
      g_seg = item.geometries[tuple(predictor.seg.size)]
      g_cls = item.geometries[size]
      mask = preprocess.unletterbox((head > 0.5).astype(np.uint8), g_seg, nearest=True)
      mask, _ = preprocess.letterbox(mask, size, nearest=True, geometry=g_cls)
      frac = saliency.inside_fraction(heat, mask)
    pic = np.concatenate([plots.to_rgb_uint8(grid), plots.heatmap_overlay(grid, heat)], axis=1)
    k = max(1, 192 // grid.shape[0])     # small grids are enlarged for viewing
    pic = cv2.resize(pic, (pic.shape[1] * k, pic.shape[0] * k), interpolation=cv2.INTER_NEAREST)
    name = "occlusion_" + files.overlay_name(r["file"])
    figs.append({"file": r["file"], "abnormal_prob": float(r["abnormal_prob"]),
                 "src": _save(folder, name, pic),
                 "inside_head": frac if math.isfinite(frac) else None})
  return figs


def write(out: pathlib.Path, c, summary: dict, *, occlusion: list[dict] = ()) -> pathlib.Path:
  """report.html of a run from its collected CSVs (`fbjax.predict.files.Collected`)."""
  out = pathlib.Path(out)
  folder = out / "report_files"
  folder.mkdir(exist_ok=True)
  parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>fbjax report</title>"
           f"<style>{STYLE}</style></head><body><h1>fbjax prediction report</h1>"]
  t = summary.get("timing", {})
  parts.append(f"<p class='small'>model {html.escape(summary.get('workdir', ''))}; "
               f"segmentation {html.escape(summary.get('seg_workdir', '') or 'none')}; "
               f"{t.get('images_per_s', math.nan):.1f} images/s on "
               f"{html.escape(str(t.get('device', '')))}</p>")

  # Counts.
  counts = {"images": summary["images"], "predicted": summary["predicted"],
            "unreadable (errors.csv)": summary["errors"],
            "skipped, not images (skipped.csv)": summary.get("skipped", 0)}
  if "abnormal_flagged" in summary and summary.get("abnormal_threshold") is not None:
    counts[f"abnormal (probability > {summary['abnormal_threshold']:.3g})"] = \
        summary["abnormal_flagged"]
  if "anomaly_flagged" in summary:
    counts[f"anomalous ({summary['anomaly_score_kind']} > {summary['anomaly_threshold']:.3g}, "
           f"{summary['anomaly_calibration_specificity']:.0%} specificity on normal "
           "validation images)"] = summary["anomaly_flagged"]
  parts.append("<h2>Counts</h2><div class='grid'>" + _table(counts))
  for k, title in (("plane_counts", "plane"), ("condition_counts", "condition"),
                   ("seg_quality_counts", "segmentation quality"),
                   ("skipped_reasons", "skipped")):
    if k in summary:
      parts.append(_table(summary[k], (title, "files")))
  parts.append("</div>")
  if c.first_errors:
    parts.append(f"<h3>Unreadable files ({c.errors}"
                 + (f", the first {len(c.first_errors)} shown" if c.errors > len(
                     c.first_errors) else "") + ")</h3><table class='errors'><tr><th>file</th>"
                 "<th>reason</th></tr>" + "".join(
                     f"<tr><td>{html.escape(e['file'])}</td><td>{html.escape(e['reason'])}"
                     "</td></tr>" for e in c.first_errors) + "</table>")

  # Distributions.
  figs = []
  for key, title, thr in (("abnormal_prob", "abnormal probability",
                           summary.get("abnormal_threshold")),
                          ("anomaly_score", "anomaly score", summary.get("anomaly_threshold")),
                          ("hc_mm", "head circumference (mm)", None),
                          ("hc_px", "head circumference (px)", None),
                          ("uncertainty", "uncertainty (mean normalised entropy)", None)):
    v = c.array(key)
    if v.size:
      img = plots.histogram_image(v, title=f"{title} (n={v.size})", threshold=thr)
      figs.append(_save(folder, f"hist_{key}.png", img))
  if figs:
    parts.append("<h2>Distributions</h2><div class='figs'>"
                 + "".join(f"<img src='{f}' alt='histogram'>" for f in figs) + "</div>")

  # Thumbnails.
  key, top = c.top_abnormal()
  if top:
    parts.append(f"<h2>Most abnormal ({key})</h2><div class='grid'>"
                 + "".join(_card(out, r) for r in top) + "</div>")
  unsure = c.least_certain.rows()
  if unsure:
    parts.append("<h2>Least certain (highest mean normalised entropy)</h2><div class='grid'>"
                 + "".join(_card(out, r, f"uncertainty {r['uncertainty']:.2f}")
                           for r in unsure) + "</div>")

  # Where the abnormal head looks.
  occ = list(occlusion)
  if occ:
    fr = np.array([o["inside_head"] for o in occ], np.float64)
    note = (f"mean share of the positive occlusion evidence on the predicted head: "
            f"{np.nanmean(fr):.2f}" if np.isfinite(fr).any() else
            "no segmentation model: the head is not outlined")
    summary["occlusion_inside_head_mean"] = float(np.nanmean(fr)) if np.isfinite(fr).any() \
        else None
    parts.append("<h2>Where the abnormal head looks (occlusion)</h2><p class='small'>Each map "
                 "shows how much the abnormal logit drops when a square patch is blanked out "
                 f"(red = evidence for abnormal); {note}.</p><div class='grid'>" + "".join(
                     f"<div class='card wide'><img src='{o['src']}' alt='occlusion map'>"
                     f"{html.escape(pathlib.Path(o['file']).name)}"
                     f" abnormal {o['abnormal_prob']:.2f}"
                     + (f", {o['inside_head']:.0%} on the head" if o["inside_head"] is not None
                        and math.isfinite(o["inside_head"]) else "") + "</div>"
                     for o in occ) + "</div>")
  parts.append("<p class='small'>Files: predictions.csv (one row per image), errors.csv, "
               "skipped.csv, overlays/, summary.json.</p></body></html>")
  path = out / "report.html"
  files.write_atomic(path, "\n".join(parts))
  return path
