"""Metrics that count each source image once: a data set's augmented copies of one image
(the abnormalities set holds up to 17, in one split) averaged before they are scored.

    got = source_images.by_source_image(labels, probs, ids, num_classes)
"""

from __future__ import annotations

import re

import numpy as np

from fbjax.core import metrics
from fbjax.evaluation import head_tables

_RF_SUFFIX = re.compile(r"\.rf\.[0-9a-f]{32}\.jpg$", re.IGNORECASE)


def source_image(ident: str) -> str:
  """The source image an example's id comes from: the file name without folder,
  extension, the abnormalities export's `.rf.<hash>.jpg`, `_png_jpg` and `_aug_<k>`
  (its augmented copies of one image share it; a FETAL_PLANES_DB image and its copy
  in the abnormalities set share it too)."""
  name = _RF_SUFFIX.sub("", ident.rsplit("/", 1)[-1])
  name = re.sub(r"\.(png|jpe?g)$", "", name, flags=re.IGNORECASE)
  name = re.sub(r"_(png_jpg|jpg|png)$", "", name)
  return re.sub(r"_aug_\d+$", "", name)


def ids_of(src) -> list[str]:
  """The example ids of `src`, in order (`head_tables.example_id`)."""
  return [head_tables.example_id(src[i]) for i in range(len(src))]


def source_groups(ids, y) -> dict:
  """{(source image, label): indices} of the examples with a known label."""
  groups: dict = {}
  for i, (k, lab) in enumerate(zip(ids, y, strict=True)):
    if lab >= 0:
      groups.setdefault((source_image(k), int(lab)), []).append(i)
  return groups


def by_source_image(y, p, ids, num_classes: int, classes=None) -> dict:
  """Each source image counted once: its copies' probabilities averaged.

  The abnormalities set holds up to 17 augmented copies of one image (rotation,
  crop, brightness), and they sit in one split: per image, a few source images
  weigh many times. Groups are (source image, label).
  """
  groups = source_groups(ids, y)
  yy = np.array([lab for _, lab in groups])
  pp = np.stack([np.mean(p[v], axis=0) for v in groups.values()])
  cm = metrics.confusion_matrix(yy, pp.argmax(1), num_classes)
  out = {"n_source_images": len(groups), "n_images": int(np.sum(np.asarray(y) >= 0)),
         "accuracy": metrics.accuracy(yy, pp.argmax(1)),
         "macro_f1": metrics.macro_f1(yy, pp.argmax(1), num_classes, classes=classes),
         "per_class_f1": [round(float(v), 4) for v in metrics.per_class_scores(cm)["f1"]],
         "support": cm.sum(1).tolist(), "confusion_matrix": cm.tolist()}
  if num_classes == 4:
    out["macro_f1_tt_tc_tv"] = metrics.macro_f1(yy, pp.argmax(1), classes=[0, 1, 2])
  return out


def binary_by_source_image(y, p, ids, threshold: float) -> dict:
  """Normal vs abnormal with each source image counted once: the mean abnormal probability
  `p` of its copies, AUROC and sensitivity / specificity at `threshold`."""
  groups = source_groups(ids, y)
  yg = np.array([lab for _, lab in groups])
  pg = np.array([np.mean(np.asarray(p)[v]) for v in groups.values()])
  sens, spec = metrics.sensitivity_specificity(yg, pg, threshold)
  return {"n_source_images": len(groups), "normals": int(np.sum(yg == 0)),
          "auroc": metrics.auroc(yg, pg), "sensitivity": sens, "specificity": spec}
