"""The phantom's realism against HC18, by HC tercile: the table `python -m benchmarks.phantom`
prints (`fbjax.phantom.realism` measures each image).

HC18: the training images of one half of the patients (`hc18_subset`: "tune" or
"held_out", fixed by a salted hash of the patient number, `REALISM_SEED`), at native
resolution through their annotated ellipse, and resampled to the phantom's 256-px spacing
(the same field of view on a 256-px-wide grid, low-passed first). The phantom: normal
trans-thalamic images of seeds `TUNE_SEEDS` or `HELD_OUT_SEEDS`, at 800 px (HC18's
spacing) and at 256 px. Both fall in the terciles of all HC18 training heads.

    table = realism_table.realism_table(real_data, "held_out", num_native=90, num_256=300)
"""

from __future__ import annotations

import math
import multiprocessing
import pathlib

import cv2
import numpy as np

from fbjax.data import builder_utils
from fbjax.phantom import realism, sheet, simulator

REALISM_SEED = 7          # salt of the HC18 tuning / held-out split (by patient)
TUNE_SEEDS, HELD_OUT_SEEDS = (100,), (101, 102)   # phantom streams
NATIVE_SIZE = 800         # HC18's image width: the phantom at HC18's native spacing


def hc18_group(path: pathlib.Path) -> str:
  """HC18 patient of an image: `014_2HC.png` -> `014` (later scans of one fetus share it)."""
  return path.name.split("_")[0]


def hc18_subset(real_data: str, subset: str) -> list[tuple]:
  """HC18 training images of the tuning or held-out half (by patient hash), all sizes."""
  items = sheet.hc18_items(real_data, hc_range=(0.0, 1e9))
  tune = [builder_utils.hash_unit(hc18_group(it[0]), REALISM_SEED) < 0.5 for it in items]
  return [it for it, t in zip(items, tune, strict=True) if t == (subset == "tune")]


def _hc18_rows(item: tuple) -> tuple[dict, dict]:
  img, mask, _ = sheet.read_hc18(item)
  native = realism.measure(img, mask, item[2])
  # the phantom's 256-px spacing: the same field of view on a 256-px-wide grid
  s = 256 / img.shape[1]
  k = 0.5 * math.sqrt(1.0 / (s * s) - 1.0)
  small = cv2.resize(cv2.GaussianBlur(img, (0, 0), k), None, fx=s, fy=s,
                     interpolation=cv2.INTER_LINEAR)
  small_mask = cv2.resize(mask, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_NEAREST)
  return native, realism.measure(small, small_mask, item[2] / s)


def _sim_rows(seed: int, index: int, size: int) -> dict:
  sim = simulator.simulate(seed, index, size=size, plane="TT", condition="normal", overlays=False)
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
      [it[3] for it in sheet.hc18_items(real_data, hc_range=(0.0, 1e9))], [1 / 3, 2 / 3]))
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
