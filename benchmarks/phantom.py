r"""Phantom benchmark: export speed and realism against HC18, printed as JSON.

    python benchmarks/phantom.py                       # 256 px, 1000 images timed
    python benchmarks/phantom.py --num 1000 --pairs 60 --size 256

`images_per_s`: a full export (simulation, five PNGs per image, labels.csv)
with `--workers` processes (default: every core), timed end to end (wall
clock). The machine may be shared, so the CPU time per image (parent and
workers, `cpu_ms_per_image`) and the 1-minute load average are printed too;
`cpu_bound_images_per_s` = cores / CPU time per image is the rate the export
reaches when it has the cores to itself. `stage_cpu_ms` splits one process's
CPU time per image into simulation, PNG encoding and file writing.

Realism, on `--pairs` normal trans-thalamic phantom images and as many
mid-gestation HC18 images (HC 140-240 mm) resampled to each phantom image's
pixel spacing (`fbjax.data.phantom_sheet.hc18_pairs`), both measured the
same way through the filled head ellipse:
  * `hist_*`: grey-level histograms inside the head (pooled); `hist_emd` is
    the earth mover's distance in grey levels, `hist_tv` the total variation;
  * `grain_*_px`: speckle grain size, the full width at half maximum of the
    autocorrelation of the high-passed image (image minus a Gaussian blur of
    sigma 3 px) inside the brain (the ellipse shrunk to 80 %), along the
    columns (axial) and the rows (lateral);
  * `skull_brain_contrast`: (skull - brain) / (skull + brain) of the mean grey
    levels of the outer 12 % band of the ellipse and of its inner 75 %.
Ratios phantom / HC18 are printed beside each number.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import sys
import tempfile
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fbjax.data import phantom, phantom_export, phantom_sheet  # noqa: E402


def _ellipse_radius(mask: np.ndarray) -> np.ndarray:
  """Normalised elliptical radius (1 on the border) of the ellipse fitted to a filled mask."""
  cnts, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
  (cx, cy), (w, h), ang = cv2.fitEllipse(max(cnts, key=len))
  yy, xx = np.mgrid[:mask.shape[0], :mask.shape[1]].astype(np.float32)
  t = np.deg2rad(ang)
  dx, dy = xx - cx, yy - cy
  u = dx * np.cos(t) + dy * np.sin(t)
  v = -dx * np.sin(t) + dy * np.cos(t)
  return np.sqrt((u / (w / 2)) ** 2 + (v / (h / 2)) ** 2)


def _fwhm(profile: np.ndarray) -> float:
  """Full width at half maximum of a symmetric autocorrelation profile (lag 0 first)."""
  below = np.nonzero(profile < 0.5)[0]
  if len(below) == 0:
    return float("nan")
  k = below[0]
  p0, p1 = profile[k - 1], profile[k]
  return 2.0 * (k - 1 + (p0 - 0.5) / (p0 - p1))


def grain(img: np.ndarray, region: np.ndarray) -> tuple[float, float]:
  """(axial, lateral) autocorrelation FWHM in pixels of the high-passed image in `region`."""
  x = img.astype(np.float32)
  hp = x - cv2.GaussianBlur(x, (0, 0), 3.0)
  m = region.astype(np.float32)
  hp = (hp - (hp * m).sum() / m.sum()) * m
  n = [2 * s for s in img.shape]
  f = np.fft.rfft2(hp, n)
  fm = np.fft.rfft2(m, n)
  ac = np.fft.irfft2(np.abs(f) ** 2, n)
  norm = np.fft.irfft2(np.abs(fm) ** 2, n)
  ac = ac / np.maximum(norm, 1.0)
  ac /= ac[0, 0]
  return _fwhm(ac[:20, 0]), _fwhm(ac[0, :20])


def stats(img: np.ndarray, head: np.ndarray) -> dict:
  rho = _ellipse_radius(head)
  inside = (rho < 1.0) & (img > 0)
  brain = (rho < 0.8) & (img > 0)
  band = (rho > 0.88) & (rho <= 1.0) & (img > 0)
  ax, lat = grain(img, brain)
  sk, br = img[band].mean(), img[(rho < 0.75) & (img > 0)].mean()
  return {"values": img[inside], "grain_axial_px": ax, "grain_lateral_px": lat,
          "skull": sk, "brain": br, "contrast": (sk - br) / (sk + br)}


def realism(real_data: str, pairs: int, size: int) -> dict:
  res: dict[str, list] = {"phantom": [], "hc18": []}
  for img, mask, sim, _ in phantom_sheet.hc18_pairs(real_data, num=pairs, size=size):
    res["hc18"].append(stats(img, mask))
    res["phantom"].append(stats(sim["image"], sim["head_mask"]))
  out = {}
  hists = {}
  for k, rows in res.items():
    v = np.concatenate([r["values"] for r in rows])
    hists[k] = np.bincount(v, minlength=256) / len(v)
    out[k] = {"grey_mean_in_head": float(v.mean()), "grey_std_in_head": float(v.std())}
    for key in ("grain_axial_px", "grain_lateral_px", "skull", "brain", "contrast"):
      out[k][key if key != "contrast" else "skull_brain_contrast"] = float(
          np.nanmedian([r[key] for r in rows]))
  cdf = np.cumsum(hists["phantom"]) - np.cumsum(hists["hc18"])
  out["hist_emd_grey"] = float(np.abs(cdf).sum())
  out["hist_tv"] = float(0.5 * np.abs(hists["phantom"] - hists["hc18"]).sum())
  out["ratio_phantom_over_hc18"] = {
      k: out["phantom"][k] / out["hc18"][k]
      for k in ("grain_axial_px", "grain_lateral_px", "skull_brain_contrast")}
  return out


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
  ap.add_argument("--pairs", type=int, default=40, help="phantom/HC18 pairs for realism")
  ap.add_argument("--real_data", default=os.environ.get("FBJAX_REAL_DATA"))
  args = ap.parse_args()
  out: dict = {"size": args.size, "num": args.num, "cpu_count": os.cpu_count()}
  workers = phantom_export.default_workers() if args.workers is None else args.workers
  out["workers"] = workers
  phantom.simulate(0, 0, size=args.size)   # warm caches in this process
  out["loadavg_1min_before"] = os.getloadavg()[0]
  with tempfile.TemporaryDirectory() as d:
    c, t = _cpu_s(), time.perf_counter()
    phantom_export.export(d, num=args.num, seed=0, size=args.size, workers=workers,
                          progress=False)
    dt, dc = time.perf_counter() - t, _cpu_s() - c
  out["loadavg_1min_after"] = os.getloadavg()[0]
  out["export_s"] = dt
  out["images_per_s"] = args.num / dt
  out["cpu_ms_per_image"] = 1000 * dc / args.num
  out["cpu_bound_images_per_s"] = (os.cpu_count() or 1) * args.num / dc
  out["stage_cpu_ms"] = stages(args.size, min(args.num, 100))
  if args.real_data and args.pairs > 0:
    out["realism"] = realism(args.real_data, args.pairs, args.size)
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
