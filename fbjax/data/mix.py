"""Combining random-access sources: a subset of one (`Subset`), several mixed in fixed
proportions (`MixSource`, e.g. phantom + HC18).

    source = mix.MixSource([hc18_train, phantom_train], weights=[0.5, 0.5])

The mixture is itself random access (`len`, `getitem`), so the grain pipeline
shuffles, shards and checkpoints it like any single source. One "epoch" of
the mixture covers the largest source once in its share (the weights say
which fraction of the epoch comes from each source); the others repeat
(index modulo their length). With an explicit, shorter `length` a source
is subsampled evenly (every n/count-th example).
Indices map deterministically: source k owns a contiguous block of indices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class Subset:
  """Random access to `source[indices[i]]`."""

  def __init__(self, source, indices):
    self._source, self.indices = source, np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return int(self.indices.size)

  def __getitem__(self, i):
    return self._source[int(self.indices[i])]

  def __repr__(self) -> str:
    return f"Subset({len(self)} of {self._source!r})"


class MixSource:
  """Random access over several sources in the proportions of `weights`."""

  def __init__(self, sources: Sequence, weights: Sequence[float] | None = None,
               length: int | None = None):
    if not sources:
      raise ValueError("MixSource needs at least one source")
    w = np.ones(len(sources)) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (len(sources),) or np.any(w < 0) or w.sum() <= 0:
      raise ValueError(f"weights {list(w)} must be >= 0, one per source, not all zero")
    w = w / w.sum()
    for i, s in enumerate(sources):
      if w[i] > 0 and len(s) == 0:
        raise ValueError(f"source {i} is empty but has weight {w[i]:.3f}")
    self.sources = [s for s, wi in zip(sources, w, strict=True) if wi > 0]
    self.weights = w[w > 0]
    if length is None:
      # Every source is seen once per epoch at least in its share.
      length = int(max(len(s) / wi for s, wi in zip(self.sources, self.weights, strict=True)))
    counts = np.floor(self.weights * length).astype(int)
    counts[np.argmax(self.weights)] += length - counts.sum()
    self.counts = counts
    self._starts = np.concatenate([[0], np.cumsum(counts)])

  def __len__(self) -> int:
    return int(self._starts[-1])

  def locate(self, i: int) -> tuple[int, int]:
    """(source number, index in that source) of mixture index `i`."""
    if not 0 <= i < len(self):
      raise IndexError(f"index {i} out of range for a mixture of {len(self)}")
    k = int(np.searchsorted(self._starts, i, side="right") - 1)
    local, n, c = int(i - self._starts[k]), len(self.sources[k]), int(self.counts[k])
    return k, (local * n) // c if c < n else local % n

  def __getitem__(self, i):
    k, j = self.locate(int(i))
    return self.sources[k][j]

  def __repr__(self) -> str:
    parts = ", ".join(f"{len(s)} x {c}" for s, c in zip(self.sources, self.counts, strict=True))
    return f"MixSource({parts})"
