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
    halves are fixed by a salted hash of the patient number, `REALISM_SEED`),
    at native resolution through their annotated ellipse, and resampled to
    the phantom's 256-px spacing (the same field of view on a 256-px-wide
    grid, low-passed first). Terciles of all 798 HC18 heads;
  * the phantom: normal trans-thalamic images of seeds `TUNE_SEEDS` (the
    `tune` subset) or `HELD_OUT_SEEDS` (`held_out`), `--native` images at
    800 px (HC18's 0.05-0.3 mm spacing) and `--small` at 256 px, in the same
    HC terciles as HC18 (the phantom's heads span HC18's 11-40 weeks).
Medians of the per-image statistics and ratios phantom / HC18 per tercile;
`worst_rel_dev` is the largest |ratio - 1| over `realism.TARGET_STATS`.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import pathlib
import resource
import tempfile
import time

import cv2
import numpy as np

from fbjax.data import builder_utils
from fbjax.phantom import export as phantom_export
from fbjax.phantom import realism
from fbjax.phantom import sheet as phantom_sheet
from fbjax.phantom import simulator as phantom  # noqa: E402,I001

REALISM_SEED = 7          # salt of the HC18 tuning / held-out split (by patient)
TUNE_SEEDS, HELD_OUT_SEEDS = (100,), (101, 102)   # phantom streams
NATIVE_SIZE = 800         # HC18's image width: the phantom at HC18's native spacing


def hc18_group(path: pathlib.Path) -> str:
  """HC18 patient of an image: `014_2HC.png` -> `014` (later scans of one fetus share it)."""
  return path.name.split("_")[0]


def hc18_subset(real_data: str, subset: str) -> list[tuple]:
  """HC18 training images of the tuning or held-out half (by patient hash), all sizes."""
  items = phantom_sheet.hc18_items(real_data, hc_range=(0.0, 1e9))
  tune = [builder_utils.hash_unit(hc18_group(it[0]), REALISM_SEED) < 0.5 for it in items]
  return [it for it, t in zip(items, tune, strict=True) if t == (subset == "tune")]


def _hc18_rows(item: tuple) -> tuple[dict, dict]:
  img, mask, _ = phantom_sheet.read_hc18(item)
  native = realism.measure(img, mask, item[2])
  # the phantom's 256-px spacing: the same field of view on a 256-px-wide grid
  s = 256 / img.shape[1]
  k = 0.5 * math.sqrt(1.0 / (s * s) - 1.0)
  small = cv2.resize(cv2.GaussianBlur(img, (0, 0), k), None, fx=s, fy=s,
                     interpolation=cv2.INTER_LINEAR)
  small_mask = cv2.resize(mask, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_NEAREST)
  return native, realism.measure(small, small_mask, item[2] / s)


def _sim_rows(seed: int, index: int, size: int) -> dict:
  sim = phantom.simulate(seed, index, size=size, plane="TT", condition="normal", overlays=False)
  row = realism.measure(sim["image"], sim["head_mask"], sim["pixel_spacing_mm"])
  row["hc_mm"] = sim["hc_mm"]
  return row


def _pool(fn, args, workers):
  if workers <= 1:
    return [fn(*a) for a in args]
  with multiprocessing.get_context("spawn").Pool(workers) as pool:
    return pool.starmap(fn, args)


def realism_table(real_data: str, subset: str, num_native: int, num_256: int,
                  workers: int = 1, hc18_limit: int | None = None) -> dict:
  """Realism by HC tercile, HC18 vs phantom, at native spacing and at 256 px."""
  items = hc18_subset(real_data, subset)
  if hc18_limit:
    items = items[:: max(1, len(items) // hc18_limit)]
  hc18 = _pool(_hc18_rows, [(it,) for it in items], workers)
  seeds = TUNE_SEEDS if subset == "tune" else HELD_OUT_SEEDS
  sims = {size: _pool(_sim_rows, [(sd, i, size) for sd in seeds for i in range(num // len(seeds))],
                      workers)
          for size, num in ((NATIVE_SIZE, num_native), (256, num_256))}
  cuts = tuple(float(c) for c in np.quantile(
      [it[3] for it in phantom_sheet.hc18_items(real_data, hc_range=(0.0, 1e9))], [1 / 3, 2 / 3]))
  out = {"subset": subset, "hc18_images": len(items), "phantom_seeds": list(seeds)}
  out.update(tabulate([it[3] for it in items], hc18, sims, cuts))
  return out


def tabulate(hc18_hc: list[float], hc18: list[tuple[dict, dict]], sims: dict[int, list[dict]],
             cuts: tuple[float, float]) -> dict:
  """The realism table from per-image rows: HC18 (native, 256-px) and phantom rows by size.

  HC18 and phantom images fall in the terciles of all HC18 training heads (`cuts`).
  """
  hc = np.asarray(hc18_hc)
  out: dict = {"hc18_tercile_cuts_mm": list(cuts)}
  for name, size, col in (("native", NATIVE_SIZE, 0), ("256", 256, 1)):
    sim = sims[size]
    sim_hc = np.array([r["hc_mm"] for r in sim])
    t_real, t_sim = realism.terciles(hc, cuts), realism.terciles(sim_hc, cuts)
    rows = {}
    for t, label in enumerate(("small", "middle", "large", "all")):
      pick_r = [r[col] for r, k in zip(hc18, t_real, strict=True) if k == t or t == 3]
      pick_s = [r for r, k in zip(sim, t_sim, strict=True) if k == t or t == 3]
      real_s, sim_s = realism.summarise(pick_r), realism.summarise(pick_s)
      rows[label] = {
          "hc18_hc_mm": _range(hc[(t_real == t) | (t == 3)]),
          "phantom_hc_mm": _range(sim_hc[(t_sim == t) | (t == 3)]),
          "hc18": {k: v for k, v in real_s.items() if k != "hist"},
          "phantom": {k: v for k, v in sim_s.items() if k != "hist"},
          **realism.compare(real_s, sim_s)}
    out[name] = {"size": size, "phantom_images": len(sim), "by_tercile": rows,
                 "worst_rel_dev": max(r["worst_rel_dev"] for r in rows.values())}
  return out


def _range(v: np.ndarray) -> list[float]:
  return [float(v.min()), float(np.median(v)), float(v.max())] if len(v) else []


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


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--num", type=int, default=1000, help="images exported for the timing")
  ap.add_argument("--size", type=int, default=256)
  ap.add_argument("--workers", type=int, default=None)
  ap.add_argument("--subset", default="held_out", choices=("held_out", "tune"),
                  help="HC18 patients and phantom seeds the realism table is measured on")
  ap.add_argument("--native", type=int, default=90, help="phantom images at 800 px")
  ap.add_argument("--small", type=int, default=300, help="phantom images at 256 px")
  ap.add_argument("--hc18_limit", type=int, default=None, help="measure every k-th HC18 image")
  ap.add_argument("--skip_export", action="store_true", help="realism table only")
  ap.add_argument("--real_data", default=os.environ.get("FBJAX_REAL_DATA"))
  args = ap.parse_args()
  out: dict = {"size": args.size, "num": args.num, "cpu_count": os.cpu_count()}
  workers = phantom_export.default_workers() if args.workers is None else args.workers
  out["workers"] = workers
  phantom.simulate(0, 0, size=args.size)   # warm caches in this process
  if not args.skip_export:
    out.update(export_speed(args.num, args.size, workers))
  if args.real_data and args.native + args.small > 0:
    out["realism"] = realism_table(args.real_data, args.subset, args.native, args.small,
                                   workers=workers, hc18_limit=args.hc18_limit)
  print(json.dumps(out, indent=1))


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
  main()
