r"""Real-data builders and input pipeline: build time and read speed (JSON, also `--out`).

    python -m benchmarks.data                       # manual files from $FBJAX_REAL_DATA
    python -m benchmarks.data --manual_dir ../shared/data --size 256 --images 2000 \
        --read_threads 1,2,4,8 --datasets hc18,fetal_planes_db,fetal_brain_abnormalities

1. Builds each data set from the manual folder into a fresh temporary
   data_dir and times it (wall seconds; target: < 60 s per shared sample on 2
   cores).
2. Reads each built `train` split through `tfds.data_source` (image features
   left encoded, `builders.data_source(..., decode_images=False)`) and
   `fbjax.data.pipeline.make_dataset` at `--size`, in training mode (shuffle,
   augmentation, repeat) and evaluation mode, for each `--read_threads`, and
   reports images/s (target: >= 500 at 256x256 on 2 cores), decoding every
   example ("decoding": what the first epoch costs) and with the in-memory
   cache of decoded examples (`make_dataset(..., cache=True)`, "cached":
   epochs after the first). The machine may be shared:
   `images_per_cpu_second` (images over the process's CPU time) is also
   given, and the load average before and after.
3. HC18: the worst relative HC error of the ellipse fitted to `head_mask`
   (fbjax.geometry.biometry.measure) against the CSV over all labelled images.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import sys
import tempfile
import time
import types

import cv2
import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags

from fbjax.data import builders, pipeline
from fbjax.geometry import biometry
from fbjax.runtime import tracking

DATASETS = ("hc18", "fetal_planes_db", "fetal_brain_abnormalities")

_MANUAL_DIR = flags.DEFINE_string("manual_dir", os.environ.get("FBJAX_REAL_DATA"),
                                  "Folder of the real data sets' files (or $FBJAX_REAL_DATA).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data_dir (default: a fresh temporary "
                                "folder).")
_DATASETS = flags.DEFINE_list("datasets", list(DATASETS), "Data sets to build and read.")
_SIZE = flags.DEFINE_integer("size", 256, "Pipeline grid (square).")
_IMAGES = flags.DEFINE_integer("images", 2000, "Images read per measurement.")
_READ_THREADS = flags.DEFINE_list("read_threads", ["1", "2", "4", "8"], "Reader threads tried.")
_OUT = flags.DEFINE_string("out", "", "Also write the JSON here.")


def build(name: str, manual_dir: str, data_dir: str) -> dict:
  t = time.perf_counter()
  c = time.process_time()
  with contextlib.redirect_stdout(sys.stderr):  # tfds prints progress; stdout is the JSON
    b = builders.prepare(name, data_dir=data_dir, manual_dir=manual_dir)
  return {"seconds": round(time.perf_counter() - t, 2),
          "cpu_seconds": round(time.process_time() - c, 2),
          "counts": {k: v.num_examples for k, v in b.info.splits.items()}}


def read_speed(name: str, data_dir: str, size: int, images: int, threads: int,
               train: bool, cache: bool, batch_size: int = 32) -> dict:
  src = builders.data_source(name, "train", data_dir=data_dir, decode_images=False)
  ds = pipeline.make_dataset(src, size=(size, size), batch_size=batch_size, seed=0,
                             train=train, num_epochs=None, drop_remainder=True,
                             read_threads=threads, cache=cache)
  it = iter(ds)
  # warm-up: thread pool and first reads; with the cache, one full epoch
  for _ in range(math.ceil(len(src) / batch_size) + 1 if cache else 1):
    next(it)
  n = 0
  t = time.perf_counter()
  c = time.process_time()
  while n < images:
    batch = next(it)
    n += batch["image"].shape[0]
  wall = time.perf_counter() - t
  cpu = time.process_time() - c
  return {"images": n, "images_per_second": round(n / wall, 1),
          "images_per_cpu_second": round(n / cpu, 1)}


def hc18_mask_error(data_dir: str) -> dict:
  b = builders.builder("hc18", data_dir=data_dir)
  skip = {k: tfds.decode.SkipDecoding() for k in builders.IMAGE_FEATURES}
  errs = []
  for split in ("train", "validation"):
    src = b.as_data_source(split=split, decoders=skip)
    for i in range(len(src)):
      ex = src[i]
      mask = cv2.imdecode(np.frombuffer(ex["head_mask"], np.uint8), cv2.IMREAD_UNCHANGED)
      hc = biometry.measure(mask, float(ex["pixel_spacing_mm"]), method="direct").hc_mm
      errs.append(((hc - float(ex["hc_mm"])) / float(ex["hc_mm"]), ex["id"].decode()))
  e = np.array([x[0] for x in errs])
  worst = max(errs, key=lambda x: abs(x[0]))
  return {"images": len(errs), "worst_relative_error": round(float(worst[0]), 6),
          "worst_id": worst[1], "mean_relative_error": round(float(e.mean()), 6),
          "mean_abs_relative_error": round(float(np.abs(e).mean()), 6),
          "fit": "fbjax.geometry.biometry.measure(head_mask, spacing, method='direct')"}


def main(argv) -> None:
  del argv
  tracking.quiet_library_logs()   # orbax's and grain's INFO chatter
  if not _MANUAL_DIR.value:
    raise app.UsageError("give --manual_dir or set FBJAX_REAL_DATA")
  args = types.SimpleNamespace(manual_dir=_MANUAL_DIR.value, data_dir=_DATA_DIR.value,
                               size=_SIZE.value, images=_IMAGES.value)
  tfds.disable_progress_bar()
  names = [n for n in _DATASETS.value if n]
  threads = [int(t) for t in _READ_THREADS.value]
  with tempfile.TemporaryDirectory() as tmp:
    data_dir = args.data_dir or tmp
    out = {"cpus": len(os.sched_getaffinity(0)), "load_average_start": os.getloadavg()[0],
           "size": [args.size, args.size], "build": {}, "read": {}}
    for name in names:
      out["build"][name] = build(name, args.manual_dir, data_dir)
    for name in names:
      res = {}
      for cache in (False, True):
        for mode in ("train", "eval"):
          for t in threads:
            key = f"{mode}_{'cached' if cache else 'decoding'}_threads{t}"
            res[key] = read_speed(name, data_dir, args.size, args.images, t,
                                  train=mode == "train", cache=cache)
      for kind in ("decoding", "cached"):
        best = max(((k, v) for k, v in res.items() if f"train_{kind}" in k),
                   key=lambda kv: kv[1]["images_per_second"])
        res[f"best_train_{kind}"] = {"setting": best[0], **best[1]}
      out["read"][name] = res
    if "hc18" in names:
      out["hc18_head_mask_hc"] = hc18_mask_error(data_dir)
    out["load_average_end"] = os.getloadavg()[0]
    out["targets"] = {"build_seconds_max": 60, "read_images_per_second_min": 500}
    out["build_ok"] = all(v["seconds"] < 60 for v in out["build"].values())
    for kind in ("decoding", "cached"):
      out[f"read_ok_{kind}"] = all(v[f"best_train_{kind}"]["images_per_second"] >= 500
                                   for v in out["read"].values())
    text = json.dumps(out, indent=1, default=lambda x: None if isinstance(x, float)
                      and math.isnan(x) else x)
    if _OUT.value:
      pathlib.Path(_OUT.value).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
  app.run(main)
