"""Aligned heads as a data source: the classifier's input when `config.input.kind` is
"aligned_head".

    ellipses, kinds = head_tables.table(block, split, source, config.input)   # the head step
    src, counts = aligned.aligned_source(source, ellipses, config.input, name="fba/train")

The data layer only cuts crops: which examples hold a usable head, and where,
is decided by `fbjax.evaluation.heads` (its one rule, which prediction applies to an image
without a head mask)
and handed in as a table of ellipses (N, 5: cx, cy, a, b, theta in original
pixels; NaN rows: no head) with their `KINDS` (the ground-truth mask, a
segmenter, none). `sources.block_source(..., head_table=head_tables.table)` is how
the trainers and evaluators pass it.

Every example's `image` becomes `fbjax.geometry.align.head_crop(original image,
ellipse, size=..., head_fraction=..., margin=..., pixel_aspect=...)` (uint8,
`input.size`), made on the host from the image at its original resolution;
masks are dropped (their `has_*` flags read False). The crop is drawn in one
canonical orientation (`flip=False`); the other one, 180 degrees apart, is
the crop rotated by 180 degrees, so the trainer draws it on the device
(`rot180`) and evaluation averages both (`evaluators.classification_fn`).
Examples without a head are left out of the source and counted
(`head_counts["no_head"]`).
"""

from __future__ import annotations

import numpy as np

from fbjax.data import mix, pipeline
from fbjax.geometry import align
from fbjax.geometry.ellipse_fit import Ellipse

# Where a table's head came from (`fbjax.evaluation.head_tables.table`'s kinds), and where
# tables are cached.
KINDS = ("none", "mask", "segmenter")
CACHE_FOLDER = "fbjax_ellipses"


def align_kwargs(align_cfg) -> dict:
  """`config.input` (kind "aligned_head") -> `align.aligned_head` keyword arguments (size,
  head_fraction, margin)."""
  return {"size": tuple(int(v) for v in align_cfg.size),
          "head_fraction": float(align_cfg.get("head_fraction", align.DEFAULT_HEAD_FRACTION)),
          "margin": float(align_cfg.get("margin", align.DEFAULT_MARGIN))}


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
      crop = align.head_crop(pipeline.grey(ex["image"]),
                             Ellipse(*(float(v) for v in self._ell[i])),
                             pixel_aspect=float(ex.get("pixel_aspect", 1.0)), **self._kw)
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
  ellipses = np.asarray(ellipses, np.float64)
  ok = np.all(np.isfinite(ellipses), axis=1)
  counts = {"total": len(source), "no_head": int((~ok).sum())}
  if kinds is not None:
    counts.update({k: int(np.sum(np.asarray(kinds) == i)) for i, k in enumerate(KINDS) if i})
  if not ok.any():
    raise ValueError(f"{name or repr(source)}: no example has a usable head ellipse "
                     f"({len(source)} examples); set config.input.seg_workdir to a "
                     "segmentation workdir for data without head masks")
  keep = np.nonzero(ok)[0]
  src = source if ok.all() else mix.Subset(source, keep)
  out = AlignedHeads(src, ellipses[keep], align_cfg)
  out.head_counts = counts
  return out, counts
