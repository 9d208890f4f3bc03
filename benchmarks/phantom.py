r"""Phantom benchmark: export speed and realism against HC18, printed as JSON.

    python -m benchmarks.phantom                       # 256 px, 1000 images timed
    python -m benchmarks.phantom --skip_export --subset held_out --native 90 --small 300

`images_per_s`: a full export (simulation, five PNGs per image, labels.csv)
with `--workers` processes (default: every core), timed end to end (wall
clock). The machine may be shared, so the CPU time per image (parent and
workers, `cpu_ms_per_image`) and the 1-minute load average are printed too;
`cpu_bound_images_per_s` = cores / CPU time per image is the rate the export
reaches when it has the cores to itself. `stage_cpu_ms` splits one process's
CPU time per image into simulation, PNG encoding and file writing.

Realism (`fbjax.phantom.realism`: grain FWHM in mm, ring / interior intensity,
grey-level percentiles and EMD), by HC tercile (small / middle / large
heads), HC18 against the phantom:
  * HC18: the training images of one half of the patients (`--subset`; the
    halves are fixed by a salted hash of the patient number:
    `fbjax.phantom.realism_table.hc18_subset`),
    at native resolution through their annotated ellipse, and resampled to
    the phantom's 256-px spacing (the same field of view on a 256-px-wide
    grid, low-passed first). Terciles of all 798 HC18 heads;
  * the phantom: normal trans-thalamic images of seeds `realism_table.TUNE_SEEDS` (the
    `tune` subset) or `HELD_OUT_SEEDS` (`held_out`), `--native` images at
    800 px (HC18's 0.05-0.3 mm spacing) and `--small` at 256 px, in the same
    HC terciles as HC18 (the phantom's heads span HC18's 11-40 weeks).
Medians of the per-image statistics and ratios phantom / HC18 per tercile;
`worst_rel_dev` is the largest |ratio - 1| over `realism.TARGET_STATS`
(`fbjax.phantom.realism_table`). Prints the JSON (also to `--out` when given).
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
import tempfile
import time

from absl import app, flags

from fbjax.phantom import export as phantom_export
from fbjax.phantom import realism_table
from fbjax.phantom import simulator as phantom

_NUM = flags.DEFINE_integer("num", 1000, "Images exported for the timing.")
_SIZE = flags.DEFINE_integer("size", 256, "Image size of the export.")
_WORKERS = flags.DEFINE_integer("workers", None, "Export processes (default: every core).")
_SUBSET = flags.DEFINE_enum("subset", "held_out", ["held_out", "tune"],
                            "HC18 patients and phantom seeds the realism table is measured on.")
_NATIVE = flags.DEFINE_integer("native", 90, "Phantom images at 800 px.")
_SMALL = flags.DEFINE_integer("small", 300, "Phantom images at 256 px.")
_HC18_LIMIT = flags.DEFINE_integer("hc18_limit", None, "Measure every k-th HC18 image.")
_SKIP_EXPORT = flags.DEFINE_bool("skip_export", False, "Realism table only.")
_REAL = flags.DEFINE_string("real_data", os.environ.get("FBJAX_REAL_DATA"),
                            "Folder holding hc18/ (the realism table; none: no table).")
_OUT = flags.DEFINE_string("out", "", "Also write the JSON here.")

def _cpu_s() -> float:
  own = resource.getrusage(resource.RUSAGE_SELF)
  kids = resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def stages(size: int, num: int) -> dict:
  """CPU ms per image of simulation, PNG encoding and file writing, in this process."""
  out = {"simulate": 0.0, "png": 0.0, "write": 0.0}
  with tempfile.TemporaryDirectory() as d:
    for i in range(num):
      t0 = time.process_time()
      sim = phantom.simulate(0, 10_000 + i, size=size)
      t1 = time.process_time()
      pngs = [phantom_export._png_bytes(sim[k], mask=k.endswith("mask"))
              for k in ("image", "clean", "head_mask", "skull_mask", "brain_mask")]
      t2 = time.process_time()
      for j, data in enumerate(pngs):
        pathlib.Path(d, f"{i}_{j}.png").write_bytes(data)
      t3 = time.process_time()
      out["simulate"] += t1 - t0
      out["png"] += t2 - t1
      out["write"] += t3 - t2
  return {k: 1000 * v / num for k, v in out.items()}


def main(argv):
  del argv
  out: dict = {"size": _SIZE.value, "num": _NUM.value, "cpu_count": os.cpu_count()}
  workers = phantom_export.default_workers() if _WORKERS.value is None else _WORKERS.value
  out["workers"] = workers
  phantom.simulate(0, 0, size=_SIZE.value)   # warm caches in this process
  if not _SKIP_EXPORT.value:
    out.update(export_speed(_NUM.value, _SIZE.value, workers))
  if _REAL.value and _NATIVE.value + _SMALL.value > 0:
    out["realism"] = realism_table.realism_table(
        _REAL.value, _SUBSET.value, _NATIVE.value, _SMALL.value, workers=workers,
        hc18_limit=_HC18_LIMIT.value)
  text = json.dumps(out, indent=1)
  if _OUT.value:
    pathlib.Path(_OUT.value).write_text(text + "\n")
  print(text)


def export_speed(num: int, size: int, workers: int) -> dict:
  out: dict = {"loadavg_1min_before": os.getloadavg()[0]}
  with tempfile.TemporaryDirectory() as d:
    c, t = _cpu_s(), time.perf_counter()
    phantom_export.export(d, num=num, seed=0, size=size, workers=workers,
                          progress=False)
    dt, dc = time.perf_counter() - t, _cpu_s() - c
  out["loadavg_1min_after"] = os.getloadavg()[0]
  out["export_s"] = dt
  out["images_per_s"] = num / dt
  out["cpu_ms_per_image"] = 1000 * dc / num
  out["cpu_bound_images_per_s"] = (os.cpu_count() or 1) * num / dc
  out["stage_cpu_ms"] = stages(size, min(num, 100))
  return out


if __name__ == "__main__":
  app.run(main)
