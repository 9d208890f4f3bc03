"""The threaded pipeline: files read and decoded in a pool while the device runs the
previous batch; rows (or error rows) yielded in input order.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import math
import os
import pathlib
from collections.abc import Callable, Iterable

from fbjax.data import io
from fbjax.predict import files
from fbjax.predict import inputs as inputs_lib
from fbjax.predict.engine import Predictor, Prepared


def _failed(path: str, reason: str):
  raise io.ImageReadError(path, reason)


def iterate(predictor: Predictor, paths: Iterable, *, workers: int = 2,
            spacing: Callable[[pathlib.Path], float] = lambda p: math.nan,
            overlay_dir: pathlib.Path | None = None, num_overlays: int = -1,
            progress=None):
  """Yields ("row", dict) or ("error", dict) per file, in input order.

  `paths` are paths or `fbjax.predict.inputs.Entry`s (an "error" entry becomes an
  error row). Decoding runs `2 * batch_size` files ahead in a thread pool; a
  batch goes to the device as soon as it is complete, and its post-processing
  (ellipse fit, overlay) is handed to the same pool, so reading, the networks
  and the post-processing overlap. Overlays are written for the first
  `num_overlays` images (-1: all).
  """
  bs = predictor.batch_size
  results: dict[int, tuple | None] = {}   # input index -> None (in the open batch) or result
  batch: list[tuple[int, Prepared]] = []
  n_overlays = 0
  with cf.ThreadPoolExecutor(max(1, workers)) as pool:
    reads: collections.deque = collections.deque()
    todo = iter(enumerate(paths))

    def refill():
      while len(reads) < 2 * bs:
        nxt = next(todo, None)
        if nxt is None:
          return
        idx, e = nxt
        if not isinstance(e, inputs_lib.Entry):
          e = inputs_lib.Entry(os.fspath(e), os.fspath(e), "image")
        fn = (predictor.prepare, e.path) if e.kind == "image" else (_failed, e.path, e.reason)
        reads.append((idx, e.path, pool.submit(*fn)))

    def flush():
      nonlocal n_overlays
      if not batch:
        return
      out = predictor.infer([p for _, p in batch], pool)
      for i, (idx, item) in enumerate(batch):
        opath = None
        if overlay_dir is not None and (num_overlays < 0 or n_overlays < num_overlays):
          opath = overlay_dir / files.overlay_name(str(item.path))
          n_overlays += 1
        results[idx] = ("row", pool.submit(predictor.finish, item, out, i,
                                           spacing(item.path), opath))
      batch.clear()

    next_out = 0

    def ready():
      nonlocal next_out
      while next_out in results and results[next_out] is not None:
        kind, payload = results.pop(next_out)
        next_out += 1
        if progress is not None:
          progress.update(1)
        yield kind, (payload.result() if kind == "row" else payload)

    refill()
    while reads:
      idx, path, fut = reads.popleft()
      refill()
      try:
        item = fut.result()
        results[idx] = None
        batch.append((idx, item))
      except io.ImageReadError as e:
        results[idx] = ("error", {"file": str(path), "reason": e.reason})
      except Exception as e:  # noqa: BLE001 (one bad file must not stop the run)
        results[idx] = ("error", {"file": str(path), "reason": f"{type(e).__name__}: {e}"})
      if len(batch) == bs:
        flush()
      yield from ready()
    flush()
    yield from ready()
