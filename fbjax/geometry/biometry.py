"""Head biometry from an ellipse: HC, BPD and OFD in millimetres.

The fetal head is measured, as in clinical practice and in HC18, by an
ellipse fitted along the outer border of the skull:

    HC  = perimeter of the ellipse (Ramanujan's first approximation)
    OFD = major axis  = 2 a
    BPD = minor axis  = 2 b        (outer-to-outer, as the ellipse gives it)

The ellipse and its fit are `fbjax.geometry.ellipse_fit`'s.

Original image. The network sees a letterboxed copy (`fbjax.geometry.preprocess`);
`measure(..., geometry=g, pixel_spacing_mm=spacing_of_the_original)` maps
boundary points back with `g.to_original_points` before fitting, so the
ellipse is in the original pixel grid and mm follow from the original spacing.
Without a geometry the spacing must be the one on the grid the points are in.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from fbjax.geometry import ellipse_fit
from fbjax.geometry.preprocess import Geometry

# ---------------------------------------------------------------------------
# Measurements in mm
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HeadBiometry:
  """HC/BPD/OFD in mm (NaN when unknown) and the ellipse in original pixels."""

  hc_mm: float
  bpd_mm: float
  ofd_mm: float
  ellipse: ellipse_fit.Ellipse | None
  ok: bool
  reason: str = ""

  def row(self) -> dict:
    e = self.ellipse
    return {"hc_mm": self.hc_mm, "bpd_mm": self.bpd_mm, "ofd_mm": self.ofd_mm,
            "ellipse_cx": e.cx if e else math.nan, "ellipse_cy": e.cy if e else math.nan,
            "ellipse_a": e.a if e else math.nan, "ellipse_b": e.b if e else math.nan,
            "ellipse_theta": e.theta if e else math.nan, "fit_ok": self.ok,
            "fit_reason": self.reason}


def biometry_from_ellipse(e: ellipse_fit.Ellipse | None, pixel_spacing_mm: float) -> HeadBiometry:
  """HC (Ramanujan), BPD = 2b, OFD = 2a, in mm; NaN where spacing or ellipse is missing."""
  if e is None:
    return HeadBiometry(math.nan, math.nan, math.nan, None, False, "no ellipse")
  s = float(pixel_spacing_mm)
  if not np.isfinite(s) or s <= 0:
    return HeadBiometry(math.nan, math.nan, math.nan, e, True, "no pixel spacing")
  return HeadBiometry(e.perimeter * s, 2.0 * e.b * s, 2.0 * e.a * s, e, True)


def measure(prob, pixel_spacing_mm: float, *, geometry: Geometry | None = None,
            method: str = "direct", level: float = 0.5, **fit_kwargs) -> HeadBiometry:
  """Head biometry from a head mask/probability map.

  Args:
    prob: HxW head probability or {0,1} mask (filled ellipse along the skull).
    pixel_spacing_mm: mm per pixel of the ORIGINAL image when `geometry` is
      given (the map is on the network grid and is mapped back), else of `prob`.
    geometry: the letterbox geometry that put the original image on the grid.
    method: "direct", "ransac" or "cv2" (see `fit_ellipse`).
  """
  p = np.asarray(prob)
  pts, kept = ellipse_fit.boundary_points(p, level, box=ellipse_fit.valid_box(geometry, p.shape))
  pts = pts[kept]
  if len(pts) < 20:
    return HeadBiometry(math.nan, math.nan, math.nan, None, False,
                        "no head region" if len(kept) == 0 else "too few boundary points")
  if geometry is not None:
    pts = geometry.to_original_points(pts)
    if method == "ransac":
      fit_kwargs.setdefault("threshold", 1.0 / geometry.scale)
  e = ellipse_fit.fit_ellipse(pts, method, **fit_kwargs)
  if e is None:
    return HeadBiometry(math.nan, math.nan, math.nan, None, False, "ellipse fit failed")
  return biometry_from_ellipse(e, pixel_spacing_mm)
