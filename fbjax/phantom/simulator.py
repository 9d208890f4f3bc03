"""The fetal head phantom: B-mode images of the fetal brain with known truth.

`simulate(seed, index)` returns one image and everything true about it. It is
a deterministic function of (seed, index): every draw comes from
`np.random.Generator`s seeded by `np.random.SeedSequence` of those numbers
(no global random state), so any image can be regenerated alone.

Anatomy (mm, scaled by gestational age, GA 11-40 weeks)
  * Gestational age: drawn from `GA_QUANTILES_WEEKS`, the GA distribution of
    HC18's heads (their HC inverted through Hadlock's formula): a tenth below
    12.6 weeks, half at 18-21 weeks, a sixth above 26 weeks. Fetuses with a
    condition are drawn at GA >= `CONDITION_GA_MIN` (16 weeks), where the
    conditions' definitions (atrial width >= 10 mm, cisterna magna > 10 mm, a
    TCD below -3 SD) apply; the smallest heads are therefore all normal.
  * Head circumference (HC) from Hadlock et al. (1984):
    HC[cm] = -11.48 + 1.56 GA - 0.0002548 GA^3 (61 mm at 11.5 w, 151 at 18,
    201 at 22, 284 at 30, 346 at 40). Spread: the SD of HC by GA of the
    INTERGROWTH-21st fetal standards (Papageorghiou et al. 2014),
    SD = 1.98735 + 0.0136772 GA^3 - 0.00726264 GA^3 ln GA + 0.000976253 GA^3 (ln GA)^2
    (4.8 mm at 12 w, 6.9 at 18 w, 12.9 at 40 w). Normal heads lie within +-2 SD.
  * Cephalic index BPD/OFD 0.74-0.83. The head is an ellipse; `hc_mm`,
    `bpd_mm`, `ofd_mm` are its circumference (Ramanujan) and full axes along
    the skull's outer border, as in HC18's annotations.
  * Skull: bright ring 1.3-4.1 mm thick (thicker with GA) whose echo is
    strongest where the beam meets it at normal incidence; strong attenuation
    (acoustic shadow). Its echo follows GA (`SKULL_DB_GA`: the weakly
    ossified early skull echoes less), as HC18's ring / interior contrast does.
  * Brain: parenchyma, subarachnoid space, midline falx, cavum septi
    pellucidi (CSP); thalami and third ventricle (TT); frontal horns, lateral
    ventricle atrium (normal width 6.6 +- 1.4 mm) with echogenic choroid
    plexus (TV); cerebellum (transverse cerebellar diameter TCD = GA in mm
    up to 22 weeks, then 1.55 mm a week, about 50 mm at 40 weeks, approximating
    Chavez et al. 2004; SD 1 mm or 6 %) and cisterna magna (3-8 mm) (TC).
    Structures that are small in early heads (CSP, choroid plexus, cisterna
    magna) scale with HC below 20 weeks, the atrium below 18 (`early_scale`).

Conditions, their definitions and the planes that show them (a synthetic
fetus with a condition only yields images in which the condition is seen):

  normal                      all three planes (+ an occasional "other": a
                              parietal section above the ventricles)
  mild/moderate/severe        TV; atrial width 10-12 / 12-15 / > 15 mm
    ventriculomegaly          (drawn in 10.2-11.8, 12.2-14.8, 15.3-20)
  microcephaly                TT, TC, TV; HC < mean - 3 SD for GA (drawn at
                              -3.3 to -5 SD; SD above)
  cerebellar_hypoplasia       TC; TCD from 0.6 to (mean - 3.5 SD) for GA
  mega_cisterna_magna         TC; cisterna magna depth 11-16 mm (> 10 mm)
  absent_csp                  TT, TV; no CSP, frontal horns fused
  arachnoid_cyst              TT, TV; anechoic thin-walled cyst, 8-22 mm
  hydranencephaly             TT, TC, TV; hemispheres replaced by fluid,
                              thalami and cerebellum spared
  encephalocele               TT, TC; occipital skull defect with a sac

Image formation is in `fbjax.phantom.bmode` (scatterers x PSF, Rayleigh
envelope, attenuation and TGC, shadowing, reverberation, log compression,
convex sector); 2-3 independent speckle looks are averaged after log
compression (compounding). `clean` is the expected displayed value.

Pixel spacing: the field of view (FOV, the image width) is drawn so that the
head's OFD fills 45-72 % of it, as in HC18 (where the same fraction has
median 0.61), and only 32-52 % for heads below 100 mm HC (HC18 zooms out
less on them: median 0.41), within 40-240 mm: 0.05-0.3 mm per pixel on
HC18's 800-pixel-wide grid. On a `size`-pixel image `pixel_spacing_mm` =
FOV / size. The point-spread function follows the FOV (`PSF_*_FOV`):
scanners image small heads zoomed in, with higher-frequency settings.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import cv2
import numpy as np

from fbjax.core import labels
from fbjax.phantom import anatomy, bmode
from fbjax.phantom.anatomy import FLUID_DB, OTHER, TC, TT, TV, cover, defect, ellipse_d, paint

COND = {name: i for i, name in enumerate(labels.CONDITIONS)}

CONDITION_PLANES = {
    "normal": (TT, TC, TV, OTHER),
    "mild_ventriculomegaly": (TV,),
    "moderate_ventriculomegaly": (TV,),
    "severe_ventriculomegaly": (TV,),
    "microcephaly": (TT, TC, TV),
    "cerebellar_hypoplasia": (TC,),
    "mega_cisterna_magna": (TC,),
    "absent_csp": (TT, TV),
    "arachnoid_cyst": (TT, TV),
    "hydranencephaly": (TT, TC, TV),
    "encephalocele": (TT, TC),
}
assert tuple(CONDITION_PLANES) == labels.PHANTOM_CONDITIONS

ATRIAL_WIDTH_MM = {"mild_ventriculomegaly": (10.2, 11.8),
                   "moderate_ventriculomegaly": (12.2, 14.8),
                   "severe_ventriculomegaly": (15.3, 20.0)}
MICROCEPHALY_Z = (-5.0, -3.3)
MICROCEPHALY_CUTOFF_SD = 3.0
MEGA_CISTERNA_MM = (11.0, 16.0)
PLANE_SCALE = {TT: 1.0, TC: 0.99, TV: 0.985, OTHER: 0.88}  # head section size vs TT

# The index plan: images come in cycles of CYCLE; each cycle holds 14
# fetuses (groups): 4 normal fetuses with TT, TC and TV images (one also an
# "other" image) and one fetus per anomaly with 2 images. The order inside a
# cycle is shuffled per cycle. Any CYCLE consecutive indices starting at a
# multiple of CYCLE therefore hold every condition.
_LAYOUT = (
    [(s, "normal", k) for s in range(4) for k in range(3)] + [(0, "normal", 3)]
    + [(4 + j, c, k) for j, c in enumerate(labels.PHANTOM_CONDITIONS[1:]) for k in range(2)])
CYCLE = len(_LAYOUT)  # 33

_PLAN, _FETUS, _IMAGE, _SPECKLE = 1, 2, 3, 4  # seed-sequence domains


def hadlock_hc_mm(ga_weeks: float) -> float:
  """Mean HC for gestational age (Hadlock et al. 1984)."""
  g = ga_weeks
  return 10.0 * (-11.48 + 1.56 * g - 0.0002548 * g ** 3)


def hc_sd_mm(ga_weeks: float) -> float:
  """SD of HC for gestational age (INTERGROWTH-21st, Papageorghiou et al. 2014)."""
  g, lg = ga_weeks, math.log(ga_weeks)
  return 1.98735 + 0.0136772 * g ** 3 - 0.00726264 * g ** 3 * lg + 0.000976253 * g ** 3 * lg ** 2


# GA (weeks) at the quantiles 0, 0.05, ..., 1 of HC18's heads (the tuning
# half of its training patients, HC inverted through `hadlock_hc_mm`); GA is
# drawn by linear interpolation of this inverse CDF.
GA_QUANTILES_WEEKS = (11.2, 12.2, 12.6, 13.0, 14.3, 17.9, 18.7, 19.1, 19.4, 19.6, 19.7, 19.9,
                      20.1, 20.3, 20.5, 20.9, 22.3, 26.2, 29.8, 32.3, 40.0)
CONDITION_GA_MIN = 16.0
EARLY_GA = 20.0     # below it, CSP, choroid and cisterna magna scale with HC
# The atrium keeps its 6-8 mm width from 18 weeks on; in smaller heads it
# scales with HC (it sits at 0.4 of the half-BPD, beside the CSP).
ATRIUM_GA = 18.0


def ga_quantile(u: float) -> float:
  """GA (weeks) at quantile u of the phantom's GA distribution."""
  q = np.linspace(0.0, 1.0, len(GA_QUANTILES_WEEKS))
  return float(np.interp(u, q, GA_QUANTILES_WEEKS))


def ga_cdf(ga_weeks: float) -> float:
  """Fraction of the phantom's fetuses below `ga_weeks` (inverse of `ga_quantile`)."""
  q = np.linspace(0.0, 1.0, len(GA_QUANTILES_WEEKS))
  return float(np.interp(ga_weeks, GA_QUANTILES_WEEKS, q))


def early_scale(ga_weeks: float, ref_weeks: float = EARLY_GA) -> float:
  """Size of a small intracranial structure relative to `ref_weeks`: HC ratio, <= 1."""
  return min(1.0, hadlock_hc_mm(ga_weeks) / hadlock_hc_mm(ref_weeks))


def tcd_mean_mm(ga_weeks: float) -> float:
  """Mean transverse cerebellar diameter: GA in mm to 22 weeks, then 1.55 mm a week."""
  return ga_weeks if ga_weeks <= 22.0 else 22.0 + 1.55 * (ga_weeks - 22.0)


def tcd_sd_mm(ga_weeks: float) -> float:
  return max(1.0, 0.06 * tcd_mean_mm(ga_weeks))


def microcephaly_cutoff_mm(ga_weeks: float) -> float:
  """HC below which a head is microcephalic: mean - 3 SD."""
  return hadlock_hc_mm(ga_weeks) - MICROCEPHALY_CUTOFF_SD * hc_sd_mm(ga_weeks)


def ramanujan_mm(a: float, b: float) -> float:
  """Circumference of an ellipse with semi-axes a, b (Ramanujan's first approximation)."""
  return math.pi * (3.0 * (a + b) - math.sqrt((3.0 * a + b) * (a + 3.0 * b)))


def _rng(*key: int) -> np.random.Generator:
  return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(k) for k in key])))


# ---------------------------------------------------------------------------
# Plan: (seed, index) -> fetus, condition, plane


@functools.lru_cache(maxsize=4096)
def _cycle_order(seed: int, cycle: int) -> tuple[int, ...]:
  return tuple(_rng(seed, _PLAN, cycle).permutation(CYCLE).tolist())


def _fetus_planes(seed: int, cycle: int, slot: int, condition: str) -> tuple[int, ...]:
  allowed = CONDITION_PLANES[condition]
  if condition == "normal":
    return allowed
  if len(allowed) == 1:
    return allowed * 2
  order = _rng(seed, _PLAN, cycle, 1000 + slot).permutation(len(allowed))
  return tuple(allowed[i] for i in order)


def plan(seed: int, index: int) -> dict:
  """Which fetus, condition and plane image `index` of stream `seed` shows."""
  if index < 0:
    raise ValueError(f"index must be >= 0, got {index}")
  cycle, pos = divmod(int(index), CYCLE)
  slot, condition, k = _LAYOUT[_cycle_order(int(seed), cycle)[pos]]
  plane = _fetus_planes(int(seed), cycle, slot, condition)[k]
  return {"cycle": cycle, "slot": slot, "condition": condition, "plane": plane,
          "group": f"synth-s{seed}-c{cycle}-f{slot}"}


def plan_table(seed: int, num: int, start: int = 0) -> dict[str, np.ndarray]:
  """Plane and condition indices (into labels.PLANES / CONDITIONS) and groups of a range."""
  rows = [plan(seed, i) for i in range(start, start + num)]
  return {"plane": np.array([r["plane"] for r in rows], np.int64),
          "condition": np.array([COND[r["condition"]] for r in rows], np.int64),
          "group": np.array([r["group"] for r in rows])}


# ---------------------------------------------------------------------------
# The fetus: sizes in mm, fixed for all its images


@dataclasses.dataclass(frozen=True)
class Fetus:
  condition: str
  ga_weeks: float
  hc_mm: float            # HC of the trans-thalamic section
  cephalic_index: float
  skull_mm: float
  atrial_width_mm: float
  tcd_mm: float
  cisterna_magna_mm: float
  csp_width_mm: float
  csp_length_mm: float
  choroid_mm: float
  brain_db: float
  skull_db: float
  cyst: tuple[float, float, float]       # (U, V) in inner-head units, radius mm
  defect_mm: float                        # encephalocele: skull gap width
  sac_mm: float                           # encephalocele: sac radius
  falx_kept: bool                         # hydranencephaly: remnant falx seen


def _trunc_normal(rng, mean, sd, lo, hi):
  return float(np.clip(mean + sd * rng.standard_normal(), lo, hi))


def make_fetus(seed: int, cycle: int, slot: int, condition: str) -> Fetus:
  rng = _rng(seed, _FETUS, cycle, slot)
  lo = 0.0 if condition == "normal" else ga_cdf(CONDITION_GA_MIN)
  ga = ga_quantile(rng.uniform(lo, 1.0))
  mean, sd = hadlock_hc_mm(ga), hc_sd_mm(ga)
  k = early_scale(ga)
  z = float(rng.uniform(*MICROCEPHALY_Z)) if condition == "microcephaly" else \
      _trunc_normal(rng, 0.0, 1.0, -2.0, 2.0)
  aw = early_scale(ga, ATRIUM_GA) * _trunc_normal(rng, 6.6, 1.4, 4.0, 9.5)
  if condition in ATRIAL_WIDTH_MM:
    aw = float(rng.uniform(*ATRIAL_WIDTH_MM[condition]))
  t_mean, t_sd = tcd_mean_mm(ga), tcd_sd_mm(ga)
  tcd = _trunc_normal(rng, t_mean, t_sd, t_mean - 2.0 * t_sd, t_mean + 2.0 * t_sd)
  if condition == "cerebellar_hypoplasia":
    tcd = float(rng.uniform(0.6 * t_mean, t_mean - 3.5 * t_sd))
  cm = k * float(rng.uniform(3.0, 8.0))
  if condition == "mega_cisterna_magna":
    cm = float(rng.uniform(*MEGA_CISTERNA_MM))
  cyst = (float(rng.uniform(-0.35, 0.35)), float(rng.choice([-1, 1]) * rng.uniform(0.25, 0.45)),
          float(rng.uniform(4.0, 11.0)))
  skull_db = float(rng.uniform(*SKULL_DB)) + float(np.interp(ga, *SKULL_DB_GA))
  return Fetus(
      condition=condition, ga_weeks=ga, hc_mm=mean + z * sd,
      cephalic_index=float(rng.uniform(0.74, 0.83)),
      skull_mm=float(rng.uniform(1.8, 2.6) + 0.07 * (ga - 18.0)),
      atrial_width_mm=aw, tcd_mm=tcd, cisterna_magna_mm=cm,
      csp_width_mm=k * float(rng.uniform(2.5, 5.0)),
      csp_length_mm=k * float(rng.uniform(7.0, 12.0)),
      choroid_mm=k * float(rng.uniform(4.5, 6.5)),
      brain_db=float(rng.uniform(-10.0, -5.0)) + float(np.interp(ga, *BRAIN_DB_GA)),
      skull_db=skull_db,
      cyst=cyst, defect_mm=float(rng.uniform(7.0, 15.0)), sac_mm=float(rng.uniform(8.0, 16.0)),
      falx_kept=bool(rng.random() < 0.6))


def semi_axes(hc_mm: float, ci: float) -> tuple[float, float]:
  """Outer semi-axes (a = OFD/2, b = BPD/2) of an ellipse with circumference hc and b/a = ci."""
  a = hc_mm / ramanujan_mm(1.0, ci)
  return a, a * ci


# ---------------------------------------------------------------------------
# The scene: one acquisition of one plane of a fetus


@dataclasses.dataclass(frozen=True)
class Scene:
  plane: int
  a_mm: float             # outer semi-axes of this section
  b_mm: float
  skull_mm: float
  center_mm: tuple[float, float]   # (x, z) of the head centre
  angle: float            # rotation of the OFD axis from the x axis, radians
  flip: float             # +1: forehead towards +u, -1: mirrored
  spacing_mm: float
  probe: bmode.Probe
  wall_mm: float          # maternal abdominal wall thickness
  psf_mm: tuple[float, float]   # (axial, lateral at mid-depth) Gaussian sigma
  top_db: float
  dr_db: float
  tgc: tuple[float, float, float]
  reverb_db: float
  overlays: bool
  looks: int              # display-domain compounding of independent speckle looks


LOOKS = (2, 3)                # compounded looks per image
FOV_MM = (40.0, 240.0)        # image width: 0.05-0.3 mm per pixel on an 800-px grid
# OFD / FOV ranges: heads of HC <= 100 mm are imaged less zoomed than larger
# ones (HC18: median 0.41 against 0.61); linear in HC in between.
OFD_FRACTION_HC_MM = (100.0, 150.0)
OFD_FRACTION = ((0.32, 0.52), (0.45, 0.72))
AXIAL_SIGMA_SAMPLES = 0.9     # PSF sigma in polar samples
LATERAL_SIGMA_SAMPLES = 1.6
# Image-formation settings matched to HC18 by `benchmarks/phantom.py --subset tune`
# (HC18 patients of the tuning half, phantom seeds 100, 103 and 104); reported on
# the other patients and seeds 101-102.
PSF_AXIAL_MM = (0.40, 0.57)   # Gaussian sigma ranges at the reference FOV
PSF_LATERAL_MM = (1.2, 1.85)
TOP_DB_OFFSET = -1.0          # added to the level displayed white (darker images)
DR_DB = (33, 47)              # displayed dynamic range (dB), drawn as an integer in [lo, hi)
SKULL_DB = (7.0, 13.0)        # skull backscatter re. soft tissue at normal incidence
# Maternal and fetal soft tissue around the head, dB re. the TGC's reference
# (HC18's surroundings of the head are about as grey as the brain).
TISSUE_DB = (-6.5, -2.5)
SKULL_OBLIQUE = 0.25          # skull echo at grazing incidence, relative to normal incidence
# dB added to SKULL_DB by GA (weeks; linear between the knots): the weakly
# ossified early skull echoes less; the 40-week knot matches the ring / interior
# contrast of HC18's largest heads.
SKULL_DB_GA = ((12.0, 21.0, 40.0), (-4.0, 0.0, -6.0))
# The early brain is less echogenic (large ventricles, thin mantle): dB added
# to the parenchyma's backscatter by GA.
BRAIN_DB_GA = ((12.0, 18.0), (-6.0, -3.5))
# Scanners zoom in on small heads with higher-frequency settings: the PSF
# sigmas are multiplied by a factor of the FOV (mm, linear between the knots;
# FOV in mm, so the same scene at every display size), and the level shown
# white moves with it (dB added to TOP_DB_OFFSET).
PSF_FOV_MM = (60.0, 108.0, 180.0)
PSF_AXIAL_FOV = (0.92, 1.0, 1.0)
PSF_LATERAL_FOV = (0.50, 1.05, 1.4)
TOP_DB_FOV = (-2.0, -3.0, -2.5)


def make_scene(rng: np.random.Generator, fe: Fetus, plane: int, size: int,
               overlays: bool | None) -> Scene:
  scale = PLANE_SCALE[plane] * (1.0 + 0.01 * rng.standard_normal())
  a, b = semi_axes(fe.hc_mm * scale, fe.cephalic_index)
  t = fe.skull_mm
  hc = ramanujan_mm(a, b)
  w = float(np.clip((hc - OFD_FRACTION_HC_MM[0]) / (OFD_FRACTION_HC_MM[1] - OFD_FRACTION_HC_MM[0]),
                    0.0, 1.0))
  lo, hi = ((1 - w) * x + w * y for x, y in zip(*OFD_FRACTION, strict=True))
  fov = min(max(2.0 * a / rng.uniform(lo, hi), FOV_MM[0]), FOV_MM[1])
  spacing = fov / size
  ang = rng.uniform(-0.6, 0.6) if rng.random() < 0.85 else rng.uniform(-1.57, 1.57)
  flip = float(rng.choice([-1.0, 1.0]))
  c, s = math.cos(ang), math.sin(ang)
  hx, hz = math.hypot(a * c, b * s), math.hypot(a * s, b * c)
  margin = 3.0 * spacing
  radius = rng.uniform(30.0, 60.0)
  face_z = rng.uniform(-0.04, 0.03) * fov
  wall = rng.uniform(5.0, 0.15 * fov)
  z_lo = max(face_z + wall + 2.0 + hz, hz + margin)
  z_hi = max(fov - hz - margin, z_lo)
  zc = rng.uniform(z_lo, z_hi) if z_hi > z_lo else z_lo
  x_slack = max(0.0, fov / 2 - hx - margin)
  xc = fov / 2 + rng.uniform(-0.8, 0.8) * x_slack
  apex_x = fov / 2 + rng.uniform(-0.06, 0.06) * fov
  half = rng.uniform(0.55, 0.75)
  apex_z = face_z - radius
  corners = [math.hypot(x - apex_x, fov - apex_z) for x in (0.0, fov)]
  depth = max(corners) - radius + 2 * spacing
  r_mid = radius + 0.5 * depth
  # PSF: Gaussian sigmas (axial, lateral at mid-depth), matched to the grain of
  # HC18 images by head-size tercile at 800 and 256 px (benchmarks/phantom.py).
  dr_db = float(rng.integers(*DR_DB))
  psf = (rng.uniform(*PSF_AXIAL_MM) * float(np.interp(fov, PSF_FOV_MM, PSF_AXIAL_FOV)),
         rng.uniform(*PSF_LATERAL_MM) * float(np.interp(fov, PSF_FOV_MM, PSF_LATERAL_FOV)))
  top_db = float(np.interp(fov, PSF_FOV_MM, TOP_DB_FOV)) + TOP_DB_OFFSET
  # The polar grid resolves the PSF whatever the display size: sampling in mm
  # is set by the PSF, and coarser displays average it down (see _render).
  n_r = int(math.ceil(depth / (psf[0] / AXIAL_SIGMA_SAMPLES))) + 1
  n_t = int(math.ceil(2 * half * r_mid / (psf[1] / LATERAL_SIGMA_SAMPLES))) + 1
  probe = bmode.Probe(apex_x, apex_z, radius, depth, half, n_r, n_t)
  return Scene(plane=plane, a_mm=a, b_mm=b, skull_mm=t, center_mm=(xc, zc), angle=ang,
               flip=flip, spacing_mm=spacing, probe=probe, wall_mm=wall, psf_mm=psf,
               top_db=dr_db * rng.uniform(0.55, 0.68) + top_db, dr_db=dr_db,
               tgc=(rng.uniform(-4, 4), rng.uniform(0, 2.5), rng.uniform(0, 2 * math.pi)),
               reverb_db=rng.uniform(-12.0, -4.0),
               overlays=bool(rng.random() < 0.5) if overlays is None else bool(overlays),
               looks=int(rng.integers(LOOKS[0], LOOKS[1] + 1)))


def _head_frame(sc: Scene, x, z):
  c, s = math.cos(sc.angle), math.sin(sc.angle)
  dx, dz = x - np.float32(sc.center_mm[0]), z - np.float32(sc.center_mm[1])
  return np.float32(sc.flip) * (c * dx + s * dz), -s * dx + c * dz


def _smooth_noise(rng, shape, cells=(5, 7)):
  """Smooth random field, zero mean, unit-ish std, on a grid of `shape`."""
  small = rng.standard_normal(cells).astype(np.float32)
  return cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def _backscatter(rng, fe: Fetus, sc: Scene, size: int):
  """Backscatter (dB) and attenuation (dB/mm, two-way, re. tissue) on the polar grid."""
  pr = sc.probe
  r, th = pr.polar_grid()
  shape = (pr.n_r, pr.n_t)
  # head coordinates of the polar samples: u = u0 + r sin(theta + angle), ...
  u0, v0 = _head_frame(sc, np.float32(pr.apex_x_mm), np.float32(pr.apex_z_mm))
  u = np.float32(u0) + r * (np.float32(sc.flip) * np.sin(th + np.float32(sc.angle)))
  v = np.float32(v0) + r * np.cos(th + np.float32(sc.angle))
  a, b, t = sc.a_mm, sc.b_mm, sc.skull_mm
  edge = max(pr.dr_mm, (pr.radius_mm + 0.5 * pr.depth_mm) * pr.dtheta)
  d_out = ellipse_d(u, v, 0.0, 0.0, a, b)
  # maternal tissue (two scales of texture and a few bright interfaces such
  # as the uterine wall), amniotic fluid pockets, a fluid halo around the head
  db = 3.0 * _smooth_noise(rng, shape) + 2.0 * _smooth_noise(rng, shape, (12, 16))
  db += np.float32(rng.uniform(*TISSUE_DB))
  x, z = pr.polar_xz()
  fov = sc.spacing_mm * size
  for _ in range(int(rng.integers(1, 4))):
    cx, cz = rng.uniform(-0.5, 1.5) * fov, rng.uniform(-0.5, 1.5) * fov
    rad = math.hypot(cx - rng.uniform(0, fov), cz - rng.uniform(0, fov))
    d = np.abs(np.sqrt((x - np.float32(cx)) ** 2 + (z - np.float32(cz)) ** 2) - np.float32(rad))
    part = np.clip(_smooth_noise(rng, shape, (3, 3)), 0.0, 1.0)   # arcs, not whole circles
    paint(db, cover(d - rng.uniform(0.4, 1.0), edge) * part, np.float32(rng.uniform(4.0, 8.0)))
  pockets = _smooth_noise(rng, shape, (4, 5))
  paint(db, np.clip(2.0 * (pockets - 0.9), 0, 1), FLUID_DB)
  halo = rng.uniform(1.5, 10.0) * (1.0 + 0.7 * _smooth_noise(rng, shape, (3, 4)))
  paint(db, cover(d_out - halo, 2.0), FLUID_DB)
  # abdominal wall: skin, fat, fascia, muscle; slightly tilted layers
  w = sc.wall_mm
  tilt = np.float32(rng.uniform(-4.0, 4.0)) * th
  rows = min(pr.n_r, int((w + 1.5 + 4.0 * pr.half_angle) / pr.dr_mm) + 2)
  depth = (r[:rows] - np.float32(pr.radius_mm)) + tilt
  knots = np.array([0, 0.6, 1.0, 0.35 * w, 0.4 * w, 0.55 * w, 0.62 * w, w - 0.8, w, w + 1.5])
  vals = np.array([8, 8, -6, -6, 6, -2, 4, 2, 8, 0], np.float32) + rng.normal(0, 1.5, 10)
  wall = np.interp(depth, knots, vals).astype(np.float32)
  paint(db[:rows], (depth < w + 1.5).astype(np.float32), wall)
  # the head
  sac = sc.skull_mm + fe.sac_mm * 2.2 if fe.condition == "encephalocele" else 1.0
  idx = np.flatnonzero(d_out < sac)
  hu, hv = u.reshape(-1)[idx], v.reshape(-1)[idx]
  hdb = db.reshape(-1)[idx]
  ai, bi = a - t, b - t
  d_in = ellipse_d(hu, hv, 0.0, 0.0, ai, bi)
  d_o = d_out.reshape(-1)[idx]
  texture = _smooth_noise(rng, shape, (6, 8)).reshape(-1)[idx]
  skull = np.clip(cover(d_o, edge) - cover(d_in, edge), 0.0, 1.0)
  if fe.condition == "encephalocele":
    skull *= 1.0 - defect(hu, hv, a, b, fe.defect_mm)
    d_sac = ellipse_d(hu, hv, -(a + 0.55 * fe.sac_mm), 0.0, fe.sac_mm, 0.9 * fe.sac_mm)
    paint(hdb, cover(d_sac, edge), fe.brain_db + 8.0)        # skin-covered sac
    paint(hdb, cover(d_sac + 0.8, edge), FLUID_DB + 3.0)
    neck = cover(ellipse_d(hu, hv, -a, 0.0, 0.45 * fe.sac_mm + t, 0.5 * fe.defect_mm), edge)
    paint(hdb, neck * cover(d_sac + 0.8, edge), fe.brain_db)  # herniated brain
  paint(hdb, cover(d_in, edge), anatomy.brain(fe, sc.plane, hu, hv, ai, bi, texture, edge))
  # skull: brightest at normal incidence to the beam
  ca, sa = math.cos(sc.angle), math.sin(sc.angle)
  nu, nv = sc.flip * hu / (a * a), hv / (b * b)
  nx, nz = ca * nu - sa * nv, sa * nu + ca * nv
  tt = np.broadcast_to(th, shape).reshape(-1)[idx]
  cosi = np.abs(nx * np.sin(tt) + nz * np.cos(tt)) / (np.sqrt(nx * nx + nz * nz) + 1e-9)
  skull_db = fe.skull_db + 10.0 * np.log10(SKULL_OBLIQUE + (1.0 - SKULL_OBLIQUE) * cosi * cosi)
  paint(hdb, skull, skull_db)
  db.reshape(-1)[idx] = hdb
  # attenuation relative to the TGC's soft tissue: bone shadows, fluid enhances
  att = np.where(db < FLUID_DB + 10.0, np.float32(-0.06), np.float32(0.0))
  sk = np.zeros(shape[0] * shape[1], np.float32)
  sk[idx] = skull
  sk = sk.reshape(shape)
  att += np.float32(rng.uniform(1.0, 2.0)) * sk
  return db, att, sk


def _render(rng: np.random.Generator, speckle_rng: np.random.Generator, fe: Fetus, sc: Scene,
            size: int, homogeneous: bool = False):
  pr = sc.probe
  dr = pr.dr_mm
  if homogeneous:
    db = np.zeros((pr.n_r, pr.n_t), np.float32)
    gain_db = np.zeros_like(db)
    sk = db
  else:
    db, att, sk = _backscatter(rng, fe, sc, size)
    r, _ = pr.polar_grid()
    depth = (r - np.float32(pr.radius_mm)) / np.float32(pr.depth_mm)
    g1, g2, ph = sc.tgc
    tgc = g1 * (depth - 0.5) + g2 * np.sin(2.5 * math.pi * depth + ph)
    gain_db = tgc - np.cumsum(att, axis=0) * np.float32(dr)
  back = np.exp(db * np.float32(math.log(10) / 10))
  gain = np.exp(gain_db.astype(np.float32) * np.float32(math.log(10) / 10))
  # incoherent additive clutter: near-field reverberation, haze under the
  # near skull wall, electronic noise (added in the echo domain, so the
  # echo stays circular Gaussian and the clean image stays exact)
  clutter = np.zeros_like(back)
  if not homogeneous:
    clutter += np.float32(10 ** ((sc.top_db - sc.dr_db - 4) / 10))
    r, _ = pr.polar_grid()
    d = r - np.float32(pr.radius_mm)
    rev = 10 ** (sc.reverb_db / 10) * np.exp(-d / np.float32(0.35 * sc.wall_mm + 2.0))
    band = 1.0 + 0.8 * np.cos(2 * math.pi * d / np.float32(0.5 * sc.wall_mm + 1.0)) ** 2
    clutter = clutter + (rev * band).astype(np.float32)
    # haze starts half-way through the near skull wall, located to a fraction
    # of a sample (a whole-sample onset would stripe the image beam by beam)
    through = np.cumsum(sk, axis=0) * np.float32(dr)       # mm of bone crossed
    half = np.float32(0.5 * sc.skull_mm)
    k = np.argmax(through >= half, axis=0)
    hit = through[-1] >= half
    cols = np.arange(pr.n_t)
    prev = through[np.maximum(k - 1, 0), cols]
    step = np.maximum(through[k, cols] - prev, 1e-6)
    onset = (k - 1 + np.clip((half - prev) / step, 0.0, 1.0)) * dr
    past = np.arange(pr.n_r, dtype=np.float32)[:, None] * np.float32(dr) - onset[None, :]
    haze = np.where(hit[None, :] & (past > 0), np.exp(-past / 6.0), 0.0).astype(np.float32)
    clutter += haze * np.float32(10 ** ((fe.brain_db + 4.0) / 10))
  # attenuation acts on each scatterer's echo, before the PSF sums them
  back = back * gain + clutter
  sr = sc.psf_mm[0] / dr
  r_mid = pr.radius_mm + 0.5 * pr.depth_mm
  st = sc.psf_mm[1] / (r_mid * pr.dtheta)
  return bmode.echo(speckle_rng, back, sr, st, looks=sc.looks)


def _masks(sc: Scene, fe: Fetus, size: int):
  c = np.arange(size, dtype=np.float32) * np.float32(sc.spacing_mm)
  u, v = _head_frame(sc, c[None, :], c[:, None])
  a, b, t = sc.a_mm, sc.b_mm, sc.skull_mm
  head = (u / a) ** 2 + (v / b) ** 2 <= 1.0
  brain = (u / (a - t)) ** 2 + (v / (b - t)) ** 2 <= 1.0
  skull = head & ~brain
  if fe.condition == "encephalocele":
    skull &= defect(u, v, a, b, fe.defect_mm) < 0.5
  return head.astype(np.uint8), skull.astype(np.uint8), brain.astype(np.uint8)


# ---------------------------------------------------------------------------
# Overlays burned into clinical images (never in `clean`)


def _overlays(rng: np.random.Generator, img: np.ndarray, sc: Scene, info: dict) -> None:
  size = img.shape[0]
  fs = size / 640.0
  col = int(rng.integers(190, 256))
  font = cv2.FONT_HERSHEY_SIMPLEX
  lines = [f"GA {int(info['ga_weeks'])}w{int((info['ga_weeks'] % 1) * 7)}d",
           f"{rng.choice(['C1-5', 'RAB6', 'C2-9', 'AB2-7'])} {rng.uniform(2.5, 6):.1f}MHz",
           f"Gn {int(rng.integers(-8, 9))}  DR {int(sc.dr_db)}",
           f"FR {int(rng.integers(12, 40))}Hz"]
  y = int(14 * fs) + 2
  for line in lines[: int(rng.integers(1, len(lines) + 1))]:
    cv2.putText(img, line, (int(4 * fs) + 1, y), font, 0.45 * fs, col, 1, cv2.LINE_AA)
    y += int(16 * fs) + 1
  if rng.random() < 0.7:  # grey-scale bar
    h = int(size * 0.3)
    bar = np.linspace(255, 0, h).astype(np.uint8)[:, None]
    x0 = size - max(3, int(10 * fs)) - 2
    img[int(0.1 * size):int(0.1 * size) + h, x0:x0 + max(2, int(6 * fs))] = bar
  if rng.random() < 0.7:  # depth ticks every 10 mm
    step = 10.0 / sc.spacing_mm
    for k in range(1, int(size / step) + 1):
      yy = int(round(k * step))
      cv2.line(img, (size - 2 - max(2, int(6 * fs)), yy), (size - 2, yy), col, 1)
  if rng.random() < 0.6:  # calipers: BPD markers and a dotted HC ellipse
    xc, zc = (p / sc.spacing_mm for p in sc.center_mm)
    c, s = math.cos(sc.angle), math.sin(sc.angle)
    b = sc.b_mm / sc.spacing_mm
    for sgn in (-1, 1):
      p = (int(round(xc - sgn * b * s)), int(round(zc + sgn * b * c)))
      cv2.drawMarker(img, p, col, cv2.MARKER_CROSS, max(3, int(12 * fs)), 1)
    if rng.random() < 0.6:
      a = sc.a_mm / sc.spacing_mm
      pts = cv2.ellipse2Poly((int(xc), int(zc)), (int(a), int(b)), int(math.degrees(sc.angle)),
                             0, 360, 6)
      for q in pts[::2]:
        cv2.circle(img, (int(q[0]), int(q[1])), 0, col, -1)
    txt = f"HC {info['hc_mm']:.1f}mm  BPD {info['bpd_mm']:.1f}mm"
    cv2.putText(img, txt, (int(4 * fs) + 1, size - int(6 * fs) - 2), font, 0.45 * fs, col, 1,
                cv2.LINE_AA)


# ---------------------------------------------------------------------------
# Public API


def _resolve(seed: int, index: int, plane, condition) -> tuple[dict, str, int]:
  p = plan(seed, index)
  if isinstance(plane, str):
    plane = labels.plane_index(plane)
  if isinstance(condition, (int, np.integer)):
    condition = labels.CONDITIONS[int(condition)]
  if condition is not None and condition not in CONDITION_PLANES:
    raise ValueError(f"the phantom has no condition {condition!r}; "
                     f"it simulates {labels.PHANTOM_CONDITIONS}")
  if plane is not None and not 0 <= int(plane) < len(labels.PLANES):
    raise ValueError(f"plane index {plane} out of range for {labels.PLANES}")
  cond = condition
  if cond is None:
    cond = p["condition"] if plane is None or plane in CONDITION_PLANES[p["condition"]] \
        else "normal"
  if plane is None:
    allowed = CONDITION_PLANES[cond]
    plane = p["plane"] if p["plane"] in allowed else allowed[index % len(allowed)]
  plane = int(plane)
  if plane not in CONDITION_PLANES[cond]:
    shown = [labels.PLANES[i] for i in CONDITION_PLANES[cond]]
    raise ValueError(f"{cond} is not shown in the {labels.PLANES[plane]} plane "
                     f"(the phantom shows it in {shown})")
  return p, cond, plane


def simulate(seed: int, index: int, *, size: int = 256, plane: int | str | None = None,
             condition: int | str | None = None, overlays: bool | None = None) -> dict:
  """Image `index` of the phantom stream `seed`, with its truth.

  `plane` / `condition` override the index plan (names or indices into
  `labels.PLANES` / `labels.CONDITIONS`); a combination the phantom does not
  show (e.g. ventriculomegaly in TC) raises ValueError. `overlays`: None
  draws text/caliper overlays in about half of the images.

  Returns `image`, `clean` (uint8 size x size; `clean` is the expectation of
  the speckled image, without overlays), `head_mask`, `skull_mask`,
  `brain_mask` (uint8 {0, 1}), `plane`, `condition`, `abnormal` (ints),
  `ga_weeks`, `pixel_spacing_mm`, `hc_mm`, `bpd_mm`, `ofd_mm`,
  `atrial_width_mm` (TV only, else NaN), `tcd_mm` (TC only, else NaN) and the
  strings `id` and `group` (images of one synthetic fetus share a group).
  """
  return _simulate(seed, index, size=size, plane=plane, condition=condition,
                   overlays=overlays)


def _setup(seed, index, size, plane, condition, overlays):
  if size < 32:
    raise ValueError(f"size must be >= 32 pixels, got {size}")
  p, cond, pl = _resolve(seed, index, plane, condition)
  fe = make_fetus(seed, p["cycle"], p["slot"], cond)
  rng = _rng(seed, _IMAGE, index)
  sc = make_scene(rng, fe, pl, size, overlays)
  return p, fe, sc, rng


def _simulate(seed, index, *, size, plane, condition, overlays, speckle: int = 0) -> dict:
  """`simulate`, with a choice of speckle realisation (`speckle`; 0 is simulate's)."""
  p, fe, sc, rng = _setup(seed, index, size, plane, condition, overlays)
  powers, mean = _render(rng, _rng(seed, _SPECKLE, index, speckle), fe, sc, size)
  maps = sc.probe.scan_maps(size, sc.spacing_mm)
  # display values, and their expectation; both then go through the same
  # linear anti-aliasing and scan conversion, which preserve expectations
  # compounding: the displayed value is the mean of the looks' log-compressed
  # values (each look is fully developed speckle; the mean has the same
  # expectation and a sqrt(looks) smaller spread, like spatial compounding)
  y = bmode.display(powers[0], sc.top_db, sc.dr_db)
  for look in powers[1:]:
    y += bmode.display(look, sc.top_db, sc.dr_db)
  y = bmode.antialias(y * np.float32(1.0 / len(powers)), sc.probe, sc.spacing_mm)
  e = bmode.antialias(bmode.expected_display(mean, sc.top_db, sc.dr_db), sc.probe,
                      sc.spacing_mm)
  both = bmode.scan_convert(np.dstack([y, e]), maps)   # one 2-channel remap
  image, clean = bmode.to_uint8(both[..., 0]), bmode.to_uint8(both[..., 1])
  head, skull, brain = _masks(sc, fe, size)
  nan = float("nan")
  pl = sc.plane
  out = {
      "id": f"synth-s{seed}-{index:07d}", "group": p["group"],
      "image": image, "clean": clean, "head_mask": head, "skull_mask": skull,
      "brain_mask": brain, "plane": pl, "condition": COND[fe.condition],
      "abnormal": int(fe.condition != "normal"), "ga_weeks": fe.ga_weeks,
      "pixel_spacing_mm": sc.spacing_mm,
      "hc_mm": ramanujan_mm(sc.a_mm, sc.b_mm), "bpd_mm": 2.0 * sc.b_mm, "ofd_mm": 2.0 * sc.a_mm,
      "atrial_width_mm": fe.atrial_width_mm if pl == TV else nan,
      "tcd_mm": fe.tcd_mm if pl == TC else nan,
  }
  if sc.overlays:
    _overlays(rng, image, sc, out)
  return out


def envelope(seed: int, index: int, *, size: int = 256, homogeneous: bool = True):
  """The echo envelope |z| before log compression, on the probe's polar grid.

  With `homogeneous=True` the anatomy is replaced by uniform tissue (same
  probe, PSF and scatterer statistics as image `index`), without attenuation,
  TGC or clutter: fully developed speckle, so mean/std of |z| ~ 1.91.
  Returns (envelope, expected power E|z|^2), both (n_r, n_t) float32.
  """
  _, fe, sc, rng = _setup(seed, index, size, None, None, None)
  powers, mean = _render(rng, _rng(seed, _SPECKLE, index, 0), fe, sc, size,
                        homogeneous=homogeneous)
  return np.sqrt(powers[0]), mean
