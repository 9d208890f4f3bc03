"""Ellipses: their geometry, their fit to boundary points, and the boundary of a mask or
probability map (what `fbjax.geometry.biometry` measures heads with).

Conventions. Points are (x, y) in pixels with x to the right and y down, the
centre of the top-left pixel at (0, 0). An `Ellipse` holds semi-axes `a >= b`
and the angle `theta` (radians, in [0, pi)) of the `a` axis from +x towards
+y. `cv2.fitEllipse` returns FULL axis lengths and degrees; `Ellipse.from_cv2`
and `to_cv2` convert.

Boundary points. A filled mask's pixel centres lie half a pixel inside its
true border, which biases a contour-of-pixel-centres fit (HC too small by
about pi pixels). `boundary_points` instead takes the 0.5 iso-line of the mask
or probability map by marching squares (sub-pixel, linear interpolation), and
drops points on the edge of the valid image region, where the head is cut by
the image border and the boundary is not the skull.

Fitting. `fit_ellipse(..., method=)`:
  "direct"  algebraic least squares constrained to an ellipse (Fitzgibbon,
            Pilu and Fisher 1999, in the stable form of Halir and Flusser 1998);
  "ransac"  the same inside RANSAC on the Sampson distance, refitted on the
            inliers: robust to spurious boundary pieces of a noisy prediction;
  "cv2"     `cv2.fitEllipse`.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
from skimage import measure as skmeasure

from fbjax.geometry.preprocess import Geometry

METHODS = ("direct", "ransac", "cv2")


def ramanujan_perimeter(a, b):
  """Perimeter of an ellipse with semi-axes a, b (Ramanujan's first formula).

  Relative error below 1e-5 for axis ratios b/a >= 0.5 (fetal heads: ~0.8).
  """
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  return np.pi * (3.0 * (a + b) - np.sqrt((3.0 * a + b) * (a + 3.0 * b)))


@dataclasses.dataclass(frozen=True)
class Ellipse:
  """An ellipse in pixel coordinates; `a >= b` are semi-axes."""

  cx: float
  cy: float
  a: float
  b: float
  theta: float  # radians in [0, pi): direction of the `a` axis from +x towards +y

  @staticmethod
  def make(cx, cy, a, b, theta) -> Ellipse:
    """Normalises so that a >= b and theta in [0, pi)."""
    a, b, theta = float(a), float(b), float(theta)
    if b > a:
      a, b, theta = b, a, theta + math.pi / 2
    return Ellipse(float(cx), float(cy), a, b, theta % math.pi)

  @staticmethod
  def from_cv2(box) -> Ellipse:
    """From `cv2.fitEllipse`'s ((cx, cy), (width, height), angle_deg): FULL axes."""
    (cx, cy), (w, h), ang = box
    return Ellipse.make(cx, cy, w / 2.0, h / 2.0, math.radians(ang))

  def to_cv2(self):
    """((cx, cy), (2a, 2b), angle_deg), e.g. for `cv2.ellipse`."""
    return (self.cx, self.cy), (2.0 * self.a, 2.0 * self.b), math.degrees(self.theta)

  @property
  def perimeter(self) -> float:
    return float(ramanujan_perimeter(self.a, self.b))

  @property
  def area(self) -> float:
    return math.pi * self.a * self.b

  def scaled(self, scale: float, offset_xy=(0.0, 0.0)) -> Ellipse:
    """The image of this ellipse under p -> p * scale + offset."""
    return Ellipse(self.cx * scale + offset_xy[0], self.cy * scale + offset_xy[1],
                   self.a * scale, self.b * scale, self.theta)

  def affine(self, scale_xy, offset_xy=(0.0, 0.0)) -> Ellipse:
    """The image of this ellipse under (x, y) -> (x * sx + ox, y * sy + oy), exactly.

    A per-axis scaling keeps an ellipse an ellipse, with new axes and angle:
    the singular values and left singular vectors of diag(sx, sy) R diag(a, b).
    """
    sx, sy = (float(v) for v in scale_xy)
    c, s = math.cos(self.theta), math.sin(self.theta)
    m = np.array([[sx * c * self.a, -sx * s * self.b], [sy * s * self.a, sy * c * self.b]])
    u, sv, _ = np.linalg.svd(m)
    return Ellipse.make(self.cx * sx + offset_xy[0], self.cy * sy + offset_xy[1],
                        sv[0], sv[1], math.atan2(u[1, 0], u[0, 0]))

  def to_original(self, g: Geometry) -> Ellipse:
    """Network-grid ellipse -> original-image ellipse (per-axis scales, pixel centres)."""
    return self.affine(*g.to_original_affine())

  def to_grid(self, g: Geometry) -> Ellipse:
    """Original-image ellipse -> network-grid ellipse (inverse of `to_original`)."""
    return self.affine(*g.to_grid_affine())

  def points(self, n: int = 360) -> np.ndarray:
    """`n` points (x, y) on the ellipse, equally spaced in the parameter."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    c, s = math.cos(self.theta), math.sin(self.theta)
    x = self.a * np.cos(t)
    y = self.b * np.sin(t)
    return np.stack([self.cx + c * x - s * y, self.cy + s * x + c * y], axis=-1)

  def conic(self) -> np.ndarray:
    """Coefficients (A, B, C, D, E, F) of A x^2 + B xy + C y^2 + D x + E y + F = 0."""
    c, s = math.cos(self.theta), math.sin(self.theta)
    ia, ib = 1.0 / self.a**2, 1.0 / self.b**2
    A = c * c * ia + s * s * ib
    B = 2.0 * c * s * (ia - ib)
    C = s * s * ia + c * c * ib
    D = -2.0 * A * self.cx - B * self.cy
    E = -B * self.cx - 2.0 * C * self.cy
    F = A * self.cx**2 + B * self.cx * self.cy + C * self.cy**2 - 1.0
    return np.array([A, B, C, D, E, F])


def rasterize(e: Ellipse, shape: tuple[int, int]) -> np.ndarray:
  """Filled ellipse as a uint8 {0,1} mask: pixels whose centre lies inside."""
  yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
  c, s = math.cos(e.theta), math.sin(e.theta)
  dx, dy = xx - e.cx, yy - e.cy
  u = c * dx + s * dy
  v = -s * dx + c * dy
  return ((u / e.a) ** 2 + (v / e.b) ** 2 <= 1.0).astype(np.uint8)


def ellipse_from_conic(coef) -> Ellipse | None:
  """Centre, semi-axes and angle of a conic; None if it is not a real ellipse."""
  A, B, C, D, E, F = (float(v) for v in coef)
  det = 4.0 * A * C - B * B
  if not np.isfinite(det) or det <= 0:
    return None
  cx = (B * E - 2.0 * C * D) / det
  cy = (B * D - 2.0 * A * E) / det
  f0 = A * cx * cx + B * cx * cy + C * cy * cy + D * cx + E * cy + F  # value at the centre
  lam, vec = np.linalg.eigh(np.array([[A, B / 2.0], [B / 2.0, C]]))
  if f0 == 0 or not np.all(-f0 / lam > 0):
    return None
  axes = np.sqrt(-f0 / lam)  # semi-axis along each eigenvector
  k = int(np.argmax(axes))
  theta = math.atan2(vec[1, k], vec[0, k])
  return Ellipse.make(cx, cy, axes[k], axes[1 - k], theta)


def _normalise(pts: np.ndarray):
  m = pts.mean(axis=0)
  s = np.sqrt(((pts - m) ** 2).sum(axis=1).mean() / 2.0) or 1.0
  return (pts - m) / s, m, s


def _direct_conic(pts: np.ndarray) -> np.ndarray | None:
  """Halir-Flusser direct ellipse fit on (already normalised) points."""
  x, y = pts[:, 0], pts[:, 1]
  d1 = np.stack([x * x, x * y, y * y], axis=1)
  d2 = np.stack([x, y, np.ones_like(x)], axis=1)
  s1, s2, s3 = d1.T @ d1, d1.T @ d2, d2.T @ d2
  try:
    t = -np.linalg.solve(s3, s2.T)
  except np.linalg.LinAlgError:
    return None
  m = s1 + s2 @ t
  m = np.stack([m[2] / 2.0, -m[1], m[0] / 2.0])  # inv(C1) @ m
  try:
    _, vec = np.linalg.eig(m)
  except np.linalg.LinAlgError:
    return None
  vec = np.real(vec)
  cond = 4.0 * vec[0] * vec[2] - vec[1] ** 2
  ok = np.flatnonzero(cond > 0)
  if ok.size == 0:
    return None
  a1 = vec[:, ok[0]]
  return np.concatenate([a1, t @ a1])


def _denormalise_conic(coef: np.ndarray, m: np.ndarray, s: float) -> np.ndarray:
  """Conic in normalised coordinates u = (p - m) / s -> conic in p."""
  A, B, C, D, E, F = coef
  mx, my = m
  A2, B2, C2 = A / s**2, B / s**2, C / s**2
  D2 = D / s - 2.0 * A2 * mx - B2 * my
  E2 = E / s - B2 * mx - 2.0 * C2 * my
  F2 = (F + A2 * mx * mx + B2 * mx * my + C2 * my * my
        - D / s * mx - E / s * my)
  return np.array([A2, B2, C2, D2, E2, F2])


def sampson_distance(coef, pts: np.ndarray) -> np.ndarray:
  """First-order geometric distance |Q(p)| / |grad Q(p)| of points to a conic."""
  A, B, C, D, E, F = coef
  x, y = pts[..., 0], pts[..., 1]
  q = A * x * x + B * x * y + C * y * y + D * x + E * y + F
  gx = 2.0 * A * x + B * y + D
  gy = B * x + 2.0 * C * y + E
  return np.abs(q) / np.maximum(np.sqrt(gx * gx + gy * gy), 1e-12)


def _sampson_batch(coefs: np.ndarray, pts: np.ndarray) -> np.ndarray:
  """`sampson_distance` of n points to I conics at once, as matrix products: (I, n)."""
  x, y = pts[:, 0], pts[:, 1]
  one = np.ones_like(x)
  q = coefs @ np.stack([x * x, x * y, y * y, x, y, one])
  gx = coefs[:, [0, 1, 3]] @ np.stack([2.0 * x, y, one])
  gy = coefs[:, [1, 2, 4]] @ np.stack([x, 2.0 * y, one])
  return np.abs(q) / np.maximum(np.sqrt(gx * gx + gy * gy), 1e-12)


def fit_direct(pts) -> Ellipse | None:
  """Algebraic least-squares ellipse through >= 5 points; None if degenerate."""
  pts = np.asarray(pts, np.float64).reshape(-1, 2)
  if len(pts) < 5:
    return None
  u, m, s = _normalise(pts)
  coef = _direct_conic(u)
  if coef is None:
    return None
  return ellipse_from_conic(_denormalise_conic(coef, m, s))


def _direct_conics(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Batched `_direct_conic`: (I, k, 2) point sets -> (I, 6) conics and an ok flag."""
  x, y = samples[..., 0], samples[..., 1]
  d1 = np.stack([x * x, x * y, y * y], axis=-1)
  d2 = np.stack([x, y, np.ones_like(x)], axis=-1)
  s1 = np.einsum("nki,nkj->nij", d1, d1)
  s2 = np.einsum("nki,nkj->nij", d1, d2)
  s3 = np.einsum("nki,nkj->nij", d2, d2)
  ok = np.abs(np.linalg.det(s3)) > 1e-12
  s3[~ok] = np.eye(3)
  t = -np.linalg.solve(s3, np.swapaxes(s2, 1, 2))
  m = s1 + s2 @ t
  m = np.stack([m[:, 2] / 2.0, -m[:, 1], m[:, 0] / 2.0], axis=1)
  ok &= np.isfinite(m).all(axis=(1, 2))
  m[~ok] = np.eye(3)
  _, vec = np.linalg.eig(m)
  vec = np.real(vec)                                        # (I, 3, 3), columns
  cond = 4.0 * vec[:, 0] * vec[:, 2] - vec[:, 1] ** 2       # (I, 3)
  k = np.argmax(cond > 0, axis=1)
  ok &= (cond > 0).any(axis=1)
  a1 = np.take_along_axis(vec, k[:, None, None].repeat(3, 1), axis=2)[..., 0]
  return np.concatenate([a1, np.einsum("nij,nj->ni", t, a1)], axis=1), ok


def fit_ransac(pts, *, threshold: float = 1.0, iterations: int = 200, sample_size: int = 6,
               seed: int = 0, min_inlier_fraction: float = 0.3,
               max_score_points: int = 128, refits: int = 5) -> Ellipse | None:
  """RANSAC over direct fits, scored by inliers within `threshold` px (Sampson).

  All `iterations` hypotheses are drawn from and scored on an evenly spaced
  subset of at most ~`max_score_points` points, at once (vectorised); the
  winner's inliers among all points are refitted, and refitted again on the
  inliers of that fit until the inlier set stops changing (`refits` times at
  most).
  The consensus set is refitted by direct least squares, then the inliers of
  that fit are refitted once more. Deterministic for a given seed. Falls back
  to the plain direct fit when too few points agree.
  """
  pts = np.asarray(pts, np.float64).reshape(-1, 2)
  n = len(pts)
  if n < 5:
    return None
  if n <= 2 * sample_size:
    return fit_direct(pts)
  u, m, s = _normalise(pts)
  sub = u[::max(1, n // max_score_points)]  # hypotheses drawn and scored on a subset
  rng = np.random.default_rng(seed)
  # Samples drawn with replacement: a repeated point leaves >= 5 distinct ones
  # (still one conic) or a degenerate sample that is flagged and skipped.
  idx = rng.integers(0, len(sub), (iterations, sample_size))
  coefs, ok = _direct_conics(sub[idx])
  d = _sampson_batch(coefs, sub)                            # (I, len(sub))
  counts = np.where(ok, (d < threshold / s).sum(axis=1), -1)
  best = int(np.argmax(counts))
  if counts[best] < max(5, min_inlier_fraction * len(sub)):
    return fit_direct(pts)
  inl = sampson_distance(coefs[best], u) < threshold / s
  e = fit_direct(pts[inl])
  # Local optimisation: refit on the inliers of the current fit until the
  # inlier set settles, so the result depends little on the winning sample.
  for _ in range(refits):
    if e is None:
      return None
    new = sampson_distance(e.conic(), pts) < threshold
    if new.sum() < max(5, min_inlier_fraction * n) or np.array_equal(new, inl):
      break
    inl, e = new, fit_direct(pts[new]) or e
  return e


def fit_cv2(pts) -> Ellipse | None:
  pts = np.asarray(pts, np.float32).reshape(-1, 2)
  if len(pts) < 5:
    return None
  return Ellipse.from_cv2(cv2.fitEllipse(pts))


def fit_ellipse(pts, method: str = "direct", **kwargs) -> Ellipse | None:
  if method == "direct":
    return fit_direct(pts)
  if method == "ransac":
    return fit_ransac(pts, **kwargs)
  if method == "cv2":
    return fit_cv2(pts)
  raise ValueError(f"unknown ellipse fit method {method!r}; known: {METHODS}")


def valid_box(g: Geometry | None, shape: tuple[int, int]) -> tuple[int, int, int, int]:
  """(y0, x0, y1, x1), exclusive end, of the region holding image data.

  `g` is a letterbox `Geometry`, or any placement with its own `valid_box`
  (e.g. `fbjax.evaluation.coarse_fine.CropGeometry`).
  """
  if g is None:
    return 0, 0, shape[0], shape[1]
  if hasattr(g, "valid_box"):
    return g.valid_box(shape)
  rh, rw = g.resized_hw
  oy, ox = g.offset_yx
  return oy, ox, oy + rh, ox + rw


def _shoelace(c: np.ndarray) -> float:
  y, x = c[:, 0], c[:, 1]
  return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def boundary_points(prob, level: float = 0.5, *, box=None, margin: float = 1.0):
  """Sub-pixel outline (x, y) of the largest region where `prob >= level`.

  `prob` is a probability map or a {0,1} mask (HxW). Returns (points, kept):
  all points of the outer outline of the region of largest area, and a bool
  array that is False for points within `margin` px of the edge of `box`
  (y0, x0, y1, x1; default the whole array), which are where the region was
  cut by the image border rather than bounded by the skull. Returns empty
  arrays when no pixel reaches `level`.
  """
  p = np.asarray(prob, np.float64)
  if p.ndim != 2:
    raise ValueError(f"expected an HxW map, got shape {p.shape}")
  y0, x0, y1, x1 = box if box is not None else (0, 0, p.shape[0], p.shape[1])
  q = np.full((p.shape[0] + 2, p.shape[1] + 2), -1.0)  # pad: closes contours at the edge
  q[1 + y0:1 + y1, 1 + x0:1 + x1] = p[y0:y1, x0:x1]
  contours = skmeasure.find_contours(q, level) if (q >= level).any() else []
  if not contours:
    return np.zeros((0, 2)), np.zeros((0,), bool)
  c = max(contours, key=_shoelace)  # the outline of the largest region
  yx = c - 1.0
  kept = ((yx[:, 0] > y0 - 0.5 + margin) & (yx[:, 0] < y1 - 0.5 - margin)
          & (yx[:, 1] > x0 - 0.5 + margin) & (yx[:, 1] < x1 - 0.5 - margin))
  return yx[:, ::-1].copy(), kept


def ellipse_from_mask(prob, method: str = "direct", *, level: float = 0.5, box=None,
                      min_points: int = 20, **fit_kwargs) -> Ellipse | None:
  """Ellipse fitted to the outline of the largest region of a mask/probability map.

  Points on the edge of the image region are left out (the ellipse is
  extrapolated there). None when the region is missing or too small.
  """
  pts, kept = boundary_points(prob, level, box=box)
  pts = pts[kept]
  if len(pts) < min_points:
    return None
  return fit_ellipse(pts, method, **fit_kwargs)
