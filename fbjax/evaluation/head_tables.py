"""The head table of a data split: the head step (`fbjax.evaluation.heads`) applied to every
example once, from its ground-truth mask or a segmenter, cached under the data dir by the
rule, the segmenter's checkpoint and the data's version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os

import numpy as np

from fbjax.core import bundle
from fbjax.core import workdir as workdir_lib
from fbjax.data import builders, sources
from fbjax.data.aligned import CACHE_FOLDER, KINDS
from fbjax.evaluation import heads
from fbjax.geometry import head_gate


def example_id(ex) -> str:
  """An example's id as text."""
  v = ex.get("id", "")
  return v.decode() if isinstance(v, bytes) else str(v)


def _spacing(ex) -> float:
  return float(np.asarray(ex.get("pixel_spacing_mm", math.nan)))


def example_head(ex: dict) -> heads.Head | None:
  """The head of an example's ground-truth mask (`from_mask`); None without one."""
  if not bool(ex.get("has_head_mask", False)):
    return None
  return heads.from_mask(ex["head_mask"], name=example_id(ex))


def compute_table(source, seg_workdir: str = "", *, segmenter: heads.Segmenter | None = None,
                  batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
  """(N, 5) float64 ellipses (cx, cy, a, b, theta; NaN: no head) and (N,) `KINDS` indices
  of `source`: each example's ground-truth mask where it gives a head, else the segmenter
  of `seg_workdir` (or `segmenter`), both by this module's rule."""
  n = len(source)
  ell = np.full((n, 5), np.nan)
  kind = np.zeros(n, np.int8)
  pending = []
  for i in range(n):
    ex = source[i]
    h = example_head(ex)
    if h is not None and h.found:
      e = h.ellipse
      ell[i], kind[i] = (e.cx, e.cy, e.a, e.b, e.theta), KINDS.index("mask")
    elif seg_workdir or segmenter is not None:
      pending.append(i)
    elif h is not None:
      logging.warning("%s: head mask without a usable head (%s)", example_id(ex), h.reason)
  seg = (segmenter or heads.load_segmenter(seg_workdir)) if pending else None
  for start in range(0, len(pending), batch_size):   # decoded one batch at a time
    part = pending[start:start + batch_size]
    exs = [source[i] for i in part]
    found = heads.judge_images([ex["image"] for ex in exs], seg,
                         spacings=[_spacing(ex) for ex in exs], batch_size=batch_size)
    for i, h in zip(part, found, strict=True):
      if h.found:
        e = h.ellipse
        ell[i], kind[i] = (e.cx, e.cy, e.a, e.b, e.theta), KINDS.index("segmenter")
  return ell, kind


def checkpoint_identity(seg_workdir: str) -> str:
  """The segmenter's path, latest checkpoint step, that step's modification time and a hash
  of its config.json (a shipped bundle: its name, version and manifest hash)."""

  found = bundle.resolve(seg_workdir)
  if found is not None:
    return bundle.identity(found)
  root = os.path.join(os.path.realpath(seg_workdir), workdir_lib.CHECKPOINTS)
  steps = workdir_lib.checkpoint_steps(os.path.realpath(seg_workdir))
  if not steps:
    raise FileNotFoundError(f"no checkpoint under {root}: {seg_workdir} is not a trained "
                            "segmentation workdir")
  last = os.path.join(root, str(steps[-1]))
  # The settings its heads are found with (eval_method, eval_flip, stages) are in config.json.
  cfg = workdir_lib.path(os.path.realpath(seg_workdir), workdir_lib.CONFIG)
  record = hashlib.sha1(cfg.read_bytes()).hexdigest()[:12] if cfg.exists() else ""
  return f"{root}@{steps[-1]}:{os.stat(last).st_mtime_ns}:{record}"


def data_version(name: str) -> str:
  """The version of data set `name`'s builder ("" for data without one, e.g. toy)."""

  return str(builders.builder_class(name).VERSION) if name in builders.available() else ""


def rule() -> dict:
  """What the verdict depends on besides the segmenter: the rule's version and constants."""
  return {"version": heads.RULE_VERSION, "gate": dict(head_gate.THRESHOLDS),
          "hc_mm_range": list(head_gate.HC_MM_RANGE), "min_major": heads.MIN_MAJOR_FRACTION,
          "min_axis_ratio": heads.MIN_AXIS_RATIO, "cut": heads.CUT_FRACTION,
          "poor_fit": heads.POOR_FIT_DICE}


def cache_key(block, split: str, ids: list[str], seg_workdir: str) -> str:
  """Data set and its builder's version, builder config, split, raw folder, segmenter
  checkpoint, this module's rule and the example ids (which say which examples a label
  selection kept; labels do not change an ellipse). Another version of a data set (e.g.
  the phantom's images redrawn under the same ids) is another key."""
  parts = {"name": block.name, "version": data_version(block.name),
           "config": block.get("config", ""), "split": split,
           "manual_dir": os.path.realpath(os.path.expanduser(block.manual_dir))
                         if block.get("manual_dir") else "",
           "segmenter": checkpoint_identity(seg_workdir) if seg_workdir else "",
           "rule": rule(),
           "ids": hashlib.sha1("\n".join(ids).encode()).hexdigest()}
  return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def table(block, split: str, source, model_input=None, *,
          cache_dir: str = "") -> tuple[np.ndarray, np.ndarray]:
  """`compute_table` of `source` (config block `block`, `split`), cached as `.npz`.

  The segmenter is the aligned input's `seg_workdir` (`model_input`, the model's
  `config.input`; empty or no input: masks only). `cache_dir`
  defaults to `<block's data_dir>/fbjax_ellipses`; the key (`cache_key`) holds the
  data, the segmenter's checkpoint and config, and the rule (`rule()`; a change to the
  fit or the gate's features themselves bumps `RULE_VERSION`), so a new segmenter
  checkpoint, another split or another rule never reuses a stale table.
  """

  seg = (model_input or {}).get("seg_workdir", "") or ""
  seg = os.path.expanduser(seg) if seg else ""
  ids = [example_id(source[i]) for i in range(len(source))]
  if not cache_dir:
    cache_dir = os.path.join(sources.data_block(block).get("data_dir") or
                             sources.default_data_dir(), CACHE_FOLDER)
  cfg = str(block.get("config", "") or "").replace("/", "_")
  path = os.path.join(cache_dir, f"{block.name}_{cfg}_{split}_{cache_key(block, split, ids, seg)}"
                                 ".npz")
  if os.path.exists(path):
    with np.load(path) as z:
      if list(z["ids"]) == ids:
        return z["ellipses"], z["kinds"]
    logging.warning("%s does not match the source's examples: recomputed", path)
  ell, kind = compute_table(source, seg)
  os.makedirs(cache_dir, exist_ok=True)
  tmp = f"{path}.{os.getpid()}.tmp.npz"
  np.savez(tmp, ids=np.array(ids), ellipses=ell, kinds=kind)
  os.replace(tmp, path)
  return ell, kind
