"""Anatomy of the fetal head phantom: what echoes how strongly, in head coordinates.

Head coordinates (u, v) are in mm: u along the occipito-frontal axis (+u
towards the forehead), v along the biparietal axis. Every structure is a soft
region (signed distance -> coverage over one sample) painted in order onto a
map of backscatter in dB relative to maternal soft tissue; sizes follow the
fetus (`fbjax.phantom.simulator.Fetus`) and the plane. Used by `fbjax.phantom.simulator`.
"""

from __future__ import annotations

import math

import numpy as np

TT, TC, TV, OTHER = range(4)   # indices into fbjax.core.labels.PLANES


# ---------------------------------------------------------------------------
# Geometry helpers on (u, v) head coordinates in mm (u: front-back, v: left-right)


def cover(d, w):
  """Soft coverage of a region with signed distance d (mm, < 0 inside), edge width w."""
  return np.clip(0.5 - d / w, 0.0, 1.0)


def ellipse_d(u, v, cu, cv, A, B, ang=0.0):
  """Approximate signed distance (mm) to an ellipse (first-order: F / |grad F|)."""
  du, dv = u - cu, v - cv
  if ang:
    c, s = math.cos(ang), math.sin(ang)
    du, dv = c * du + s * dv, -s * du + c * dv
  pu, pv = du / (A * A), dv / (B * B)
  f = du * pu + dv * pv - 1.0
  return f / (2.0 * np.sqrt(pu * pu + pv * pv) + 1e-6)


def box_d(u, v, cu, cv, hl, hw, ang=0.0):
  """Signed (Chebyshev) distance to a rectangle of half-sizes hl (along u) and hw."""
  du, dv = u - cu, v - cv
  if ang:
    c, s = math.cos(ang), math.sin(ang)
    du, dv = c * du + s * dv, -s * du + c * dv
  return np.maximum(np.abs(du) - hl, np.abs(dv) - hw)


def paint(img, cov, value):
  img += cov * (value - img)


# ---------------------------------------------------------------------------
# Anatomy: backscatter (dB re. maternal soft tissue) inside and around the head

FLUID_DB = -40.0


def brain(fe, plane: int, u, v, ai, bi, texture, edge):
  """dB map of the intracranial content at head coordinates (u, v) (1-D arrays)."""
  cond = fe.condition
  brain = fe.brain_db + 2.0 * texture
  db = brain.astype(np.float32)
  sas = 0.9 + 0.03 * ai
  d_surf = ellipse_d(u, v, 0, 0, ai - sas, bi - sas)
  paint(db, 1.0 - cover(d_surf, edge), FLUID_DB + 8)
  paint(db, cover(np.abs(d_surf + 0.4) - 0.35, edge), fe.brain_db + 9.0)  # brain surface
  falx_db = fe.brain_db + 20.0
  hydr = cond == "hydranencephaly"
  if hydr:  # hemispheres replaced by fluid; thalami / posterior fossa spared
    paint(db, cover(ellipse_d(u, v, 0, 0, ai - 0.6, bi - 0.6), edge), FLUID_DB)
  if plane == OTHER:  # parietal section: falx and a few sulci
    paint(db, cover(np.abs(v) - 0.45, edge) * (np.abs(u) < 0.93 * ai), falx_db)
    for sgn in (-1.0, 1.0):
      for k, off in enumerate((0.45, 0.7)):
        d = np.abs(ellipse_d(u, v, 0.1 * ai, 0.0, 0.55 * ai, off * bi)) - 0.35
        paint(db, cover(d, edge) * (sgn * v > 0) * (np.abs(u) < (0.5 - 0.1 * k) * ai),
               fe.brain_db + 6.0)
    return db
  # midline falx (interrupted by the CSP, and by the thalami in TT/TC)
  csp_u = 0.34 * ai
  has_csp = cond not in ("absent_csp", "hydranencephaly")
  if not hydr or fe.falx_kept:
    paint(db, cover(np.abs(v) - 0.55, edge) * (np.abs(u) < 0.92 * ai), falx_db)
  if has_csp:
    hl, hw = 0.5 * fe.csp_length_mm, 0.5 * fe.csp_width_mm
    paint(db, cover(box_d(u, v, csp_u, 0.0, hl, hw + 0.7), edge), fe.brain_db + 13.0)
    paint(db, cover(box_d(u, v, csp_u, 0.0, hl - 0.4, hw), edge), FLUID_DB)
  if plane in (TT, TC):
    th_a, th_b = 0.2 * ai, 0.15 * bi
    th_u = -0.02 * ai if plane == TT else 0.05 * ai
    for sgn in (-1.0, 1.0):
      paint(db, cover(ellipse_d(u, v, th_u, sgn * (th_b + 0.6), th_a, th_b), edge),
             fe.brain_db - 3.0)
    paint(db, cover(box_d(u, v, th_u, 0.0, th_a * 0.9, 0.5), edge), FLUID_DB + 5)
    if plane == TT and not hydr:  # Sylvian fissures / insula
      for sgn in (-1.0, 1.0):
        d = np.abs(ellipse_d(u, v, 0.05 * ai, 0.0, 0.42 * ai, 0.78 * bi)) - 0.5
        paint(db, cover(d, edge) * (sgn * v > 0) * (np.abs(u - 0.05 * ai) < 0.22 * ai),
               fe.brain_db + 12.0)
  if plane == TV and not hydr:
    _ventricles(fe, db, u, v, ai, bi, csp_u, has_csp, edge)
  if plane == TC:
    _posterior_fossa(fe, db, u, v, ai, bi, edge)
  if cond == "arachnoid_cyst":
    cu, cv, rad = fe.cyst[0] * ai, fe.cyst[1] * bi, fe.cyst[2]
    d = ellipse_d(u, v, cu, cv, rad, 0.85 * rad)
    paint(db, cover(d - 0.6, edge), fe.brain_db + 6.0)
    paint(db, cover(d, edge), FLUID_DB)
  return db


def _ventricles(fe, db, u, v, ai, bi, csp_u, has_csp, edge):
  vm = max(0.0, fe.atrial_width_mm - 8.0)  # dilated ventricles: larger horns and bodies
  hw = 0.5 * fe.csp_width_mm
  fh_l, fh_w = 0.1 * ai + 0.3 * vm, 1.2 + 0.25 * vm
  if has_csp:
    for sgn in (-1.0, 1.0):
      paint(db, cover(box_d(u, v, csp_u + 0.03 * ai, sgn * (hw + 1.6 + fh_w),
                               fh_l, fh_w, sgn * 0.3), edge), FLUID_DB)
  else:  # fused frontal horns across the midline
    paint(db, cover(box_d(u, v, csp_u, 0.0, fh_l, hw + 1.5 + fh_w), edge), FLUID_DB)
  w = fe.atrial_width_mm
  at_len = 0.2 * ai + 0.6 * vm
  for sgn in (-1.0, 1.0):
    cu, cv, ang = -0.42 * ai, sgn * 0.4 * bi, sgn * 0.35
    # lateral ventricle wall running forward from the atrium
    d = np.abs(v - sgn * (0.4 * bi + 0.5 * w)) - 0.35
    paint(db, cover(d, edge) * (u > cu) * (u < 0.2 * ai), fe.brain_db + 14.0)
    paint(db, cover(ellipse_d(u, v, cu, cv, at_len, 0.5 * w, ang), edge), FLUID_DB)
    # choroid plexus: about 5-7 mm wide; fills a normal atrium and dangles
    # against the dependent wall of a dilated one
    cw = min(0.8 * w, fe.choroid_mm)
    off = 0.5 * (w - cw) - 0.2
    c, s = math.cos(ang), math.sin(ang)
    pu, pv = cu - s * off * sgn, cv + c * off * sgn
    paint(db, cover(ellipse_d(u, v, pu, pv, 0.8 * at_len, 0.5 * cw, ang), edge),
           fe.brain_db + 18.0)


def _posterior_fossa(fe, db, u, v, ai, bi, edge):
  t, cm = fe.tcd_mm, fe.cisterna_magna_mm
  u_pv = -ai + cm                   # posterior edge of the vermis
  paint(db, cover(ellipse_d(u, v, -ai + 0.5 * cm - 1.5, 0.0, 0.5 * cm + 2.5,
                               0.45 * t + 1.0), edge), FLUID_DB)
  r_v, r_h = 0.2 * t, 0.28 * t
  u_v = u_pv + r_v
  # hemispheres: echogenic rim, hypoechoic core; vermis: bright, in the midline
  for sgn in (-1.0, 1.0):
    d = ellipse_d(u, v, u_v + 0.06 * t, sgn * (0.5 * t - r_h), r_h, r_h)
    paint(db, cover(d, edge), fe.brain_db + 14.0)
    paint(db, cover(d + 1.0, edge), fe.brain_db + 3.0)
  paint(db, cover(ellipse_d(u, v, u_v, 0.0, r_v, 0.12 * t), edge), fe.brain_db + 15.0)
  # cerebral peduncles in front of the cerebellum
  paint(db, cover(ellipse_d(u, v, u_v + r_v + 0.13 * t, 0.0, 0.12 * t, 0.2 * t), edge),
         fe.brain_db - 4.0)


def defect(u, v, a, b, width_mm):
  """Coverage of the occipital skull gap (around u = -a) of about `width_mm`."""
  return cover(np.abs(v) - 0.5 * width_mm, 1.0) * (u < 0)
