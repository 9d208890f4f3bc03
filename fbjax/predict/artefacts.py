"""What a trained workdir (or the shipped bundle) must hold for prediction, checked
before any image is read: the abnormal threshold, the temperatures, the classifier's input
and the segmenter its crops were cut behind.
"""

from __future__ import annotations

import logging
import math
import os
import pathlib

from fbjax.core import bundle as bundle_lib
from fbjax.core import schema
from fbjax.core import workdir as workdir_lib
from fbjax.evaluation import anomaly as anomaly_lib
from fbjax.evaluation import heads as heads_lib
from fbjax.geometry import align as align_lib

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
