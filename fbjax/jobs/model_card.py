"""The shipped bundle's metadata.json and model card (docs/README.md), from its manifest.

Every number in the card is read from the manifest the release recipe wrote
(`fbjax.jobs.release`), so regenerating the bundle regenerates the card.
"""

from __future__ import annotations

import json
import math
import pathlib

from fbjax.core import schema

INTENDED_USE = (
    "Research on 2-D fetal head ultrasound: head biometry (HC, BPD, OFD), brain-plane "
    "categorisation (trans-thalamic, trans-cerebellar, trans-ventricular, other) and "
    "normal-vs-abnormal screening studies, on images like those of the public data sets "
    "it was trained on. Not a medical device; not for clinical decisions, diagnosis or "
    "patient management.")

DATA = [
    {"name": "HC18", "licence": "CC BY 4.0", "url": "https://doi.org/10.5281/zenodo.1327317",
     "attribution": "HC18 data set, T. L. A. van den Heuvel, D. de Bruijn, C. L. de Korte "
                    "and B. van Ginneken, Radboud University Medical Center "
                    "(doi:10.5281/zenodo.1327317), licensed under CC BY 4.0.",
     "used_for": "head segmentation (ellipse annotations), normal images for the abnormal "
                 "head and the anomaly model"},
    {"name": "FETAL_PLANES_DB", "licence": "CC BY 4.0",
     "url": "https://doi.org/10.5281/zenodo.3904280",
     "attribution": "FETAL_PLANES_DB, X. P. Burgos-Artizzu et al., BCNatal Barcelona "
                    "(doi:10.5281/zenodo.3904280), licensed under CC BY 4.0. "
                    "(the 104 original brain images and a 640x640 re-export of 398 more)",
     "used_for": "brain planes; validation normals for the abnormal threshold"},
    {"name": "Fetal Brain Abnormalities Ultrasound", "licence": "CC BY 4.0",
     "url": "https://universe.roboflow.com/hritwik-trivedi-gkgrv/"
            "fetal-brain-abnormalities-ultrasound",
     "attribution": "Fetal Brain Abnormalities Ultrasound, provided by a Roboflow user "
                    "(hritwik-trivedi-gkgrv), Roboflow Universe, licensed under CC BY 4.0.",
     "used_for": "normal vs abnormal and the condition (15 anomalies)"},
    {"name": "fbjax phantom (fetal_brain_synth 1.4.0)", "licence": "Apache-2.0 (generated)",
     "url": "", "attribution": "simulated by fbjax", "used_for": "head segmentation"},
]
CHANGES = "Changes made by fbjax to these data: images are converted to grey, resized / " \
          "letterboxed or cut around the head for the networks, HC18's ellipse outlines " \
          "are filled into masks, and splits are rebuilt by patient / source image."


def _net(cfg: dict, kind: str) -> dict:
  cfg = schema.upgrade(cfg)
  h, w = cfg["input"]["size"]
  if kind == "seg_stage1":
    return {"kind": "segmenter", "role": "stage 1: locates the head on the whole image",
            "input": f"grey image in [0, 1], letterboxed to {h}x{w} (B, {h}, {w})",
            "output": f"(B, {h}, {w}, 3) probabilities of head, skull, brain"}
  if kind == "seg_stage2":
    return {"kind": "segmenter", "role": "stage 2: segments a square crop around stage 1's "
            f"head ellipse (major axis over {cfg['crop']['head_fraction']} of the side), "
            "pasted back into the image",
            "input": f"(B, {h}, {w}) crop of the original image, grey in [0, 1]",
            "output": f"(B, {h}, {w}, 3) probabilities of head, skull, brain"}
  if kind == "anomaly_ae":
    return {"kind": "autoencoder", "role": "unsupervised anomaly score (Mahalanobis "
            "distance of its features from normal training images)",
            "input": f"grey image letterboxed to {h}x{w}", "output": "features, reconstruction"}
  return {"kind": "classifier", "role": "heads: " + ", ".join(cfg["tasks"]),
          "input": f"aligned head (B, {h}, {w}): the image cut around the segmenter's ellipse, "
                   "major axis horizontal; both 180-degree orientations averaged",
          "output": "softmax probabilities per task (temperature-calibrated in prediction)"}


def metadata(recipe, configs: dict | None = None) -> dict:
  nets = {}
  for n, c in (configs or {}).items():
    nets[n] = _net(c, n)
  return {"name": recipe.name, "version": recipe.version,
          "changelog": {"1.0.0": "first release: two-stage head segmenter, aligned-head "
                                 "plane and abnormal/condition classifiers, anomaly model",
                        "1.1.0": "the same weights; seg_quality=cut_by_border also where "
                                 "the image's own edge cuts the head ellipse (1.0.0 saw only "
                                 "the letterbox padding): one reference image moves from ok "
                                 "to cut_by_border",
                        "1.2.0": "one head rule (fbjax.heads) for training, evaluation and "
                                 "prediction: the classifiers retrained on the aligned heads "
                                 "it accepts (the skull gate and the shape rule now also "
                                 "apply to training's segmenter heads), crops cut from the "
                                 "8-bit image as in training; the segmenters unchanged"},
          "intended_use": INTENDED_USE, "data": DATA, "data_changes": CHANGES,
          "licence": "the code: Apache-2.0; the weights are trained on CC BY 4.0 data, "
                     "whose attributions travel with them (data)",
          "networks": nets, "references": "CITATIONS.bib of the fbjax repository"}


def float16_deltas(ref16: list[dict], ref32: list[dict]) -> dict:
  """Largest differences between the float16 bundle and its float32 training weights on
  the reference images."""
  d = {"images": len(ref16), "ellipse_px": 0.0, "hc_rel": 0.0, "probability": 0.0,
       "anomaly_score_rel": 0.0, "plane_agree": 0, "quality_agree": 0}
  d["gate_flips"] = []
  for a, b in zip(ref16, ref32, strict=True):
    d["quality_agree"] += int(a["seg_quality"] == b["seg_quality"])
    if (a["ellipse"] is None) != (b["ellipse"] is None):
      # The head gate decided otherwise (an image at one of its thresholds): the rest of
      # the row is then not comparable.
      d["gate_flips"].append({"file": a["file"], "float16": a["seg_quality"],
                              "float32": b["seg_quality"],
                              "reason": a.get("no_head_reason") or b.get("no_head_reason")})
      continue
    if a["ellipse"] is not None:
      d["ellipse_px"] = max(d["ellipse_px"], *(abs(x - y) for x, y in zip(
          a["ellipse"][:4], b["ellipse"][:4], strict=True)))
      d["hc_rel"] = max(d["hc_rel"], abs(a["hc_px"] - b["hc_px"]) / b["hc_px"])
    for t, p in a["probabilities"].items():
      q = b["probabilities"].get(t, {})
      d["probability"] = max(d["probability"], *(abs(p[k] - q.get(k, math.nan))
                                                 for k in p))
    if a["probabilities"].get("plane") and b["probabilities"].get("plane"):
      pa, pb = a["probabilities"]["plane"], b["probabilities"]["plane"]
      d["plane_agree"] += int(max(pa, key=pa.get) == max(pb, key=pb.get))
    sa, sb = a["anomaly_score"], b["anomaly_score"]
    if math.isfinite(sa) and math.isfinite(sb):
      d["anomaly_score_rel"] = max(d["anomaly_score_rel"], abs(sa - sb) / max(abs(sb), 1e-9))
  return d


def _confusions(pl: dict, k: int = 3) -> str:
  """The commonest confusions of the plane validation confusion matrix, in words."""
  cm = pl.get("confusion_matrix")
  if not cm:
    return "not measured"
  names = list(pl["per_class_f1"])
  off = sorted(((cm[i][j], i, j) for i in range(len(cm)) for j in range(len(cm)) if i != j),
               reverse=True)[:k]
  return "the commonest confusions on validation are " + ", ".join(
      f"{names[i]} read as {names[j]} ({n} of {sum(cm[i])})" for n, i, j in off if n)


def _f(v, nd=3, pct=False) -> str:
  if v is None or (isinstance(v, float) and not math.isfinite(v)):
    return "n/a"
  return f"{100 * v:.1f} %" if pct else f"{v:.{nd}f}"


def render(manifest: dict, meta: dict) -> str:
  """The model card (Markdown)."""
  v = manifest.get("validation", {})
  seg, pl, ab, an = (v.get(k, {}) for k in ("segmentation", "planes", "abnormal", "anomaly"))
  segoff = v.get("segmentation_tta_off", {})
  size = sum(r["bytes"] for r in manifest["files"].values()) / 1e6
  lines = [f"# {manifest['name']} {manifest['version']}: model card", "",
           "Trained by one command from the public data "
           f"(`{manifest['command']}`; recipe `configs/release.py`), fbjax "
           f"{manifest['fbjax']['version']} at commit `{manifest['fbjax']['commit'][:12]}`"
           + (" (with uncommitted changes)" if manifest["fbjax"].get("dirty") else "")
           + f". {size:.1f} MB, weights stored as {manifest['weights_dtype']}.", "",
           "## Intended use", "", meta["intended_use"], "",
           "## What it does", "",
           "`python -m launch.predict --input DIR --out OUT [--spacing_csv CSV]` runs it "
           "(the default model): per image the head ellipse and HC/BPD/OFD (mm where the "
           "pixel spacing is known), the brain plane, the abnormal probability and decision, "
           "the condition, and an unsupervised anomaly score.", "",
           "| network | what it reads | what it returns |", "|---|---|---|"]
  for n, d in meta.get("networks", {}).items():
    lines.append(f"| `{n}` ({d['role']}) | {d['input']} | {d['output']} |")
  lines += ["", "## Training data", ""]
  for d in meta["data"]:
    lines.append(f"- **{d['name']}** ({d['licence']}): {d['used_for']}. {d['attribution']}")
  lines += ["", meta["data_changes"], "",
            "Splits by patient / source image, one rule for every data set: "
            + manifest.get("split_rule", ""), "",
            "| data | version | files | SHA-256 of the folder listing |", "|---|---|---|---|"]
  for name, d in (manifest.get("data") or {}).items():
    for f in d.get("folders") or [{"folder": "(generated)", "files": sum(
        d["splits"].values()), "sha256": ""}]:
      lines.append(f"| {name} ({f['folder']}) | {d['version']} | {f['files']} | "
                   f"`{f['sha256'][:16]}` |")
  lines += ["", "Wall time per training (one CPU core each, two at once):", ""]
  for n, t in manifest.get("trainings", {}).items():
    lines.append(f"- `{n}`: {(t['wall_time_s'] or 0) / 60:.1f} min")
  lines += ["", "## Validation numbers", "",
            "Measured by the recipe through this bundle as shipped, on the validation "
            "splits (patients and source images not trained on). The thresholds and "
            "temperatures were fitted on the same validation images, so the operating "
            "points below are not held out; independent held-out numbers come from "
            "`launch.predict` + `launch.evaluate` on images outside the project.", ""]
  if seg:
    p = seg["prototype"]
    lines += ["### Head biometry (HC18 validation, "
              f"{seg['n']} images, both stages, mirror averaging "
              f"{'on' if seg['tta'] else 'off'})", "",
              "| | head Dice | mean abs HC error | median | images > 10 % |",
              "|---|---|---|---|---|",
              f"| fbjax | {_f(seg['dice_head'])} | {_f(seg['hc_abs_mm_mean'], 2)} mm | "
              f"{_f(seg['hc_abs_mm_median'], 2)} mm | {seg['n_over_10pct']} |"]
    if segoff:
      lines.append(f"| fbjax, mirror averaging off (`--segmenter_tta off`) | "
                   f"{_f(segoff['dice_head'])} | {_f(segoff['hc_abs_mm_mean'], 2)} mm | "
                   f"{_f(segoff['hc_abs_mm_median'], 2)} mm | {segoff['n_over_10pct']} |")
    lines += [f"| shortcut: the prototype (threshold 180, largest contour) | "
              f"{_f(p['dice_head'])} | {_f(p['hc_abs_mm_mean'], 1)} mm | "
              f"{_f(p['hc_abs_mm_median'], 1)} mm | {p['n_over_10pct']} |", "",
              "By head size (reference HC):", "",
              "| heads | images | mean abs HC error | images > 10 % |", "|---|---|---|---|"]
    for name, t in seg["terciles"].items():
      lo, hi = t["ref_hc_mm_range"]
      lines.append(f"| tercile {name} ({lo:.0f}-{hi:.0f} mm) | {t['n']} | "
                   f"{_f(t['hc_abs_mm_mean'], 2)} mm | {t['n_over_10pct']} |")
    for name, t in seg["bands"].items():
      lines.append(f"| band {name} mm | {t['n']} | {_f(t['hc_abs_mm_mean'], 2)} mm | "
                   f"{t['n_over_10pct']} |")
  if pl:
    s = pl["shortcut"]
    lines += ["", f"### Brain planes (FETAL_PLANES_DB + the abnormalities set's normals, "
              f"{pl['n']} validation images)", "",
              "| | macro-F1 TT/TC/TV/other | macro-F1 TT/TC/TV | ECE (calibrated) |",
              "|---|---|---|---|",
              f"| fbjax | {_f(pl['macro_f1'])} | {_f(pl['macro_f1_tt_tc_tv'])} | "
              f"{_f(pl['ece'])} ({_f(pl['ece_calibrated'])}) |",
              f"| shortcut (thumbnail + histogram) | {_f(s['macro_f1'])} | "
              f"{_f(s['macro_f1_tt_tc_tv'])} | |", "",
              "Per class F1: " + ", ".join(f"{k} {_f(x)} (n={pl['support'][k]})"
                                           for k, x in pl["per_class_f1"].items()) + "."]
  if ab:
    po, sp = ab["pooled"], ab["shortcut"]["pooled"]
    lines += ["", "### Normal vs abnormal", "",
              f"Shipped threshold {ab['threshold']} on the abnormal probability, at 95 % "
              f"specificity on {ab['threshold_rests_on']['normals']} validation normals of "
              f"{', '.join(ab['threshold_rests_on']['sources'] or [])}.", "",
              "| validation images | | AUROC | sensitivity | specificity |",
              "|---|---|---|---|---|"]
    for n, r in ab["sources"].items():
      b = ab["shortcut"]["sources"][n]
      lines.append(f"| {n} ({r['n']}, {r['normals']} normal) | fbjax | {_f(r['auroc'])} | "
                   f"{_f(r['sensitivity'])} | {_f(r['specificity'])} |")
      lines.append(f"| | shortcut | {_f(b['auroc'])} | {_f(b['sensitivity'])} | "
                   f"{_f(b['specificity'])} |")
    lines += [f"| pooled {'+'.join(po['sources'])} ({po['n']}) | fbjax | {_f(po['auroc'])} | "
              f"{_f(po['sensitivity'])} | {_f(po['specificity'])} |",
              f"| | shortcut | {_f(sp['auroc'])} | {_f(sp['sensitivity'])} | "
              f"{_f(sp['specificity'])} |", "",
              f"Condition (abnormalities set validation, {ab['condition']['n']} images, "
              f"{ab['condition']['classes_present']} classes present): macro-F1 "
              f"{_f(ab['condition']['macro_f1'])}, shortcut "
              f"{_f(ab['shortcut']['condition_macro_f1'])}."]
  if an:
    lines += ["", "### Unsupervised anomaly score", "",
              f"{an['kind']} distance, threshold at 95 % specificity on "
              f"{an['n_calibrate']} validation normals ({', '.join(an['calibrated_on'] or [])}): "
              + "; ".join(f"{n} AUROC {_f(r['auroc'])}, sensitivity {_f(r['sensitivity'])}, "
                          f"specificity {_f(r['specificity'])}"
                          for n, r in an["sources"].items()) + "."]
  cal = manifest.get("calibration") or {}
  if cal:
    lines += ["", "### Calibration", "",
              "A temperature per head, fitted on the validation images of the sources each "
              "classifier was validated on (`calibration/`); prediction reports the "
              "calibrated probabilities.", "",
              "| network | head | temperature | fitted on (images) | ECE before | after |",
              "|---|---|---|---|---|---|"]
    for net, tasks in cal.items():
      for t, c in tasks.items():
        lines.append(f"| `{net}` | {t} | {_f(c['temperature'])} | {c['n']} | "
                     f"{_f(c['ece'])} | {_f(c['ece_calibrated'])} |")
  f16 = manifest.get("float16")
  if f16:
    lines += ["", f"float16 storage against the float32 training weights on the "
              f"{f16['images']} reference images: ellipse within {_f(f16['ellipse_px'], 3)} px, "
              f"HC within {_f(f16['hc_rel'], 5)} (relative), probabilities within "
              f"{_f(f16['probability'], 4)}, plane agrees on {f16['plane_agree']} of "
              f"{f16['images'] - len(f16.get('gate_flips', []))}"
              + "".join(f"; the head gate decides otherwise on {g['file']} ({g['float16']} "
                        f"with float16, {g['float32']} with float32: {g['reason']})"
                        for g in f16.get("gate_flips", []))
              + "."]
  lines += ["", "## Known failure modes", "",
            "- Small, early heads (HC < 100 mm, first trimester): a faint, barely ossified "
            "skull with the fetal body touching it, where a segmentation can take in the "
            "body or miss the skull. The validation numbers for them rest on few heads (the "
            "band table above); measure on your own early scans before relying on them. "
            "Large heads (> 182 mm), often cut by the image border, have the largest errors "
            "in millimetres.",
            "- Brain planes: " + _confusions(pl) + "; the 'other' plane has few training "
            "images.",
            "- The abnormal head and the condition head learned from one public set whose "
            "normal images come from another source than its anomalies: the shortcut "
            "beside each number shows how much of it an image-statistics model gets; "
            "condition predictions are not reliable.",
            "- Images that are not fetal heads, or heads the head gate rejects, get "
            "`seg_quality=no_head` and no measurement; a head cut by the image border is "
            "flagged `cut_by_border`.",
            "- Scanners, populations and image exports unlike the training data have not "
            "been measured.", ""]
  return "\n".join(lines)


def read(folder: str | pathlib.Path) -> tuple[dict, dict]:
  folder = pathlib.Path(folder)
  return (json.loads((folder / "manifest.json").read_text()),
          json.loads((folder / "metadata.json").read_text()))
