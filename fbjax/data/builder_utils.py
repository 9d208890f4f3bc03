"""Helpers shared by the real-data tfds builders in `datasets/`.

- `find_manual_dir`: the folder holding a data set's manually downloaded
  files. `--manual_dir` may point at the data set's own folder or at a
  parent holding `<name>/` (e.g. one folder with `hc18/`,
  `fetal_planes_db/`, ...). Missing files stop the build with an error that
  names every expected path. The folder is only read, never written.
- `DataError`: one error listing every problem found in the manual files
  (missing images, rows without images, bad values), each naming its file.
- Group-disjoint splits that depend only on the group names and a seed:
  `carve_groups` (a fixed fraction of groups, ranked by a salted hash) and
  `stratified_group_split` (per class, so that every class with enough
  groups reaches every split).
- `ordered_map`: maps a function over items with a thread pool, in order
  and with a bounded number in flight (OpenCV releases the GIL, so image
  decoding and PNG encoding run in parallel).
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import os
import pathlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
from absl import logging

from fbjax.data import io

# Name of the metadata entry in which builders record the manual folder they read.
MANUAL_DIR_KEY = "manual_dir"


class DataError(ValueError):
  """Problems in a data set's manual files; the message lists each one."""

  def __init__(self, name: str, problems: Sequence[str], hint: str = ""):
    self.problems = list(problems)
    lines = [f"{name}: {len(self.problems)} problem(s) in the manual files:"]
    lines += [f"  - {p}" for p in self.problems[:200]]
    if len(self.problems) > 200:
      lines.append(f"  ... and {len(self.problems) - 200} more")
    if hint:
      lines.append(hint)
    super().__init__("\n".join(lines))


def requested_manual_dir(dl_manager) -> pathlib.Path:
  # `dl_manager.manual_dir` raises a generic AssertionError when the folder is
  # missing or empty; read the configured path to give a per-file message.
  base = getattr(dl_manager, "_manual_dir", None)
  if base is None:
    base = dl_manager.manual_dir
  return pathlib.Path(os.fspath(base))


def find_manual_dir(dl_manager_or_path, name: str, expected: Sequence[str],
                    instructions: str = "") -> pathlib.Path:
  """Returns the folder holding every path in `expected` (relative paths).

  Tries `<manual_dir>/<name>` first, then `<manual_dir>` itself. Raises
  `FileNotFoundError` naming each expected path that is missing.
  """
  if isinstance(dl_manager_or_path, (str, os.PathLike)):
    base = pathlib.Path(dl_manager_or_path)
  else:
    base = requested_manual_dir(dl_manager_or_path)
  candidates = [base / name, base]
  for c in candidates:
    if all((c / e).exists() for e in expected):
      return c
  where = candidates[0] if candidates[0].is_dir() else candidates[1]
  missing = [str(where / e) for e in expected if not (where / e).exists()]
  msg = [f"{name}: manual files not found (looked in {candidates[0]} and {candidates[1]}).",
         f"Missing under {where}:"]
  msg += [f"  - {m}" for m in missing]
  if instructions:
    msg.append("How to get them:\n" + instructions.strip())
  raise FileNotFoundError("\n".join(msg))


def log_skipped(name: str, what: str, items: Sequence[str]) -> None:
  """Logs a documented skip: the count and the full list."""
  if items:
    logging.warning("%s: skipped %d %s:\n  %s", name, len(items), what,
                    "\n  ".join(items))


def read_grey_uint8(path: pathlib.Path) -> np.ndarray:
  """Reads an image file as uint8 grey HxW (exact for grey stored as RGB).

  Raises `io.ImageReadError` naming the file when it is missing or corrupt.
  """
  grey = io.to_grey(io.decode_image(io.read_bytes(path), path))
  if grey.dtype != np.uint8:
    grey = io.float_to_uint8(grey.astype(np.float32) / np.float32(65535.0))
  return grey


# ---------------------------------------------------------------------------
# Group-disjoint splits

def hash_unit(key: str, seed: int) -> float:
  """A uniform number in [0, 1) from (seed, key), stable across runs and machines."""
  h = hashlib.sha256(f"{seed}:{key}".encode()).digest()
  return int.from_bytes(h[:8], "big") / 2.0**64


def carve_groups(groups: Iterable[str], fraction: float, seed: int) -> set[str]:
  """The `round(fraction * n)` groups with the smallest salted hash.

  A group's rank depends only on its name and the seed, so a group keeps its
  split when the same data set is built from a superset or subset of files
  (up to the boundary shift of the exact count).
  """
  uniq = sorted(set(groups))
  k = round(fraction * len(uniq))
  ranked = sorted(uniq, key=lambda g: (hash_unit(g, seed), g))
  return set(ranked[:k])


def stratified_group_split(group_classes: Mapping[str, Iterable[str]],
                           fractions: Mapping[str, float], seed: int,
                           default: str = "train", min_groups: int = 3,
                           fixed: Mapping[str, str] | None = None) -> dict[str, str]:
  """Assigns every group to one split, stratified by class.

  Args:
    group_classes: group -> the classes of its files (a group may carry two
      classes when the same source image was uploaded under two labels).
    fractions: the held-out splits and their share of each class's groups,
      e.g. {"validation": 0.15, "test": 0.15}; the rest goes to `default`.
    min_groups: a class with fewer groups goes wholly to `default` (beyond
      groups already placed through another class); a class with at least
      this many gets at least one group in every held-out split.
    fixed: groups whose split is decided elsewhere (e.g. patients shared with
      another data set); they keep it and count towards their classes' quotas.

  Classes are processed from the rarest (fewest groups) up, and within a
  class groups are taken in salted-hash order, so the result depends only on
  the group names, their classes and the seed. Groups already placed through
  a rarer class count towards a class's quota.
  """
  by_class: dict[str, list[str]] = collections.defaultdict(list)
  for g, classes in group_classes.items():
    for c in set(classes):
      by_class[c].append(g)
  assign: dict[str, str] = dict(fixed or {})
  order = sorted(by_class, key=lambda c: (len(by_class[c]), c))
  for c in order:
    gs = sorted(by_class[c], key=lambda g: (hash_unit(g, seed), g))
    n = len(gs)
    if n < min_groups:
      continue
    for split, frac in fractions.items():
      want = max(1, round(frac * n))
      have = sum(1 for g in gs if assign.get(g) == split)
      for g in gs:
        if have >= want:
          break
        if g not in assign:
          # Keep at least one group of the class for `default`.
          left = sum(1 for h in gs if h not in assign)
          if left <= 1 and not any(assign.get(h) == default for h in gs):
            break
          assign[g] = split
          have += 1
  for g in group_classes:
    assign.setdefault(g, default)
  return assign


# ---------------------------------------------------------------------------
# Parallel, ordered, bounded map

def default_threads() -> int:
  return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                    else (os.cpu_count() or 1)))


def ordered_map(fn: Callable, items: Iterable, threads: int | None = None,
                window: int | None = None) -> Iterator:
  """`map(fn, items)` on a thread pool, in order, at most `window` in flight."""
  threads = threads or default_threads()
  if threads <= 1:
    yield from map(fn, items)
    return
  window = window or 4 * threads
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    pending: collections.deque = collections.deque()
    for item in items:
      pending.append(pool.submit(fn, item))
      if len(pending) >= window:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()
