r"""Predict at scale: images/s of one process vs 2 shards, and the memory of listing 10^6 files.

    python -m benchmarks.predict --num_images 2949 --list_files 1000000 --out predict.json
    python -m benchmarks.predict --workdir ~/runs/cls --seg_workdir ~/runs/seg \
        --input ~/scans --list_files 0

Prints one JSON object on stdout (also to `--out` when given):

- `single` / `sharded`: `python -m launch.predict` over the same folder, once
  as one process and once as 2 shard processes started together on this
  machine (each followed by the merge the last shard does). `wall_s` is from
  the start to the last process's exit (start-up, compile, report included);
  `predict_images_per_s` counts only the prediction loops (images / the
  longest shard's loop, the loops running at the same time); `ratio_wall` =
  single wall / sharded wall (> 1: sharding is faster).
- `in_process`: `fbjax.predict.iterate` over the same folder in this process
  after a warm-up (no start-up, compile or report): wall images/s, and the
  process CPU time per image, so `images_per_s_idle_cores` = cores / CPU
  time per image says what the loop reaches on idle cores when the machine
  is shared (`loadavg` before and after; the loop's threads and XLA's use
  the cores in parallel, so this is the rate with every core busy on it).
- `listing`: `fbjax.predict.inputs.scan` over `--list_files` empty files (1,000 per
  folder) in a fresh process, with the shard filter and the resume check of a
  run; `peak_traced_mib` is the peak of Python allocations (tracemalloc)
  and `rss_growth_mib` the growth of the maximum resident set during the listing.

Without `--input`, `--num_images` phantom images (`launch.phantom`, 256 px)
are exported to a temporary folder; without `--workdir`, a classification
workdir with random weights (`tests/classify_util.py`; the same networks and
cost as a trained one) is written, reading the aligned head
(`--classifier_input aligned_head`, crops of `fbjax.geometry.align.DEFAULT_SIZE`) or
the whole image, and likewise a segmentation workdir
(configs/segment.py:runlocal U-Net) without `--seg_workdir`.

The alignment step runs for the images whose head passes the "not a fetal
head" gate (`fbjax.geometry.head_gate`): `classified` counts the rows with a plane.
A random segmenter finds no real head, so measure the alignment with a
trained one (`--seg_workdir`) on real scans (`--input`).
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import types

from absl import app, flags

from fbjax import predict
from fbjax.core import schema
from fbjax.geometry import align
from fbjax.phantom import export as phantom_export
from fbjax.predict import inputs
from fbjax.runtime import tracking
from tests import classify_util

ROOT = pathlib.Path(__file__).resolve().parents[1]

_OPTIONS = (
    flags.DEFINE_string("input", None, "Folder of images (default: export phantom images)."),
    flags.DEFINE_integer("num_images", 2949, "Phantom images exported without --input."),
    flags.DEFINE_string("workdir", None, "Classification workdir (default: random weights)."),
    flags.DEFINE_string("seg_workdir", None, "Segmentation workdir (default: random U-Net)."),
    flags.DEFINE_enum("classifier_input", "aligned_head", ["aligned_head", "image"],
                      "What the default classifier reads."),
    flags.DEFINE_integer("batch_size", 32, "Prediction batch size."),
    flags.DEFINE_enum("segmenter_tta", "workdir", ["workdir", "on", "off"],
                      "launch.predict --segmenter_tta (mirror averaging of the segmenter)."),
    flags.DEFINE_integer("workers", 2, "Reader workers of the prediction loop."),
    flags.DEFINE_integer("num_overlays", 0, "Overlays written per run."),
    flags.DEFINE_integer("list_files", 1_000_000, "Empty files listed by the listing check "
                         "(0: none)."),
    flags.DEFINE_string("tmp", None, "Scratch folder (default: a new temporary one)."),
)
_OUT = flags.DEFINE_string("out", "", "Also write the JSON here.")

LISTING = r"""
import json, resource, sys, time, tracemalloc
import numpy as np
from fbjax.predict import files as predict_files
from fbjax.predict import inputs
root, n_shards = sys.argv[1], 2
done = np.zeros(0, np.int64)
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
t0 = time.perf_counter()
counts = {"image": 0, "error": 0, "skipped": 0}
mine = 0
for e in inputs.scan(root):
  counts[e.kind] += 1
  if inputs.shard_of(e.key, n_shards) == 0 and not predict_files.is_done(done, e.path):
    mine += 1
dt = time.perf_counter() - t0
peak = tracemalloc.get_traced_memory()[1]
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"entries": sum(counts.values()), "kinds": counts, "shard0_of_2": mine,
                  "seconds": dt, "entries_per_s": sum(counts.values()) / dt,
                  "peak_traced_mib": peak / 2**20, "rss_growth_mib": (rss1 - rss0) / 1024,
                  "max_rss_mib": rss1 / 1024}))
"""


def _env():
  return dict(os.environ, PYTHONPATH=str(ROOT), WANDB_MODE="disabled",
              TF_CPP_MIN_LOG_LEVEL="3")


def _predict_cmd(args, folder, out, *extra):
  cmd = [sys.executable, "-m", "launch.predict", f"--input={folder}", f"--out={out}",
         f"--batch_size={args.batch_size}", f"--workers={args.workers}",
         f"--num_overlays={args.num_overlays}", "--distributed=off", "--pixel_spacing_mm=0.15",
         f"--segmenter_tta={args.segmenter_tta}"]
  if args.workdir:
    cmd.append(f"--workdir={args.workdir}")
  if args.seg_workdir:
    cmd.append(f"--seg_workdir={args.seg_workdir}")
  return cmd + list(extra)


def _timed(cmds) -> float:
  t0 = time.perf_counter()
  procs = [subprocess.Popen(c, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True) for c in cmds]
  for p in procs:
    err = p.communicate()[1]
    if p.returncode:
      raise RuntimeError(f"{' '.join(p.args)} failed:\n{err[-3000:]}")
  return time.perf_counter() - t0


def throughput(args, folder: pathlib.Path, tmp: pathlib.Path) -> dict:
  one, two = tmp / "single", tmp / "sharded"
  wall1 = _timed([_predict_cmd(args, folder, one)])
  s1 = json.loads((one / "summary.json").read_text())
  with open(one / "predictions.csv", newline="") as f:
    classified = sum(1 for r in csv.DictReader(f) if r["plane"])
  wall2 = _timed([_predict_cmd(args, folder, two, "--num_shards=2", f"--shard_index={i}")
                  for i in range(2)])
  s2 = json.loads((two / "summary.json").read_text())
  shards = s2["timing"]["shards"]
  n = s1["predicted"] + s1["errors"]
  return {
      "images": n, "predicted": s1["predicted"], "same_rows": s1["predicted"] == s2["predicted"],
      "classified": classified,
      "single": {"wall_s": wall1, "images_per_s_wall": n / wall1,
                 "predict_images_per_s": s1["timing"]["images_per_s"],
                 "compile_s": s1["timing"]["compile_s"]},
      "sharded": {"wall_s": wall2, "images_per_s_wall": n / wall2,
                  "predict_images_per_s": n / max(t["predict_s"] for t in shards),
                  "per_shard_images": [t["new_images"] for t in shards],
                  "per_shard_predict_s": [t["predict_s"] for t in shards]},
      "ratio_wall": wall1 / wall2,
      "ratio_predict_images_per_s": n / max(t["predict_s"] for t in shards)
      / s1["timing"]["images_per_s"]}


def in_process(args, folder: pathlib.Path) -> dict:
  p = predict.Predictor(args.workdir, args.seg_workdir, batch_size=args.batch_size,
                        seg_tta=predict.SEG_TTA[args.segmenter_tta])
  p.warmup()
  paths = [pathlib.Path(e.path) for e in inputs.scan(folder) if e.kind == "image"]
  list(predict.iterate(p, paths[:2 * args.batch_size], workers=args.workers))   # warm caches
  load0 = os.getloadavg()
  c0, t0 = time.process_time(), time.perf_counter()
  rows = [r for kind, r in predict.iterate(p, paths, workers=args.workers,
                                           spacing=lambda _: 0.15) if kind == "row"]
  cpu, wall = time.process_time() - c0, time.perf_counter() - t0
  n = len(rows)
  cores = os.cpu_count() or 1
  return {"images": n, "classified": sum(1 for r in rows if r["plane"]),
          "classifier_input": p.input, "wall_s": wall, "images_per_s": n / wall,
          "cpu_ms_per_image": 1000 * cpu / n, "cores": cores,
          "images_per_s_idle_cores": cores * n / cpu,
          "loadavg_before": load0, "loadavg_after": os.getloadavg()}


def listing(n: int, tmp: pathlib.Path) -> dict:
  root = tmp / "listing"
  t0 = time.perf_counter()
  for i in range(0, n, 1000):
    d = root / f"d{i // 1000:05d}"
    d.mkdir(parents=True)
    for k in range(i, min(n, i + 1000)):
      os.close(os.open(d / f"scan_{k:07d}.png", os.O_CREAT | os.O_WRONLY, 0o644))
  made = time.perf_counter() - t0
  r = subprocess.run([sys.executable, "-c", LISTING, str(root)], cwd=ROOT, env=_env(),
                     capture_output=True, text=True, check=True)
  out = json.loads(r.stdout)
  out["create_s"] = made
  return out


def main(argv):
  del argv
  tracking.quiet_library_logs()   # orbax's and grain's INFO chatter
  args = types.SimpleNamespace(**{f.name: f.value for f in _OPTIONS})
  tmp = pathlib.Path(tempfile.mkdtemp(prefix="fbjax_predict_bench_", dir=args.tmp))
  result: dict = {"cpu_count": os.cpu_count(), "batch_size": args.batch_size,
                  "workers": args.workers, "num_overlays": args.num_overlays}
  try:
    if not args.workdir:

      if args.classifier_input == "aligned_head":
        config = classify_util.aligned_config(align.DEFAULT_SIZE)
      else:
        config = classify_util.tiny_config()
      args.workdir = str(classify_util.fake_workdir(tmp / "cls", config))
      result["workdir"] = (f"random weights (tests/classify_util.py), input "
                           f"{args.classifier_input}, {list(schema.size_of(config))} px")
    if not args.seg_workdir:
      args.seg_workdir = str(classify_util.fake_seg_workdir(tmp / "seg"))
      result["seg_workdir"] = "random weights (configs/segment.py:runlocal)"
    result["segmenter_tta"] = args.segmenter_tta
    folder = pathlib.Path(args.input) if args.input else None
    if folder is None and args.num_images > 0:
      t0 = time.perf_counter()
      phantom_export.export(tmp / "phantom", num=args.num_images, seed=0, size=256, workers=2)
      folder = tmp / "phantom" / "images"
      result["input"] = (f"{args.num_images} phantom images, 256 px "
                         f"({time.perf_counter() - t0:.0f} s to export)")
    if folder is not None:
      result["throughput"] = throughput(args, folder, tmp)
      result["in_process"] = in_process(args, folder)
    if args.list_files > 0:
      result["listing"] = listing(args.list_files, tmp)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  text = json.dumps(result, indent=1)
  if _OUT.value:
    pathlib.Path(_OUT.value).write_text(text + "\n")
  print(text)


if __name__ == "__main__":
  app.run(main)
