"""The files of a prediction run: append-only CSVs that survive a kill, and their merge.

A run appends its rows batch by batch (`Appender.append`: one `write` of
complete lines, flushed and fsync'ed), so a killed run leaves whole rows
behind; on reopening, a partial last line (a write cut by SIGKILL) is cut
off. `done_hashes` gives the files that already have a row or an error row,
as a sorted array of 64-bit hashes (8 bytes per file, no Python object per
file), so a rerun predicts only the rest.

`collect` streams CSVs back (one or several shards) into what the summary
and the report need: the numeric columns as arrays, counts, and the rows of
the most abnormal and least certain images (a bounded heap each).
"""

from __future__ import annotations

import array
import collections
import csv
import heapq
import io as _io
import json
import math
import os
import pathlib
import re
from collections.abc import Iterable, Sequence

import numpy as np

from fbjax.predict import inputs

NUMERIC = ("width", "height", "pixel_spacing_mm", "plane_prob", "abnormal_prob", "abnormal",
           "condition_prob", "anomaly_score", "anomaly", "anomaly_recon_error", "hc_mm",
           "bpd_mm", "ofd_mm", "hc_px", "bpd_px", "ofd_px", "head_area_fraction",
           "ellipse_dice", "uncertainty")
INTEGER = ("width", "height", "abnormal", "anomaly")


def overlay_name(file: str) -> str:
  """The overlay PNG's name of an input file: readable, and unique across shards and reruns."""
  stem = pathlib.PurePath(file).stem
  base = re.sub(r"[^A-Za-z0-9._-]", "_", stem)[:80] or "image"
  return f"{base}-{inputs.file_hash(file) & 0xFFFFFFFF:08x}.png"


def _fmt(v):
  if isinstance(v, float):
    return "" if not math.isfinite(v) else f"{v:.6g}"
  return v


class Appender:
  """A CSV that rows are appended to in whole batches (and that a rerun continues)."""

  def __init__(self, path: str | os.PathLike, columns: Sequence[str]):
    self.path = pathlib.Path(path)
    self.columns = list(columns)
    header = ",".join(self.columns) + "\n"
    if self.path.exists() and self.path.stat().st_size:
      with open(self.path, "rb+") as f:
        first = f.readline().decode("utf-8", "surrogateescape")
        if first != header:
          raise ValueError(f"{self.path}: has the columns {first.strip()!r}, expected "
                           f"{header.strip()!r} (written by another version?): move it away "
                           "or give another --out")
        _cut_partial_line(f)
    else:
      self.path.write_text(header, encoding="utf-8")

  def append(self, rows: Iterable[dict]) -> int:
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n")
    n = 0
    for r in rows:
      w.writerow({k: _fmt(r.get(k, "")) for k in self.columns})
      n += 1
    if n:
      data = buf.getvalue().encode("utf-8", "surrogateescape")
      fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
      try:
        view = memoryview(data)
        while view:
          view = view[os.write(fd, view):]
        os.fsync(fd)
      finally:
        os.close(fd)
    return n


def _cut_partial_line(f) -> None:
  """Truncates a file opened rb+ after its last newline (a write cut short by a kill)."""
  size = f.seek(0, os.SEEK_END)
  pos = size
  while pos > 0:
    step = min(65536, pos)
    f.seek(pos - step)
    chunk = f.read(step)
    k = chunk.rfind(b"\n")
    if k >= 0:
      end = pos - step + k + 1
      if end != size:
        f.truncate(end)
      return
    pos -= step
  f.truncate(0)


def read_rows(path: str | os.PathLike) -> Iterable[dict]:
  """Rows of one of the run's CSVs, streamed (nothing if it does not exist)."""
  path = pathlib.Path(path)
  if not path.exists():
    return
  with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
    yield from csv.DictReader(f)


def done_hashes(paths: Sequence[str | os.PathLike]) -> np.ndarray:
  """Sorted int64 hashes of the `file` column of the given CSVs."""
  acc = np.empty(1024, np.int64)
  n = 0
  for p in paths:
    for r in read_rows(p):
      if n == acc.size:
        acc = np.resize(acc, 2 * acc.size)
      acc[n] = inputs.file_hash(r["file"])
      n += 1
  return np.sort(acc[:n])


def is_done(done: np.ndarray, file: str) -> bool:
  if not done.size:
    return False
  h = inputs.file_hash(file)
  i = int(np.searchsorted(done, h))
  return i < done.size and done[i] == h


def write_atomic(path: pathlib.Path, text: str) -> None:
  """Writes through a per-process temporary file and a rename (two merging shards may race)."""
  tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
  tmp.write_text(text, encoding="utf-8", errors="surrogateescape")
  os.replace(tmp, path)


def parse_row(r: dict) -> dict:
  out = dict(r)
  for k in NUMERIC:
    v = r.get(k, "")
    if v in ("", None):
      out[k] = math.nan
    else:
      out[k] = int(float(v)) if k in INTEGER else float(v)
  return out


class _Top:
  """The `n` rows of largest `key` (ties: the earlier file name first)."""

  def __init__(self, key: str, n: int):
    self.key, self.n, self.heap, self._count = key, n, [], 0

  def push(self, r: dict) -> None:
    v = r.get(self.key, math.nan)
    if self.n <= 0 or not math.isfinite(v):
      return
    # The running count breaks the remaining ties (the same file twice): rows never compare.
    self._count += 1
    item = (v, _Rev(r["file"]), -self._count, r)
    if len(self.heap) < self.n:
      heapq.heappush(self.heap, item)
    elif item[:2] > self.heap[0][:2]:
      heapq.heapreplace(self.heap, item)

  def rows(self) -> list[dict]:
    return [r for *_, r in sorted(self.heap, key=lambda t: t[:2], reverse=True)]


class _Rev(str):
  """A string that orders in reverse (so that ties keep the earlier name)."""

  def __lt__(self, other):
    return str.__gt__(self, other)

  def __gt__(self, other):
    return str.__lt__(self, other)


class Collected:
  """What the summary and the report need from a run's CSVs, gathered in one streamed pass."""

  def __init__(self, num_images: int):
    # array("d"): 8 bytes per image, no Python object per file (10^6 files: 40 MB).
    self.values = {k: array.array("d") for k in ("abnormal_prob", "anomaly_score", "hc_mm",
                                                 "hc_px", "uncertainty")}
    self.counts = {k: collections.Counter() for k in ("plane", "condition", "seg_quality")}
    self.flagged = {"abnormal": 0, "anomaly": 0}
    self.has_flag = {"abnormal": False, "anomaly": False}
    self.predicted = 0
    self.errors = 0
    self.error_reasons: collections.Counter = collections.Counter()
    self.first_errors: list[dict] = []
    self.skipped = 0
    self.skipped_reasons: collections.Counter = collections.Counter()
    self.most_abnormal = {k: _Top(k, num_images) for k in ("abnormal_prob", "anomaly_score")}
    self.least_certain = _Top("uncertainty", num_images)

  def add_row(self, r: dict) -> None:
    self.predicted += 1
    for k, v in self.values.items():
      x = r.get(k, math.nan)
      if math.isfinite(x):
        v.append(x)
    for k, c in self.counts.items():
      if r.get(k):
        c[r[k]] += 1
    for k in self.flagged:
      x = r.get(k, math.nan)
      if isinstance(x, int):
        self.has_flag[k] = True
        self.flagged[k] += x
    for t in self.most_abnormal.values():
      t.push(r)
    self.least_certain.push(r)

  def add_error(self, e: dict, keep: int = 50) -> None:
    self.errors += 1
    self.error_reasons[e["reason"].split(":")[0].split(" (")[0]] += 1
    if len(self.first_errors) < keep:
      self.first_errors.append(e)

  def add_skipped(self, s: dict) -> None:
    self.skipped += 1
    self.skipped_reasons[s["reason"].split(" (")[0]] += 1

  def array(self, key: str) -> np.ndarray:
    return np.frombuffer(self.values[key], np.float64) if key in self.values else np.zeros(0)

  def top_abnormal(self) -> tuple[str, list[dict]]:
    """(the key ranked by, its rows): the abnormal probability, else the anomaly score."""
    key = "abnormal_prob" if self.values["abnormal_prob"] else "anomaly_score"
    return key, self.most_abnormal[key].rows()


def collect(folders: Sequence[pathlib.Path], num_images: int = 12) -> Collected:
  """Streams predictions.csv, errors.csv and skipped.csv of one or several run folders."""
  c = Collected(num_images)
  for d in folders:
    for r in read_rows(d / "predictions.csv"):
      c.add_row(parse_row(r))
    for e in read_rows(d / "errors.csv"):
      c.add_error(e)
    for s in read_rows(d / "skipped.csv"):
      c.add_skipped(s)
  return c


def summarize(c: Collected) -> dict:
  s: dict = {"images": c.predicted + c.errors, "predicted": c.predicted, "errors": c.errors,
             "skipped": c.skipped}
  if c.errors:
    s["error_reasons"] = dict(c.error_reasons.most_common())
  if c.skipped:
    s["skipped_reasons"] = dict(c.skipped_reasons.most_common())
  for k, cnt in c.counts.items():
    if cnt:
      s[f"{k}_counts"] = dict(cnt.most_common())
  for k in ("abnormal", "anomaly"):
    if c.has_flag[k]:
      s[f"{k}_flagged"] = int(c.flagged[k])
  for k in c.values:
    v = c.array(k)
    if v.size:
      s[f"{k}_quantiles"] = {q: float(np.quantile(v, float(q))) for q in
                             ("0.05", "0.25", "0.5", "0.75", "0.95")}
  return s


def read_json(path: pathlib.Path, default=None):
  return json.loads(path.read_text()) if path.exists() else default


def shard_folder(out: pathlib.Path, num_shards: int, shard_index: int) -> pathlib.Path:
  """Where one shard's CSVs go: `out` itself for one shard, else out/shards/IIIII-of-NNNNN."""
  if num_shards == 1:
    return out
  return out / "shards" / f"{shard_index:05d}-of-{num_shards:05d}"
