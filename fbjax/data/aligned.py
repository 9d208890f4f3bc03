"""Aligned heads as a data source: the classifier's input when `config.input="aligned_head"`.

    ellipses, kinds = aligned.block_ellipses(block, split, source)   # cached, see below
    src, counts = aligned.aligned_source(source, ellipses, block.align, name="fba/train")

Every example's `image` becomes `fbjax.align.aligned_head(original image,
ellipse, size=..., head_fraction=..., margin=..., pixel_aspect=...)` (uint8,
`align.size`), made on the host from the image at its original resolution;
masks are dropped (their `has_*` flags read False). The crop is drawn in one
canonical orientation (`flip=False`); the other one, 180 degrees apart, is
the crop rotated by 180 degrees, so the trainer draws it on the device
(`rot180`) and evaluation averages both (`evaluators.classification_fn`).

Where the head ellipse comes from, per example:

  "mask"       the ground-truth head mask (HC18, the phantom): `align.ellipse_from_mask`;
  "segmenter"  else the head probability of a segmentation workdir
               (`align.seg_workdir`), fitted as prediction fits it
               (`segment_post.fitted_ellipse`, the workdir's `eval_method`);
  "none"       no usable head: no mask and nothing the segmenter finds, or an
               implausible ellipse (`usable`). Such examples are left out of
               the source and counted (`head_counts["no_head"]`).

The ellipses of one (data set, config, split, examples, segmenter checkpoint)
are computed once and cached as `.npz` under the block's data_dir
(`<data_dir>/fbjax_ellipses/`), keyed by a hash of all of these and of the
example ids, so a new segmenter checkpoint or another split never reuses a
stale cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os

import numpy as np

from fbjax import align
from fbjax.biometry import Ellipse
from fbjax.data import pipeline

KINDS = ("none", "mask", "segmenter")
CACHE_FOLDER = "fbjax_ellipses"
# A segmented head shorter than this fraction of the image's longer side, or
# flatter than this minor/major ratio (heads: cephalic index 0.7-0.85), is not
# taken as a head.
MIN_MAJOR_FRACTION = 0.1
MIN_AXIS_RATIO = 0.45


def align_kwargs(align_cfg) -> dict:
  """`config.align` -> `align.aligned_head` keyword arguments (size, head_fraction, margin)."""
  return {"size": tuple(int(v) for v in align_cfg.size),
          "head_fraction": float(align_cfg.get("head_fraction", align.DEFAULT_HEAD_FRACTION)),
          "margin": float(align_cfg.get("margin", align.DEFAULT_MARGIN))}


def usable(e: Ellipse | None, image_hw: tuple[int, int]) -> bool:
  """A plausible head: finite, centre inside the image, not tiny, not a sliver."""
  if e is None:
    return False
  vals = (e.cx, e.cy, e.a, e.b, e.theta)
  if not all(map(math.isfinite, vals)) or e.b <= 0:
    return False
  h, w = image_hw
  return (0 <= e.cx < w and 0 <= e.cy < h and 2 * e.a >= MIN_MAJOR_FRACTION * max(h, w)
          and e.b / e.a >= MIN_AXIS_RATIO)


def _ident(ex) -> str:
  v = ex.get("id", "")
  return v.decode() if isinstance(v, bytes) else str(v)


# ---------------------------------------------------------------------------
# Ellipses: ground-truth masks, else a segmenter
# ---------------------------------------------------------------------------


def mask_ellipse(ex: dict) -> Ellipse | None:
  """The ellipse of the example's ground-truth head mask; None without one."""
  if not bool(ex.get("has_head_mask", False)):
    return None
  mask = pipeline.grey(ex["head_mask"])
  try:
    e = align.ellipse_from_mask(mask, name=_ident(ex))
  except ValueError as err:
    logging.warning("%s", err)
    return None
  return e if usable(e, mask.shape) else None


def segmenter_ellipses(examples: list[dict], seg_workdir: str, batch_size: int = 16) -> list:
  """Head ellipses (original pixels) of `examples` by the segmenter of `seg_workdir`."""
  from fbjax import inference, segment_eval, segment_post  # noqa: PLC0415

  model = inference.load(seg_workdir, kind="segmenter")
  predict, size = model.make_predict(), model.size
  method = model.config.get("eval_method", "robust")
  out = []
  for i in range(0, len(examples), batch_size):
    part = examples[i:i + batch_size]
    grids = [segment_eval.grid_input(ex, size) for ex in part]
    x = np.stack([g for g, _ in grids])
    pad = batch_size - len(part)
    if pad:   # one compiled shape for every batch
      x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    probs = np.asarray(predict(x))[: len(part), ..., 0]
    for ex, (_, g), p in zip(part, grids, probs, strict=True):
      e = segment_post.fitted_ellipse(p, g, method=method)
      hw = pipeline.grey(ex["image"]).shape[:2]
      out.append(e if usable(e, hw) else None)
  return out


def checkpoint_identity(seg_workdir: str) -> str:
  """The segmenter's path, latest checkpoint step and that step's modification time (a
  shipped bundle: its name, version and manifest hash)."""
  from fbjax import bundle  # noqa: PLC0415 (the data layer only names it here)

  found = bundle.resolve(seg_workdir)
  if found is not None:
    return bundle.identity(found)
  from fbjax import workdir as workdir_lib  # noqa: PLC0415 (beside the bundle's import)

  root = os.path.join(os.path.realpath(seg_workdir), workdir_lib.CHECKPOINTS)
  steps = workdir_lib.checkpoint_steps(os.path.realpath(seg_workdir))
  if not steps:
    raise FileNotFoundError(f"no checkpoint under {root}: {seg_workdir} is not a trained "
                            "segmentation workdir")
  last = os.path.join(root, str(steps[-1]))
  return f"{root}@{steps[-1]}:{os.stat(last).st_mtime_ns}"


def compute_ellipses(source, seg_workdir: str = "") -> tuple[np.ndarray, np.ndarray]:
  """(N, 5) float64 ellipses (cx, cy, a, b, theta; NaN: none) and (N,) kind indices."""
  n = len(source)
  ell = np.full((n, 5), np.nan)
  kind = np.zeros(n, np.int8)
  pending = []
  for i in range(n):
    ex = source[i]
    e = mask_ellipse(ex)
    if e is not None:
      ell[i], kind[i] = (e.cx, e.cy, e.a, e.b, e.theta), KINDS.index("mask")
    elif seg_workdir:
      pending.append(i)
  if pending:
    found = segmenter_ellipses([source[i] for i in pending], seg_workdir)
    for i, e in zip(pending, found, strict=True):
      if e is not None:
        ell[i], kind[i] = (e.cx, e.cy, e.a, e.b, e.theta), KINDS.index("segmenter")
  return ell, kind


def data_version(name: str) -> str:
  """The version of data set `name`'s builder ("" for data without one, e.g. toy)."""
  from fbjax.data import builders  # noqa: PLC0415

  return str(builders.builder_class(name).VERSION) if name in builders.available() else ""


def cache_key(block, split: str, ids: list[str], seg_workdir: str) -> str:
  """Data set and its builder's version, builder config, split, raw folder, segmenter
  checkpoint and the example ids (which say which examples a label selection kept;
  labels do not change an ellipse). Another version of a data set (e.g. the phantom's
  images redrawn under the same ids) is another key."""
  parts = {"name": block.name, "version": data_version(block.name),
           "config": block.get("config", ""), "split": split,
           "manual_dir": os.path.realpath(block.manual_dir) if block.get("manual_dir") else "",
           "segmenter": checkpoint_identity(seg_workdir) if seg_workdir else "",
           "ids": hashlib.sha1("\n".join(ids).encode()).hexdigest()}
  return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def block_ellipses(block, split: str, source, *, cache_dir: str = "") -> tuple[np.ndarray,
                                                                              np.ndarray]:
  """`compute_ellipses` of `source` (block `block`, `split`), cached as `.npz`.

  The segmenter is `block.align.seg_workdir` (empty: masks only). `cache_dir`
  defaults to `<block's data_dir>/fbjax_ellipses`.
  """
  from fbjax.data import sources  # noqa: PLC0415

  seg = block.align.get("seg_workdir", "") if "align" in block else ""
  seg = os.path.expanduser(seg) if seg else ""
  ids = [_ident(source[i]) for i in range(len(source))]
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
  ell, kind = compute_ellipses(source, seg)
  os.makedirs(cache_dir, exist_ok=True)
  tmp = f"{path}.{os.getpid()}.tmp.npz"
  np.savez(tmp, ids=np.array(ids), ellipses=ell, kinds=kind)
  os.replace(tmp, path)
  return ell, kind


# ---------------------------------------------------------------------------
# The aligned source
# ---------------------------------------------------------------------------


class AlignedHeads:
  """Random access to examples whose `image` is the aligned head (uint8, (H, W, 1)).

  `ellipses` (N, 5) per example of `source`, all usable (select them first,
  `aligned_source`). Masks and the clean image are dropped: they no longer
  match the image. `ellipse` (5,) float32 is added to the example. Crops are
  kept in memory once made (H*W bytes each: 12 KiB at 96x128), so reading the
  labels of every example (`sources.label_table`) also prepares the training data.
  """

  def __init__(self, source, ellipses: np.ndarray, align_cfg):
    self._source, self._ell = source, np.asarray(ellipses, np.float64)
    if len(self._ell) != len(source):
      raise ValueError(f"{len(source)} examples but {len(self._ell)} ellipses")
    self._kw = align_kwargs(align_cfg)
    self._crops: dict[int, np.ndarray] = {}
    self.head_counts = {"total": len(source), "no_head": 0}

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, i):
    ex = dict(self._source[i])
    crop = self._crops.get(i)
    if crop is None:
      aspect = float(ex.get("pixel_aspect", 1.0))
      crop, _ = align.aligned_head(pipeline.grey(ex["image"]),
                                   Ellipse(*(float(v) for v in self._ell[i])), flip=False,
                                   pixel_aspect=aspect if math.isfinite(aspect) else 1.0,
                                   **self._kw)
      crop = crop[..., None]
      crop.setflags(write=False)
      self._crops[i] = crop
    ex["image"] = crop
    for k in list(ex):
      if k.startswith("has_"):
        ex[k] = False
    ex["ellipse"] = self._ell[i].astype(np.float32)
    return ex

  def __repr__(self) -> str:
    return f"AlignedHeads({self._source!r}, {self._kw})"


def aligned_source(source, ellipses: np.ndarray, align_cfg, *, kinds=None, name: str = ""):
  """The examples of `source` with a usable head as `AlignedHeads`, and the counts.

  counts: {"total", "no_head"} and, with `kinds`, the number per ellipse kind
  ("mask", "segmenter"); also kept as the source's `head_counts`. An error (naming
  `name`) when no example has a head.
  """
  from fbjax.data import sources  # noqa: PLC0415

  ellipses = np.asarray(ellipses, np.float64)
  ok = np.all(np.isfinite(ellipses), axis=1)
  counts = {"total": len(source), "no_head": int((~ok).sum())}
  if kinds is not None:
    counts.update({k: int(np.sum(np.asarray(kinds) == i)) for i, k in enumerate(KINDS) if i})
  if not ok.any():
    raise ValueError(f"{name or repr(source)}: no example has a usable head ellipse "
                     f"({len(source)} examples); set config.align.seg_workdir to a "
                     "segmentation workdir for data without head masks")
  keep = np.nonzero(ok)[0]
  src = source if ok.all() else sources.Subset(source, keep)
  out = AlignedHeads(src, ellipses[keep], align_cfg)
  out.head_counts = counts
  return out, counts
