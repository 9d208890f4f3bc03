"""How much a B-mode image looks like HC18: grain, skull/brain contrast, grey levels.

Every statistic is measured the same way on HC18 images (through their
annotated head ellipse) and on phantom images (through `head_mask`), in mm
where a length is involved, so that images of different pixel spacings can be
compared:

  * grain (speckle size as in Wagner et al. 1983, CITATIONS.bib): the full
    width at half maximum (FWHM) of the autocorrelation of the image inside
    the brain (the head ellipse shrunk to 80 %), along the
    columns (axial, the beam direction of a convex probe near the image
    centre) and the rows (lateral). `grain_*_mm` is measured after a
    high-pass (the image minus a Gaussian blur of sigma `HIGHPASS_MM`) so
    that anatomy and gain ramps do not widen the peak; `plain_grain_*_mm`
    only removes the region's mean (anatomy included), which is what a
    plain patch autocorrelation measures;
  * ring / interior: mean grey level of the outer band of the ellipse
    (normalised radius 0.88-1.0, the skull) over that of its inner 75 %;
  * grey levels: percentiles 10/50/90 and the mean inside the ellipse, and a
    256-bin histogram for earth mover's distances between pooled sets.

Only pixels inside the scan sector (grey level > 0) count.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

HIGHPASS_MM = 3.0
BRAIN_RHO = 0.8
RING_RHO = (0.88, 1.0)
INTERIOR_RHO = 0.75
GREY_PERCENTILES = (10, 50, 90)


def ellipse_radius(mask: np.ndarray) -> np.ndarray:
  """Normalised elliptical radius (1 on the border) of the ellipse fitted to a filled mask."""
  cnts, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
  if not cnts or max(len(c) for c in cnts) < 5:
    raise ValueError(f"head mask of shape {mask.shape} has no region to fit an ellipse to")
  (cx, cy), (w, h), ang = cv2.fitEllipse(max(cnts, key=len))
  yy, xx = np.mgrid[:mask.shape[0], :mask.shape[1]].astype(np.float32)
  t = np.deg2rad(ang)
  dx, dy = xx - cx, yy - cy
  u = dx * np.cos(t) + dy * np.sin(t)
  v = -dx * np.sin(t) + dy * np.cos(t)
  return np.sqrt((u / (w / 2)) ** 2 + (v / (h / 2)) ** 2)


def fwhm(profile: np.ndarray) -> float:
  """Full width at half maximum of a symmetric autocorrelation profile (lag 0 first, = 1)."""
  below = np.nonzero(profile < 0.5)[0]
  if len(below) == 0:
    return float("nan")
  k = below[0]
  p0, p1 = profile[k - 1], profile[k]
  return 2.0 * (k - 1 + (p0 - 0.5) / (p0 - p1))


def autocorr_fwhm(img: np.ndarray, region: np.ndarray, highpass_px: float | None,
                  max_lag: int = 120) -> tuple[float, float]:
  """(axial, lateral) autocorrelation FWHM in pixels of `img` inside `region`.

  The autocorrelation is normalised by the region's own autocorrelation
  (the number of pixel pairs at each lag), so the region's shape does not
  narrow it. `highpass_px`: sigma of the Gaussian subtracted first (None: none).
  """
  x = img.astype(np.float32)
  if highpass_px:
    x = x - cv2.GaussianBlur(x, (0, 0), highpass_px)
  m = region.astype(np.float32)
  if m.sum() < 16:
    return float("nan"), float("nan")
  x = (x - (x * m).sum() / m.sum()) * m
  ys, xs = np.nonzero(m)
  box = np.s_[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
  x, m = x[box], m[box]
  # zero padding by max_lag keeps lags < max_lag free of wrap-around
  n = [cv2.getOptimalDFTSize(s + max_lag) for s in x.shape]
  ac = np.fft.irfft2(np.abs(np.fft.rfft2(x, n)) ** 2, n)
  norm = np.fft.irfft2(np.abs(np.fft.rfft2(m, n)) ** 2, n)
  ac = ac / np.maximum(norm, 1.0)
  if ac[0, 0] <= 0:   # a constant region has no grain
    return float("nan"), float("nan")
  ac /= ac[0, 0]
  return fwhm(ac[:max_lag, 0]), fwhm(ac[0, :max_lag])


def measure(img: np.ndarray, head_mask: np.ndarray, spacing_mm: float) -> dict:
  """Realism statistics of one image (see the module docstring)."""
  rho = ellipse_radius(head_mask)
  on = img > 0
  brain = (rho < BRAIN_RHO) & on
  ring = (rho > RING_RHO[0]) & (rho <= RING_RHO[1]) & on
  interior = (rho < INTERIOR_RHO) & on
  inside = (rho < 1.0) & on
  ax, lat = autocorr_fwhm(img, brain, HIGHPASS_MM / spacing_mm)
  pax, plat = autocorr_fwhm(img, brain, None)
  v = img[inside]
  out = {"spacing_mm": float(spacing_mm),
         "grain_axial_mm": ax * spacing_mm, "grain_lateral_mm": lat * spacing_mm,
         "grain_axial_px": ax, "grain_lateral_px": lat,
         "plain_grain_axial_mm": pax * spacing_mm, "plain_grain_lateral_mm": plat * spacing_mm,
         "ring": float(img[ring].mean()) if ring.any() else math.nan,
         "interior": float(img[interior].mean()) if interior.any() else math.nan,
         "grey_mean": float(v.mean()) if v.size else math.nan,
         "hist": np.bincount(v, minlength=256).tolist()}
  out["ring_over_interior"] = out["ring"] / max(out["interior"], 1e-6)
  for p, q in zip(GREY_PERCENTILES, np.percentile(v, GREY_PERCENTILES) if v.size else
                  [math.nan] * 3, strict=True):
    out[f"grey_p{p}"] = float(q)
  return out


STATS = ("grain_axial_mm", "grain_lateral_mm", "ring_over_interior", "grey_mean", "grey_p10",
         "grey_p50", "grey_p90")
EXTRA = ("grain_axial_px", "grain_lateral_px", "plain_grain_axial_mm", "plain_grain_lateral_mm",
         "spacing_mm", "ring", "interior")


def emd(h1: np.ndarray, h2: np.ndarray) -> float:
  """Earth mover's distance in grey levels between two 1-D histograms (normalised here)."""
  c1 = np.cumsum(h1) / max(np.sum(h1), 1)
  c2 = np.cumsum(h2) / max(np.sum(h2), 1)
  return float(np.abs(c1 - c2).sum())


def summarise(rows: list[dict]) -> dict:
  """Medians of the per-image statistics, the count, and the pooled grey histogram."""
  out = {"n": len(rows)}
  for k in STATS + EXTRA:
    out[k] = float(np.nanmedian([r[k] for r in rows])) if rows else math.nan
  out["hist"] = np.sum([r["hist"] for r in rows], axis=0) if rows else np.zeros(256)
  return out


def terciles(values: np.ndarray, cuts: tuple[float, float] | None = None) -> np.ndarray:
  """0 / 1 / 2 = small / middle / large of `values` (cut at its own 1/3, 2/3 quantiles)."""
  values = np.asarray(values, np.float64)
  if cuts is None:
    cuts = tuple(np.quantile(values, [1 / 3, 2 / 3]))
  return np.digitize(values, cuts)


# The 15 % realism target applies to these; the 10th grey-level percentile is
# 10-20 grey levels, where a 15 % band is 2-3 levels, so it is reported
# (ratio and EMD) but not held to it.
TARGET_STATS = ("grain_axial_mm", "grain_lateral_mm", "ring_over_interior", "grey_mean",
                "grey_p50", "grey_p90")


def compare(real: dict, sim: dict) -> dict:
  """Ratios sim / real of the statistics, the grey-level EMD, and the worst |ratio - 1|."""
  ratios = {k: sim[k] / real[k] for k in STATS}
  return {"ratio": ratios, "hist_emd_grey": emd(sim["hist"], real["hist"]),
          "worst_rel_dev": max(abs(ratios[k] - 1.0) for k in TARGET_STATS),
          "worst_stat": max(TARGET_STATS, key=lambda k: abs(ratios[k] - 1.0))}
