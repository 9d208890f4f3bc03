r"""Autoencoder benchmark: the prototype (`seed`) vs `default`, and train-step speed (JSON).

    python -m benchmarks.autoencoder                  # brain abnormalities, 224 px, 15 epochs
    python -m benchmarks.autoencoder --preset device     # the accelerator run (< 2 min on one H100)
    python -m benchmarks.autoencoder --size 112 --epochs 15 --workdir /tmp/ae_bench   # CPU

1. Accuracy: trains each variant of configs/autoencoder.py with the real
   trainer (`fbjax.trainers.autoencoder.train_and_evaluate`) on the same data,
   seed and epochs, and reads the validation MSE (on [0, 1] images) after every
   epoch from its metrics.jsonl. Beside them, two trivial baselines on the same
   validation images: the mean training image, and a thumbnail at the models'
   code resolution (1/8 per side, area-downsampled, bilinear back up).
   Goal: `default` reaches val MSE <= 0.00297 (the prototype's reported
   number) by epoch 15 and is below `seed` in the same run.
2. Speed: for each variant, the compile time of the train step, and images/s
   per device for the step fed by the real grain pipeline (decode, letterbox,
   augment, batch, host-to-device) and fed one device-resident batch again and
   again. Goal: pipeline overhead <= 5 %.

Writes `--out` (default `<workdir>/result.json`; also printed) and
`<workdir>/val_mse.png`. The data set is built (once) from `--manual_dir` into
`--data_dir`.
"""

from __future__ import annotations

import ast
import json
import math
import os
import pathlib
import tempfile
import time

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from configs import autoencoder, common
from fbjax.core import schema
from fbjax.data import pipeline, sources
from fbjax.evaluation import networks
from fbjax.models import autoencoder as ae
from fbjax.runtime import optim, parallel, tracking, train_lib
from fbjax.trainers import autoencoder as trainer

_PRESET = flags.DEFINE_enum("preset", None, ["device", "cpu_small"],
                            "device: 224 px, 15 epochs, cached decoded images, 16 read threads, "
                            "100 speed steps. cpu_small: 112 px, 15 epochs, 20 speed steps.")
_DATA = flags.DEFINE_string("data", "fetal_brain_abnormalities",
                            "Data set (configs/common.py DATASETS; name[:builder config]).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None,
                                  "Raw files of a real data set (default: $FBJAX_REAL_DATA, "
                                  "else ../shared/data beside the repository).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where to build the data set (tfds data_dir).")
_SIZE = flags.DEFINE_integer("size", 224, "Network grid (square).")
_EPOCHS = flags.DEFINE_integer("epochs", 15, "Training epochs per variant.")
_BATCH = flags.DEFINE_integer("batch", 32, "Global batch size.")
_VARIANTS = flags.DEFINE_list("variants", ["seed", "default"], "Variants to train.")
_SPEED_STEPS = flags.DEFINE_integer("speed_steps", 30, "Timed steps per speed measurement.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Alternating speed rounds (best of each kept).")
_SET = flags.DEFINE_multi_string("set", [], "Config override for one variant, e.g. "
                                 "--set=default.model.widths=(24,48,96).")
_READ_THREADS = flags.DEFINE_integer("read_threads", 4, "grain read threads.")
_WORKERS = flags.DEFINE_integer("worker_count", 0, "grain worker processes (0: threads only).")
_CACHE = flags.DEFINE_bool("cache", False, "Keep decoded, resized images in memory.")
_SKIP_TRAIN = flags.DEFINE_bool("skip_train", False, "Speed only.")
_SKIP_SPEED = flags.DEFINE_bool("skip_speed", False, "Accuracy only.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder: the variants' workdirs, the "
                               "plot (default: a new temporary folder).")
_OUT = flags.DEFINE_string("out", None, "JSON output path (default: <workdir>/result.json).")

TARGET_MSE = 0.00297
REPO = pathlib.Path(__file__).resolve().parents[1]


def _apply_preset():
  presets = {
      "device": dict(size=224, epochs=15, batch=32, speed_steps=100, read_threads=16,
                     cache=True),
      "cpu_small": dict(size=112, epochs=15, batch=32, speed_steps=20),
  }
  for k, v in presets.get(_PRESET.value, {}).items():
    if not flags.FLAGS[k].present:
      flags.FLAGS[k].value = v


def make_config(variant: str):
  c = autoencoder.get_config(f"variant={variant},data={_DATA.value}")
  common.benchmark_data(c, size=_SIZE.value, read_threads=_READ_THREADS.value,
                        worker_count=_WORKERS.value, cache=_CACHE.value,
                        manual_dir=_MANUAL_DIR.value or os.environ.get("FBJAX_REAL_DATA")
                        or str(REPO.parent / "shared" / "data"),
                        data_dir=_DATA_DIR.value)
  if data_block(c).name == "toy":   # toy images drawn at the grid, as they were before
    data_block(c).source_size = (_SIZE.value, _SIZE.value)
  c.num_epochs = _EPOCHS.value
  c.batch_size = _BATCH.value
  c.eval_batch_size = _BATCH.value
  c.log_every = 1000
  c.checkpoint_every = 10**9      # only the final checkpoint
  c.wandb.mode = "disabled"
  for item in _SET.value:
    target, _, value = item.partition("=")
    name, _, key = target.partition(".")
    if name != variant:
      continue
    *parents, leaf = key.split(".")
    node = c
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise KeyError(f"--set {item}: no field {key} in the {variant} config")
    node[leaf] = ast.literal_eval(value) if value[:1] in "([{0123456789-." else value
  return c


def data_block(config):
  """The autoencoder's one data block (`config.sources`, under its short name)."""
  (block,) = config.sources.values()
  return block


def baselines(config) -> dict:
  """Val MSE of the mean training image and of a 1/8-per-side thumbnail."""

  block = data_block(config)

  def images(split):
    ds = pipeline.make_dataset(sources.get_source(block, split), size=schema.size_of(config),
                               batch_size=config.batch_size, seed=0, train=False,
                               keys=("image",), read_threads=config.read_threads)
    return np.concatenate([b["image"] for b in ds])

  train, val = images(block.train_split), images(block.val_split)
  h, w = val.shape[1:]
  thumbs = np.stack([cv2.resize(cv2.resize(v, (w // 8, h // 8), interpolation=cv2.INTER_AREA),
                                (w, h), interpolation=cv2.INTER_LINEAR) for v in val])
  return {"mean_train_image": float(np.mean((val - train.mean(0)) ** 2)),
          "thumbnail_1_8": float(np.mean((val - thumbs) ** 2)),
          "num_train": len(train), "num_val": len(val)}


def train_variant(variant: str, out: pathlib.Path) -> dict:
  config = make_config(variant)
  workdir = out / variant
  t0 = time.perf_counter()
  state = trainer.train_and_evaluate(config, str(workdir))
  wall = time.perf_counter() - t0
  rows = tracking.read_metrics(workdir)
  evals = [r for r in rows if "val/mse" in r]
  n_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(state["params"])))
  # Each row's timing covers the training steps since the previous row (evaluation excluded).
  speeds = [r["perf/images_per_s_per_device"] for r in rows if "perf/images_per_s_per_device" in r]
  return {"val_mse": [r["val/mse"] for r in evals], "epoch": [r["epoch"] for r in evals],
          "train_loss": [r.get("train/epoch_loss") for r in evals], "params": n_params,
          "train_wall_s": wall,
          "trainer_images_per_s_per_device_median": float(np.median(speeds)) if speeds else None}


def speed_variant(variant: str) -> dict:
  config = make_config(variant)
  mesh = parallel.make_mesh()
  rep = parallel.replicated(mesh)
  n_dev = mesh.devices.size
  block = data_block(config)
  source = sources.get_source(block, block.train_split)
  steps_per_epoch = len(source) // config.batch_size
  model = ae.Model(**config.model)
  schedule = optim.make_schedule(config.optimizer, 10 * steps_per_epoch, steps_per_epoch)
  tx = optim.make_optimizer(config.optimizer, schedule)
  size = schema.size_of(config)
  loss_fn = trainer.make_loss_fn(model, networks.autoencoder_inputs(config))
  init = train_lib.make_init_fn(
      lambda r: model.init(r, jnp.zeros((1, *size, config.model.channels)))["params"], tx)
  rng = jax.random.key(0)
  state = parallel.compile_once(init, rng, out_shardings=rep)(rng)
  update = jax.jit(train_lib.make_update_fn(loss_fn, tx, schedule), donate_argnums=(0,),
                   out_shardings=(rep, rep))
  it = iter(train_lib.train_dataset(config, source, trainer.data_keys(config)))
  batch = parallel.shard_batch(next(it), mesh)
  t0 = time.perf_counter()
  step = update.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0

  def timed(feed, n):
    nonlocal state
    for _ in range(3):  # warm-up (first runs allocate)
      state, m = step(state, feed())
    jax.block_until_ready(state)
    t = time.perf_counter()
    for _ in range(n):
      state, m = step(state, feed())
    jax.block_until_ready((state, m))
    return n * config.batch_size / (time.perf_counter() - t) / n_dev

  # Alternate the two feeds a few times and keep each one's best round: on a
  # shared machine the load changes between rounds.
  n = _SPEED_STEPS.value
  fed_runs, resident_runs = [], []
  for _ in range(_ROUNDS.value):
    resident_runs.append(timed(lambda: batch, n))
    fed_runs.append(timed(lambda: parallel.shard_batch(next(it), mesh), n))
  fed, resident = max(fed_runs), max(resident_runs)
  return {"compile_s": compile_s, "steps_per_round": n, "batch": config.batch_size,
          "pipeline_images_per_s_per_device": fed,
          "resident_images_per_s_per_device": resident,
          "pipeline_runs": fed_runs, "resident_runs": resident_runs,
          "pipeline_overhead_pct": 100.0 * (1.0 - fed / resident)}


def plot(result: dict, path: pathlib.Path) -> None:
  """Validation MSE per epoch for each variant (log scale), with the 0.00297 line."""

  w, h, m = 720, 480, 70
  img = np.full((h, w, 3), 255, np.uint8)
  curves = {v: r["val_mse"] for v, r in result["variants"].items() if r["val_mse"]}
  vals = [x for c in curves.values() for x in c] + [TARGET_MSE]
  if result.get("baselines", {}).get("thumbnail_1_8"):
    vals.append(result["baselines"]["thumbnail_1_8"])
  lo, hi = math.log10(min(vals)) - 0.1, math.log10(max(vals)) + 0.1
  n_ep = max(len(c) for c in curves.values())
  px = lambda e: int(m + (e - 1) / max(n_ep - 1, 1) * (w - 2 * m))
  py = lambda v: int(h - m - (math.log10(v) - lo) / (hi - lo) * (h - 2 * m))
  cv2.rectangle(img, (m, m), (w - m, h - m), (0, 0, 0), 1)
  for e in range(1, n_ep + 1):
    cv2.putText(img, str(e), (px(e) - 5, h - m + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
  for k in range(5):
    v = 10 ** (lo + k / 4 * (hi - lo))
    cv2.putText(img, f"{v:.4f}", (4, py(v) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
  thumb = result.get("baselines", {}).get("thumbnail_1_8")
  if thumb and lo < math.log10(thumb) < hi:
    cv2.line(img, (m, py(thumb)), (w - m, py(thumb)), (150, 150, 150), 1)
    cv2.putText(img, "1/8 thumbnail", (w - m - 120, py(thumb) - 6), cv2.FONT_HERSHEY_SIMPLEX,
                0.45, (150, 150, 150), 1)
  cv2.line(img, (m, py(TARGET_MSE)), (w - m, py(TARGET_MSE)), (0, 0, 200), 1)
  cv2.putText(img, "prototype's 0.00297", (w - m - 170, py(TARGET_MSE) - 6),
              cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 200), 1)
  colours = [(200, 80, 0), (0, 150, 0), (120, 0, 160), (0, 120, 200)]
  for i, (v, c) in enumerate(curves.items()):
    pts = np.array([(px(e + 1), py(x)) for e, x in enumerate(c)], np.int32)
    cv2.polylines(img, [pts], False, colours[i % 4], 2)
    cv2.putText(img, v, (m + 10, m + 20 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.55,
                colours[i % 4], 2)
  cv2.putText(img, f"validation MSE per epoch ({result['data']}, {result['size']} px)",
              (m, m - 15), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1)
  cv2.imwrite(str(path), img)


def main(argv):
  del argv
  _apply_preset()

  tracking.quiet_library_logs()
  out = pathlib.Path(_WORKDIR.value or tempfile.mkdtemp(prefix="ae_bench_"))
  out.mkdir(parents=True, exist_ok=True)
  dev = jax.devices()[0]
  result = {"device": f"{dev.platform}: {dev.device_kind}", "num_devices": jax.device_count(),
            "data": _DATA.value, "size": _SIZE.value, "epochs": _EPOCHS.value,
            "batch": _BATCH.value, "cache": _CACHE.value, "read_threads": _READ_THREADS.value,
            "worker_count": _WORKERS.value,
            "load_avg_start": os.getloadavg()[0], "variants": {}, "speed": {}}
  t0 = time.perf_counter()
  result["baselines"] = baselines(make_config("default"))
  if not _SKIP_TRAIN.value:
    for v in _VARIANTS.value:
      result["variants"][v] = train_variant(v, out)
  if not _SKIP_SPEED.value:
    for v in _VARIANTS.value:
      result["speed"][v] = speed_variant(v)
  result["load_avg_end"] = os.getloadavg()[0]
  result["wall_s"] = time.perf_counter() - t0
  if "default" in result["variants"]:
    d = result["variants"]["default"]["val_mse"]
    at15 = d[min(15, len(d)) - 1] if d else None
    goal = {"default_val_mse_at_epoch_15": at15, "target": TARGET_MSE,
            "default_reaches_target": at15 is not None and at15 <= TARGET_MSE}
    if "seed" in result["variants"]:
      s = result["variants"]["seed"]["val_mse"]
      goal["seed_val_mse_same_epoch"] = s[min(15, len(s)) - 1] if s else None
      goal["default_below_seed"] = bool(d and s and d[-1] < s[-1] and at15 < goal[
          "seed_val_mse_same_epoch"])
    result["goal"] = goal
    plot(result, out / "val_mse.png")
  with open(_OUT.value or out / "result.json", "w") as f:
    json.dump(result, f, indent=1)
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  app.run(main)
