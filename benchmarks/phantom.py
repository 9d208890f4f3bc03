r"""Phantom benchmark: export speed and realism against HC18, printed as JSON.

    python benchmarks/phantom.py                       # 256 px, 300 images timed
    python benchmarks/phantom.py --num 1000 --pairs 60 --size 256

`images_per_s`: a full export (simulation, five PNGs per image, labels.csv)
with `--workers` processes (default: every core), timed end to end.

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
import sys
import tempfile
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fbjax.data import phantom_export, phantom_sheet  # noqa: E402


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


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--num", type=int, default=300, help="images exported for the timing")
  ap.add_argument("--size", type=int, default=256)
  ap.add_argument("--workers", type=int, default=None)
  ap.add_argument("--pairs", type=int, default=40, help="phantom/HC18 pairs for realism")
  ap.add_argument("--real_data", default=os.environ.get("FBJAX_REAL_DATA"))
  args = ap.parse_args()
  out: dict = {"size": args.size, "num": args.num, "cpu_count": os.cpu_count()}
  workers = phantom_export.default_workers() if args.workers is None else args.workers
  out["workers"] = workers
  with tempfile.TemporaryDirectory() as d:
    t = time.perf_counter()
    phantom_export.export(d, num=args.num, seed=0, size=args.size, workers=workers,
                          progress=False)
    dt = time.perf_counter() - t
  out["export_s"] = dt
  out["images_per_s"] = args.num / dt
  if args.real_data and args.pairs > 0:
    out["realism"] = realism(args.real_data, args.pairs, args.size)
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
