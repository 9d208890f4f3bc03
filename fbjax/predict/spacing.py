"""The pixel spacing of each input: a spacing CSV (its columns found by name), or one
value for every image.
"""

from __future__ import annotations

import collections
import csv
import logging
import math
import os
import pathlib
from collections.abc import Sequence

# Spacing column names that mean "mm per pixel" (lower case, spaces/underscores ignored).
_SPACING_WORDS = ("pixelsize", "pixelspacing", "spacing", "mmperpixel", "mmperpx", "mm/px",
                  "mm/pixel", "resolution")


_FILE_WORDS = ("filename", "file", "image", "imagename", "name", "path")


def _norm(h: str) -> str:
  return "".join(c for c in h.strip().lower() if c not in " _-")


def find_column(header: Sequence[str], path, *, explicit: str | None, what: str,
                exact: Sequence[str], contains: Sequence[str] = (),
                flag: str = "") -> int:
  """Index of the column named `explicit`, else of the one column that clearly is `what`.

  Exact (normalised) names win; else names containing one of `contains`.
  Zero or several candidates: a ValueError naming the file and listing the columns.
  """
  cols = [h.strip() for h in header]
  hint = f" (name it with {flag})" if flag else ""
  if explicit is not None:
    if explicit.strip() not in cols:
      raise ValueError(f"{path}: no column {explicit!r}; the columns are {cols}")
    return cols.index(explicit.strip())
  norm = [_norm(h) for h in cols]
  for words in (exact, contains):
    hits = [i for i, h in enumerate(norm) if any(
        (h == w if words is exact else w in h) for w in words)]
    if len(hits) == 1:
      return hits[0]
    if len(hits) > 1:
      raise ValueError(f"{path}: {len(hits)} columns could be the {what} "
                       f"({[cols[i] for i in hits]}); the columns are {cols}{hint}")
  raise ValueError(f"{path}: no {what} column; the columns are {cols}{hint}")


def read_spacing_csv(path: str | os.PathLike, column: str | None = None,
                     file_column: str | None = None) -> dict[str, float]:
  """{file name: mm per pixel} from a CSV with a file column and a spacing column.

  `column` names the spacing column; without it the column is found only
  when exactly one name says "pixel size" / "spacing" / "mm per pixel" (HC18's
  `pixel size(mm)` does; `hc_mm` does not), else a ValueError lists the
  columns. Keys are the names as written, their base names and their stems.
  """
  path = pathlib.Path(os.path.expanduser(os.fspath(path)))
  with open(path, newline="", encoding="utf-8-sig") as f:
    rows = list(csv.reader(f))
  if not rows:
    raise ValueError(f"{path}: empty spacing CSV")
  fcol = find_column(rows[0], path, explicit=file_column, what="file name",
                     exact=_FILE_WORDS, contains=("file", "image"))
  scol = find_column(rows[0], path, explicit=column, what="pixel spacing (mm)",
                     exact=("pixelsize(mm)", "pixelspacingmm", "pixelsizemm", "spacingmm"),
                     contains=_SPACING_WORDS, flag="--spacing_column")
  if fcol == scol:
    raise ValueError(f"{path}: the file column and the spacing column are both {rows[0][fcol]!r}")
  out = {}
  for n, r in enumerate(rows[1:], start=2):
    if len(r) <= max(fcol, scol) or not r[fcol].strip():
      continue
    try:
      v = float(r[scol])
    except ValueError:
      raise ValueError(f"{path}:{n}: spacing {r[scol]!r} is not a number") from None
    if not (math.isfinite(v) and v > 0):
      raise ValueError(f"{path}:{n}: spacing {r[scol]!r} must be a positive number of mm")
    name = r[fcol].strip()
    out[name] = v
    out[pathlib.Path(name).name] = v
    out[pathlib.Path(name).stem] = v
  return out


def spacing_for(path: pathlib.Path, table: dict[str, float] | None,
                default: float | None, missing: collections.Counter | None = None) -> float:
  """The image's mm per pixel: its row of `table`, else `default`, else NaN. An image a
  table lacks is counted in `missing` and warned about (its mm columns stay empty
  unless `default` is given)."""
  if table:
    for key in (str(path), path.name, path.stem):
      if key in table:
        return float(table[key])
    if missing is not None:
      missing["images"] += 1
      if missing["images"] <= 5:
        logging.warning("%s: not in the spacing CSV: %s", path, "spacing --pixel_spacing_mm "
                        f"{default}" if default else "HC/BPD/OFD in pixels only")
  return float(default) if default else math.nan
