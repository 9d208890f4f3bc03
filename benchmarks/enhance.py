r"""Enhancement benchmark: agreement with references, quality on the phantom, speed (JSON).

    python -m benchmarks.enhance                          # all sections, CPU
    python -m benchmarks.enhance --sections quality --n_val 16 --n_test 64
    python -m benchmarks.enhance --sections speed --batch 64 --size 256
    python -m benchmarks.enhance --sections figure --figure docs/enhance_comparison.png
    python -m benchmarks.enhance --device --sections speed    # on an accelerator (< 2 min)
    python -m benchmarks.enhance --learned_workdir WORKDIR    # adds the trained despeckler

Sections:
  agreement  max |difference| of each fbjax filter from its reference (OpenCV
             with its own C++ path, i.e. IPP off, and with IPP; the NumPy SRAD
             and brute-force NLM of tests/enhance_reference.py), on phantom images.
  quality    phantom validation images (stream of the `validation` split) tune
             each method's parameters on an equal-size grid by mean SSIM against
             the clean image; the chosen setting is scored on the `test` stream:
             PSNR and SSIM against `clean`, ENL in the brain, CNR skull vs brain,
             edge preservation vs `clean`. All outputs are rounded to 8 bits as
             OpenCV's are. Phantom images are drawn without text/caliper
             overlays (they are absent from `clean`).
  speed      a batch of --batch images at --size: fbjax SRAD vs the NumPy
             reference, fbjax bilateral vs OpenCV's per-image loop, throughput
             of the chains; medians of --reps timed runs, compile excluded,
             ratios from the same run.
  figure     a PNG, one row per method: a phantom test image and a real HC18
             image ($FBJAX_REAL_DATA/hc18), with the parameters chosen above.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import statistics
import sys
import time
import types

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from fbjax.data import builders, io
from fbjax.enhance import despeckle, modules
from fbjax.enhance import filters as F
from fbjax.enhance import metrics as M
from fbjax.geometry import preprocess
from fbjax.phantom import simulator as phantom
from fbjax.runtime import tracking
from tests import enhance_reference as ref

ROOT = pathlib.Path(__file__).resolve().parents[1]

_OPTIONS = (
    flags.DEFINE_list("sections", ["agreement", "quality", "speed"],
                      "Sections: agreement, quality, speed, figure."),
    flags.DEFINE_integer("n_val", 16, "Phantom validation images the parameters are tuned on."),
    flags.DEFINE_integer("n_test", 64, "Phantom test images the chosen settings are scored on."),
    flags.DEFINE_integer("size", 128, "Phantom image size for agreement/quality/figure (128: the "
                         "default `small` config of fetal_brain_synth, whose streams these are)."),
    flags.DEFINE_integer("speed_size", 256, "Image size of the speed section."),
    flags.DEFINE_integer("batch", 64, "Batch of the speed section."),
    flags.DEFINE_integer("reps", 5, "Timed runs per speed measurement (the median is kept)."),
    flags.DEFINE_integer("numpy_images", 16, "Images the NumPy SRAD is timed on (scaled to the "
                         "batch); <= 0: all."),
    flags.DEFINE_string("learned_workdir", None, "A trained despeckler's workdir (added as a "
                        "method)."),
    flags.DEFINE_string("figure", "docs/enhance_comparison.png", "PNG of the figure section."),
    flags.DEFINE_integer("figure_panel", 200, "Panel size of the figure (pixels)."),
    flags.DEFINE_string("chosen", None, "JSON of chosen parameters (from a quality run) for "
                        "speed/figure."),
    flags.DEFINE_bool("device", False, "Accelerator run: speed only, fbjax on the default device."),
)
_OUT = flags.DEFINE_string("out", "", "Also write the JSON here.")

# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def phantom_split(split: str, n: int, size: int) -> dict:
  """n phantom images of a split's stream (no overlays) as float arrays."""
  seeds = builders.builder_module("fetal_brain_synth").SPLIT_SEEDS
  exs = [phantom.simulate(seeds[split], i, size=size, overlays=False) for i in range(n)]
  out = {k: np.stack([e[k] for e in exs]) for k in ("image", "clean", "brain_mask", "skull_mask")}
  out["u8"] = out["image"]
  out["image"] = out["image"].astype(np.float32) / 255
  out["clean"] = out["clean"].astype(np.float32) / 255
  return out


def hc18_image(size: int) -> np.ndarray | None:
  root = os.environ.get("FBJAX_REAL_DATA")
  path = pathlib.Path(root or "") / "hc18" / "training_set" / "010_HC.png"
  if not root or not path.exists():
    return None
  img, _ = preprocess.letterbox(io.read_image(path), (size, size))
  return io.float_to_uint8(img)


# ---------------------------------------------------------------------------
# Methods: name -> (library, grid, fn(u8 batch, float batch, params) -> float batch)
# ---------------------------------------------------------------------------


def _u8(y) -> np.ndarray:
  return np.clip(np.rint(np.asarray(y, np.float32) * 255), 0, 255).astype(np.uint8)


def _cv(fn):
  return lambda u8, x, p: np.stack([fn(a, p) for a in u8])


def _jx(fn):
  jitted = {}

  def run(u8, x, p):
    key = tuple(sorted(p.items()))
    if key not in jitted:
      jitted[key] = jax.jit(lambda v: fn(v, p))
    return _u8(jitted[key](x))
  return run


def _grid(**axes):
  keys = list(axes)
  out = [{}]
  for k in keys:
    out = [dict(o, **{k: v}) for o in out for v in axes[k]]
  return out


def methods(learned_workdir: str | None = None) -> dict:
  """The compared methods. OpenCV and fbjax versions of a filter get the same grid
  (fbjax's intensities are OpenCV's / 255), every grid has 5-10 settings."""
  h_levels = [8, 12, 16, 20, 26]
  m = {
      "noisy": ("none", [{}], lambda u8, x, p: u8),
      "cv_median": ("opencv", _grid(ksize=[3, 5, 7, 9, 11]),
                    _cv(lambda a, p: cv2.medianBlur(a, p["ksize"]))),
      "cv_bilateral": ("opencv", _grid(d=[7, 11, 15], sigma_color=[20, 40, 80]),
                       _cv(lambda a, p: cv2.bilateralFilter(a, p["d"], p["sigma_color"],
                                                            p["d"] / 2))),
      "cv_nlm": ("opencv", _grid(h=h_levels, patch=[5, 7]),
                 _cv(lambda a, p: cv2.fastNlMeansDenoising(a, None, p["h"], p["patch"], 21))),
      # OpenCV has no guided NLM; its nearest two-pass equivalent is NLM of the NLM.
      "cv_nlm_twice": ("opencv", _grid(h1=[12, 16, 20], h2=[3, 6, 9]),
                       _cv(lambda a, p: cv2.fastNlMeansDenoising(
                           cv2.fastNlMeansDenoising(a, None, p["h1"], 7, 21), None, p["h2"], 7,
                           21))),
      "prototype": ("fbjax", [{}], _jx(lambda v, p: F.prototype(v))),
      "median": ("fbjax", _grid(size=[3, 5, 7, 9, 11]),
                 _jx(lambda v, p: F.median(v, p["size"]))),
      "bilateral": ("fbjax", _grid(diameter=[7, 11, 15], sigma_color=[20, 40, 80]),
                    _jx(lambda v, p: F.bilateral(v, p["diameter"], p["sigma_color"] / 255,
                                                 p["diameter"] / 2))),
      "nl_means": ("fbjax", _grid(h=[h / 255 for h in h_levels], patch=[5, 7]),
                   _jx(lambda v, p: F.nl_means(v, p["h"], p["patch"], 21))),
      "nl_means_2pass": ("fbjax", _grid(h1=[12 / 255, 16 / 255, 20 / 255],
                                        h2=[0.025, 0.035, 0.045]),
                         _jx(lambda v, p: F.nl_means_2pass(v, p["h1"], p["h2"], 7, 21))),
      "srad": ("fbjax", _grid(q0=[0.05, 0.1, 0.2, 0.4, 0.8], iterations=[30, 100]),
               _jx(lambda v, p: F.srad(v, p["q0"], p["iterations"], 0.25))),
      "clahe": ("fbjax", [{}], _jx(lambda v, p: F.clahe(v, 2.0, (8, 8)))),
  }
  if learned_workdir:
    stage = despeckle.load_stage(learned_workdir)
    m["learned"] = ("fbjax", [{}], _jx(lambda v, p: stage.apply({}, v)))
  return m


# ---------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------


def scores(y: np.ndarray, data: dict) -> dict:
  yf = y.astype(np.float32) / 255
  c = data["clean"]
  brain, skull = data["brain_mask"].astype(bool), data["skull_mask"].astype(bool)
  return {
      "psnr_db": float(np.mean(M.psnr(yf, c))),
      "ssim": float(np.mean(M.ssim(yf, c))),
      "enl_brain": float(np.nanmean(M.enl(yf, brain))),
      "cnr_skull_brain": float(np.nanmean(M.cnr(yf, skull, brain))),
      "epi_vs_clean": float(np.nanmean(M.edge_preservation(yf, c))),
  }


def quality(args) -> tuple[dict, dict]:
  val = phantom_split("validation", args.n_val, args.size)
  test = phantom_split("test", args.n_test, args.size)
  out, chosen = {}, {}
  for name, (lib, grid, fn) in methods(args.learned_workdir).items():
    t0 = time.perf_counter()
    best, best_ssim = grid[0], -math.inf
    if len(grid) > 1:
      for p in grid:
        s = float(np.mean(M.ssim(fn(val["u8"], val["image"], p).astype(np.float32) / 255,
                                 val["clean"])))
        if s > best_ssim:
          best, best_ssim = p, s
    chosen[name] = best
    out[name] = {"library": lib, "params": best, "grid_size": len(grid),
                 "val_ssim": None if len(grid) == 1 else best_ssim,
                 **scores(fn(test["u8"], test["image"], best), test),
                 "seconds": round(time.perf_counter() - t0, 1)}
    print(f"# {name}: {out[name]}", file=sys.stderr, flush=True)
  noisy = out["noisy"]["psnr_db"]
  fb = {k: v for k, v in out.items() if v["library"] == "fbjax" and k != "clahe"}
  best_fb = max(fb, key=lambda k: fb[k]["ssim"])
  best_cv_ssim = max(v["ssim"] for v in out.values() if v["library"] == "opencv")
  summary = {
      "best_fbjax": best_fb,
      "psnr_gain_db": out[best_fb]["psnr_db"] - noisy,
      "goal_psnr_gain_6db": out[best_fb]["psnr_db"] - noisy >= 6.0,
      "best_opencv_ssim": best_cv_ssim,
      "goal_ssim_above_every_opencv": out[best_fb]["ssim"] > best_cv_ssim,
  }
  return {"n_val": args.n_val, "n_test": args.n_test, "size": args.size, "methods": out,
          "summary": summary}, chosen


def agreement(args) -> dict:
  data = phantom_split("test", 4, args.size)
  u8, x = data["u8"], data["image"]

  def levels(y):
    return float(np.abs(np.rint(np.asarray(y, np.float64) * 255) - u8_ref.astype(np.float64)).max())

  res = {}
  old = cv2.ipp.useIPP()
  for ipp in (False, True):
    cv2.ipp.setUseIPP(ipp)
    tag = "ipp" if ipp else "no_ipp"
    u8_ref = np.stack([cv2.medianBlur(a, 5) for a in u8])
    res[f"median5_vs_cv2.medianBlur_{tag}_levels"] = levels(F.median(x, 5))
    u8_ref = np.stack([cv2.equalizeHist(a) for a in u8])
    res[f"equalize_hist_vs_cv2.equalizeHist_{tag}_levels"] = levels(F.equalize_hist(x))
    u8_ref = np.stack([cv2.createCLAHE(2.0, (8, 8)).apply(a) for a in u8])
    res[f"clahe_vs_cv2.createCLAHE_{tag}_levels"] = levels(F.clahe(x, 2.0, (8, 8)))
    u8_ref = np.stack([cv2.bilateralFilter(a, 5, 25.5, 2.0) for a in u8])
    res[f"bilateral_vs_cv2.bilateralFilter_{tag}_levels"] = levels(F.bilateral(x, 5, 0.1, 2.0))
    u8_ref = np.stack([cv2.medianBlur(cv2.equalizeHist(a), 5) for a in u8])
    res[f"prototype_vs_cv2_chain_{tag}_levels"] = levels(F.prototype(x))
  cv2.ipp.setUseIPP(old)
  s = np.stack([ref.srad(a, 0.2, 50, 0.25) for a in x])
  res["srad_vs_numpy_reference_abs"] = float(np.abs(np.asarray(F.srad(x, 0.2, 50, 0.25)) - s).max())
  small = x[:2, 100:132, 100:132]
  n = np.stack([ref.nl_means(a, 0.1, 5, 7) for a in small])
  got = np.asarray(F.nl_means(small, 0.1, 5, 7))
  res["nl_means_vs_bruteforce_abs"] = float(np.abs(got - n).max())
  blur = np.stack([cv2.GaussianBlur(a, (13, 13), 2.0, borderType=cv2.BORDER_REFLECT_101)
                   for a in x])
  res["gaussian_blur_vs_cv2_abs"] = float(np.abs(np.asarray(F.gaussian_blur(x, 2.0)) - blur).max())
  return res


def _time(fn, reps: int) -> float:
  ts = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    ts.append(time.perf_counter() - t0)
  return statistics.median(ts)


def speed(args, chosen: dict) -> dict:
  n = args.batch
  data = phantom_split("test", n, args.speed_size)
  u8 = data["u8"]
  x = jax.device_put(jnp.asarray(data["image"]))
  srad_p = chosen.get("srad") or {"q0": 0.1, "iterations": 100}
  it = srad_p["iterations"]
  res = {"batch": n, "size": args.speed_size, "device": str(jax.devices()[0].device_kind),
         "cpu_count": os.cpu_count(), "reps": args.reps}

  srad = jax.jit(lambda v: F.srad(v, srad_p["q0"], it, 0.25))
  t0 = time.perf_counter()
  jax.block_until_ready(srad(x))
  res["srad_compile_s"] = time.perf_counter() - t0
  t_srad = _time(lambda: srad(x), args.reps)
  k = n if args.numpy_images <= 0 else min(n, args.numpy_images)
  t0 = time.perf_counter()
  for a in data["image"][:k]:
    ref.srad(a, srad_p["q0"], it, 0.25)
  t_np = (time.perf_counter() - t0) * n / k
  res["srad"] = {"iterations": it, "fbjax_s": t_srad, "numpy_reference_s": t_np,
                 "numpy_images_timed": k, "speedup_vs_numpy": t_np / t_srad,
                 "goal_3x": t_np / t_srad >= 3.0}

  bil = jax.jit(lambda v: F.bilateral(v, 5, 0.1, 2.0))
  jax.block_until_ready(bil(x))
  t_fb, t_cv, t_cv_noipp = [], [], []
  old = cv2.ipp.useIPP()
  for _ in range(args.reps):     # interleaved, so load changes hit both alike
    t_fb.append(_time(lambda: bil(x), 1))
    cv2.ipp.setUseIPP(True)
    t_cv.append(_time(lambda: [cv2.bilateralFilter(a, 5, 25.5, 2.0) for a in u8], 1))
    cv2.ipp.setUseIPP(False)
    t_cv_noipp.append(_time(lambda: [cv2.bilateralFilter(a, 5, 25.5, 2.0) for a in u8], 1))
  cv2.ipp.setUseIPP(old)
  fb, cv, cvn = (statistics.median(t) for t in (t_fb, t_cv, t_cv_noipp))
  res["bilateral_d5"] = {"fbjax_s": fb, "opencv_loop_s": cv, "opencv_loop_no_ipp_s": cvn,
                         "fbjax_over_opencv": fb / cv, "goal_within_2x": fb / cv <= 2.0}

  chains = {"prototype": "prototype", "srad": "srad", "nl_means": "nl_means",
            "nl_means_2pass": "nl_means_2pass"}
  if args.learned_workdir:
    chains["learned"] = "learned"
  thr = {}
  for name, chain in chains.items():
    cfg = modules.default_config(chain)
    cfg.srad.update(q0=float(srad_p["q0"]), iterations=int(it), dt=0.25)
    if "nl_means" in chosen:
      cfg.nl_means.update(h=float(chosen["nl_means"]["h"]), patch=int(chosen["nl_means"]["patch"]),
                          search=21)
    if "nl_means_2pass" in chosen:
      cfg.nl_means_2pass.update(h1=float(chosen["nl_means_2pass"]["h1"]),
                                h2=float(chosen["nl_means_2pass"]["h2"]))
    if args.learned_workdir:
      cfg.learned.workdir = args.learned_workdir
    enh = jax.jit(modules.make_enhance(cfg).apply)
    jax.block_until_ready(enh({}, x))
    t = _time(lambda enh=enh: enh({}, x), args.reps)
    thr[name] = {"s_per_batch": t, "images_per_s": n / t}
  t = _time(lambda: [cv2.medianBlur(cv2.equalizeHist(a), 5) for a in u8], args.reps)
  thr["opencv_prototype_loop"] = {"s_per_batch": t, "images_per_s": n / t}
  res["chain_throughput"] = thr
  return res


def figure(args, chosen: dict, path: str) -> dict:
  data = phantom_split("test", 1, args.size)
  real = hc18_image(args.size)
  ms = methods(args.learned_workdir)
  rows = [("clean (phantom only)", None)] + [(k, k) for k in ms]
  panel = args.figure_panel
  tiles = []
  for label, key in rows:
    cols = []
    for u8 in (data["u8"], None if real is None else real[None]):
      if u8 is None or (key is None and u8 is not data["u8"]):
        cols.append(np.zeros((panel, panel), np.uint8))
        continue
      if key is None:
        y = _u8(data["clean"])
      else:
        _, _, fn = ms[key]
        y = fn(u8, u8.astype(np.float32) / 255, chosen.get(key, {}))
      cols.append(cv2.resize(y[0], (panel, panel), interpolation=cv2.INTER_CUBIC))
    row = np.concatenate(cols, axis=1)
    params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in (chosen.get(key) or {}).items())
    cv2.putText(row, f"{label} {params}".strip(), (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 255, 1,
                cv2.LINE_AA)
    tiles.append(row)
  # two columns of rows keep the page readable
  half = (len(tiles) + 1) // 2
  left, right = tiles[:half], tiles[half:]
  right += [np.zeros_like(tiles[0])] * (half - len(right))
  img = np.concatenate([np.concatenate(left, 0), np.full((half * panel, 8), 255, np.uint8),
                        np.concatenate(right, 0)], axis=1)
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  cv2.imwrite(path, img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
  return {"path": path, "bytes": os.path.getsize(path), "hc18_image": real is not None}


def main(argv):
  del argv
  tracking.quiet_library_logs()   # orbax's and grain's INFO chatter
  args = types.SimpleNamespace(**{f.name: f.value for f in _OPTIONS})
  sections = list(args.sections)
  if args.device:
    sections = ["speed"]
    args.numpy_images = min(args.numpy_images, 8) if args.numpy_images > 0 else 8
  out = {"jax_backend": jax.default_backend()}
  chosen = json.loads(args.chosen) if args.chosen else {}
  if "agreement" in sections:
    out["agreement"] = agreement(args)
  if "quality" in sections:
    out["quality"], chosen = quality(args)
    out["chosen"] = chosen
  if "speed" in sections:
    out["speed"] = speed(args, chosen)
  if "figure" in sections:
    out["figure"] = figure(args, chosen, args.figure)
  text = json.dumps(out, indent=1, default=float)
  if _OUT.value:
    pathlib.Path(_OUT.value).write_text(text + "\n")
  print(text)


if __name__ == "__main__":
  app.run(main)
