r"""The shipped bundle's `launch.predict` over HC18 scans: speed per setting, and what each costs.

    python -m benchmarks.predict_bundle --real_data ../shared/data --num_images 400 \
        --demo_out demo_out --out docs/predict_bundle_cpu.json
    python -m benchmarks.predict_bundle --real_data DATA --device    # on an accelerator

Arms, all in one run on the same folder (`--num_images` HC18 training images spread
evenly over the file order, i.e. over head size, with HC18's pixel-size CSV):

  bundle                the default: `python -m launch.predict --input F --out O`
  bundle_tta_off        `--segmenter_tta off` (each stage run once, not on the image and
                        its mirror image)
  bundle_stage1_tta_off `--segmenter_stages 1 --segmenter_tta off` (the first stage only)
  demo                  the single-stage demo pipeline (`--workdir DEMO/classify
                        --seg_workdir DEMO/segment` of `make demo`), with `--demo_out`

Per arm: the whole command's wall time (start-up, compilation, report included) and
images/s; the prediction loop's images/s (`summary.json`); batch-1 latency (median of
`--latency_images` single images through `Predictor.infer` + `finish`, in this process,
after a warm-up); and for the bundle's settings the HC18 validation biometry of that
setting (`fbjax.evaluation.bundle_eval.segmentation`, 152 images none of the arms trained on), so
the JSON says what a faster setting costs. Ratios to `demo` are of the same run.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import types

import jax
import numpy as np
from absl import app, flags

from fbjax import predict
from fbjax.core import bundle
from fbjax.evaluation import bundle_eval, inference
from fbjax.runtime import tracking

ROOT = pathlib.Path(__file__).resolve().parents[1]

_OPTIONS = (
    flags.DEFINE_string("real_data", os.environ.get("FBJAX_REAL_DATA", "../shared/data"),
                        "Folder holding hc18/."),
    flags.DEFINE_integer("num_images", 400, "HC18 training images predicted."),
    flags.DEFINE_string("demo_out", "", "A `make demo` output folder (its segment/ and "
                        "classify/ workdirs): the single-stage pipeline arm."),
    flags.DEFINE_integer("batch_size", 32, "Prediction batch size."),
    flags.DEFINE_integer("latency_images", 20, "Images of the batch-1 latency."),
    flags.DEFINE_string("data_dir", "", "tfds data_dir for the validation cost (default: a "
                        "temporary one)."),
    flags.DEFINE_bool("device", False, "Require an accelerator backend."),
    flags.DEFINE_bool("no_validation", False, "No HC18 validation biometry per setting."),
)
_OUT = flags.DEFINE_string("out", "", "Also write the JSON here.")

ARMS = {"bundle": [], "bundle_tta_off": ["--segmenter_tta", "off"],
        "bundle_stage1_tta_off": ["--segmenter_stages", "1", "--segmenter_tta", "off"]}


def hc18_folder(real: pathlib.Path, n: int, dest: pathlib.Path):
  """`n` HC18 training images (evenly spaced in file order) linked into `dest`, and the CSV."""

  src = sorted(p for p in (real / "hc18" / "training_set").glob("*.png")
               if not p.name.endswith("_Annotation.png"))
  pick = [src[int(i)] for i in np.linspace(0, len(src) - 1, min(n, len(src))).round()]
  dest.mkdir(parents=True, exist_ok=True)
  for p in pick:
    (dest / p.name).symlink_to(p)
  csv = dest.parent / "pixel_size.csv"
  csv.write_text((real / "hc18" / "training_set_pixel_size_and_HC.csv").read_text())
  return dest, csv


def run_arm(args, name: str, extra: list[str], folder, csv, tmp: pathlib.Path) -> dict:
  out = tmp / f"out_{name}"
  cmd = [sys.executable, "-m", "launch.predict", "--input", str(folder), "--out", str(out),
         "--spacing_csv", str(csv), "--num_overlays", "0", "--batch_size",
         str(args.batch_size), *extra]
  env = dict(os.environ, WANDB_MODE="disabled")
  t0 = time.perf_counter()
  r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
  wall = time.perf_counter() - t0
  if r.returncode:
    raise RuntimeError(f"{name} failed:\n{r.stderr[-3000:]}")
  s = json.loads((out / "summary.json").read_text())
  t = s["timing"]
  return {"command": " ".join(["python", *cmd[1:]]).replace(str(tmp), "TMP"),
          "wall_s": round(wall, 2), "images": s["predicted"],
          "wall_images_per_s": round(s["predicted"] / wall, 2),
          "loop_images_per_s": round(t["images_per_s"], 2),
          "compile_s": round(t["compile_s"], 2), "load_s": round(t["load_s"], 2),
          "seg_quality": s.get("seg_quality_counts"), "device": t["device"]}


def latency(workdir, seg_workdir, files, *, tta=None, stages=None) -> dict:
  p = predict.Predictor(workdir, seg_workdir, batch_size=1, seg_tta=tta, seg_stages=stages)
  p.warmup()
  for f in files[:2]:                     # compile every shape the loop meets
    it = p.prepare(f)
    p.finish(it, p.infer([it]), 0, 0.1, None)
  times = []
  for f in files:
    t0 = time.perf_counter()
    it = p.prepare(f)
    p.finish(it, p.infer([it]), 0, 0.1, None)
    times.append(time.perf_counter() - t0)
  return {"batch1_latency_ms_median": round(1e3 * float(np.median(times)), 2),
          "batch1_latency_ms_p95": round(1e3 * float(np.percentile(times, 95)), 2),
          "n": len(times)}


def validation_cost(real: pathlib.Path, data_dir: str) -> dict:
  """HC18 validation biometry of each bundle setting (the accuracy side of the trade)."""

  b = inference.load_bundle(bundle.DEFAULT)
  block = bundle.fill_paths(b.segmenter.config, {"real_data": str(real), "data_dir": data_dir,
                                                "work": data_dir}).sources.hc18
  keep = ("dice_head", "hc_abs_mm_mean", "hc_abs_mm_median", "n_over_10pct", "n", "tta")
  out = {}
  for name, seg, tta in (("bundle", b.segmenter, None), ("bundle_tta_off", b.segmenter, False),
                         ("bundle_stage1_tta_off", b.segmenter.stage1(), False)):
    m = bundle_eval.segmentation(seg, block, tta=tta)
    out[name] = {k: m[k] for k in keep}
  return out


def main(argv):
  del argv
  tracking.quiet_library_logs()   # orbax's and grain's INFO chatter
  a = types.SimpleNamespace(**{f.name: f.value for f in _OPTIONS})
  if a.device and jax.default_backend() == "cpu":
    raise SystemExit("--device: no accelerator backend (jax.default_backend() is 'cpu')")
  real = pathlib.Path(a.real_data).resolve()
  res = {"command": "python -m benchmarks.predict_bundle " + " ".join(sys.argv[1:]),
         "setup": {"num_images": a.num_images, "batch_size": a.batch_size,
                   "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
                   "cpu_count": os.cpu_count(), "loadavg_before": os.getloadavg()}}
  with tempfile.TemporaryDirectory() as t:
    tmp = pathlib.Path(t)
    folder, csv = hc18_folder(real, a.num_images, tmp / "hc18_scans")
    arms = dict(ARMS)
    if a.demo_out:
      d = pathlib.Path(a.demo_out).resolve()
      arms["demo"] = ["--workdir", str(d / "classify"), "--seg_workdir", str(d / "segment")]
    res["arms"] = {n: run_arm(a, n, x, folder, csv, tmp) for n, x in arms.items()}
    files = sorted(folder.iterdir())[:: max(1, a.num_images // a.latency_images)]
    files = files[: a.latency_images]
    lat = {"bundle": latency("fbjax_head_v1", "fbjax_head_v1", files),
           "bundle_tta_off": latency("fbjax_head_v1", "fbjax_head_v1", files, tta=False),
           "bundle_stage1_tta_off": latency("fbjax_head_v1", "fbjax_head_v1", files, tta=False,
                                            stages=1)}
    if a.demo_out:
      d = pathlib.Path(a.demo_out).resolve()
      lat["demo"] = latency(str(d / "classify"), str(d / "segment"), files)
    for n, v in lat.items():
      res["arms"][n].update(v)
    if "demo" in res["arms"]:
      base = res["arms"]["demo"]
      for v in res["arms"].values():
        v["loop_ratio_to_demo"] = round(v["loop_images_per_s"] / base["loop_images_per_s"], 3)
        v["latency_ratio_to_demo"] = round(v["batch1_latency_ms_median"]
                                           / base["batch1_latency_ms_median"], 3)
    if not a.no_validation:
      res["hc18_validation"] = validation_cost(real, a.data_dir or str(tmp / "tfds"))
  res["setup"]["loadavg_after"] = os.getloadavg()
  text = json.dumps(res, indent=1)
  if _OUT.value:
    pathlib.Path(_OUT.value).write_text(text + "\n")
  print(text)


if __name__ == "__main__":
  app.run(main)
