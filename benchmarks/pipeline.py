r"""The host input pipeline's share of an autoencoder train step: augmentation on host vs device.

    python -m benchmarks.pipeline --data_dir /tmp/fbjax_tfds --out docs/pipeline_share_cpu112.json

For `configs/autoencoder.py` (variant `default`, at the CPU size of
benchmarks/autoencoder.py: 112 px, batch 32, decoded images cached in memory)
and each `config.augment_on` ("host": OpenCV per example in the grain
pipeline; "device": fbjax/data/device_augment.py inside the jitted step),
times, in alternating rounds (best of each kept, the CPU being shared):

  (a) the pipeline alone: batches drawn from the training iterator and put on
      the device (seconds per batch);
  (b) the jitted update step alone, fed one device-resident batch again and
      again (with "device", the step includes the augmentation);
  (c) the step fed by the pipeline, as in training;
  (d) the device augmentation alone (`make_batch_fn`, jitted, on the resident
      batch; the identity for "host"): the part of (b) it accounts for.

and prints JSON with, per mode, `pipeline_share_of_step` = (c - b) / c (the
part of a training step's wall time that waiting for the host pipeline adds),
`pipeline_alone_over_step` = a / c (the host's time per batch against a step:
what bounds the speed once the step is faster than the host, as on an
accelerator) and `pipeline_cpu_share_of_step` = a / c in process CPU seconds
(the part of a training step's CPU work spent in the input pipeline: on a CPU
backend the pipeline and the step share the cores, and CPU seconds move less
than wall time when other jobs load the machine). The update step is the trainer's own
(`fbjax.runtime.train_lib.make_update_fn`); with "device" the batch first
goes through `device_augment.make_batch_fn(config)` with the RNG folded
from the train state's RNG and step, as a trainer does.
"""

from __future__ import annotations

import json
import os
import pathlib
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from configs import autoencoder, common
from fbjax.core import schema
from fbjax.data import device_augment, pipeline, sources
from fbjax.evaluation import networks
from fbjax.models import autoencoder as ae
from fbjax.runtime import optim, parallel, tracking, train_lib
from fbjax.trainers import autoencoder as trainer

_DATA = flags.DEFINE_string("data", "fetal_brain_abnormalities",
                            "Data set (configs/common.py DATASETS; name[:builder config]).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None,
                                  "Raw files (default: $FBJAX_REAL_DATA/<data>, else "
                                  "../shared/data/<data> beside the repository).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where to build the data set (tfds data_dir).")
_VARIANT = flags.DEFINE_string("variant", "default", "configs/autoencoder.py variant.")
_SIZE = flags.DEFINE_integer("size", 112, "Network grid (square).")
_BATCH = flags.DEFINE_integer("batch", 32, "Global batch size.")
_MODES = flags.DEFINE_list("augment_on", ["host", "device"], "config.augment_on values.")
_STEPS = flags.DEFINE_integer("steps", 6, "Timed steps (or batches) per measurement.")
_PIPELINE_BATCHES = flags.DEFINE_integer("pipeline_batches", 32,
                                         "Batches timed for the pipeline alone.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Alternating rounds (best of each kept).")
_READ_THREADS = flags.DEFINE_integer("read_threads", 4, "grain read threads.")
_WORKERS = flags.DEFINE_integer("worker_count", 0, "grain worker processes (0: threads only).")
_CACHE = flags.DEFINE_bool("cache", True, "Keep decoded, resized images in memory.")
_OUT = flags.DEFINE_string("out", None, "Also write the JSON here.")

REPO = pathlib.Path(__file__).resolve().parents[1]


def make_config(augment_on: str):
  c = autoencoder.get_config(f"variant={_VARIANT.value},data={_DATA.value}")
  root = os.environ.get("FBJAX_REAL_DATA") or str(REPO.parent / "shared" / "data")
  common.benchmark_data(c, size=_SIZE.value, read_threads=_READ_THREADS.value,
                        worker_count=_WORKERS.value, cache=_CACHE.value,
                        manual_dir=_MANUAL_DIR.value or str(pathlib.Path(root)
                                                            / data_block(c).name),
                        data_dir=_DATA_DIR.value)
  if data_block(c).name == "toy":   # toy images drawn at the grid, as they were before
    data_block(c).source_size = (_SIZE.value, _SIZE.value)
  c.augment_on = augment_on
  c.batch_size = _BATCH.value
  return c


def data_block(config):
  """The autoencoder's one data block (`config.sources`, under its short name)."""
  (block,) = config.sources.values()
  return block


class Mode:
  """One augment_on setting: its pipeline iterator, compiled step and train state."""

  def __init__(self, augment_on: str, source, mesh):
    config = make_config(augment_on)
    self.config, self.mesh = config, mesh
    rep = parallel.replicated(mesh)
    steps_per_epoch = len(source) // config.batch_size
    model = ae.Model(**config.model)
    schedule = optim.make_schedule(config.optimizer, 10 * steps_per_epoch, steps_per_epoch)
    tx = optim.make_optimizer(config.optimizer, schedule)
    size = schema.size_of(config)
    loss_fn = trainer.make_loss_fn(model, networks.autoencoder_inputs(config))
    # The trainer's own step: the loop adds the on-device augmentation when asked to.
    update_fn = train_lib.make_update_fn(loss_fn, tx, schedule,
                                         train_lib.with_device_augment(config, None))
    augment = device_augment.make_batch_fn(config)

    def init_params(rng):
      return model.init(rng, jnp.zeros((1, *size, config.model.channels)))["params"]

    init = train_lib.make_init_fn(init_params, tx)
    rng = jax.random.key(0)
    self.state = parallel.compile_once(init, rng, out_shardings=rep)(rng)
    self.it = iter(pipeline.make_dataset(
        source, size=size, batch_size=config.batch_size, seed=config.seed, train=True,
        num_epochs=None, keys=trainer.data_keys(config),
        augment=device_augment.host_augment(config),
        worker_count=config.data_workers, read_threads=config.read_threads,
        cache=config.data_cache))
    if config.data_cache:  # one epoch through the cache: later rounds read decoded images
      for _ in range(steps_per_epoch):
        next(self.it)
    self.batch = self.next_batch()
    self.augment, self.key = jax.jit(augment), jax.random.key(1)
    update = jax.jit(update_fn, donate_argnums=(0,), out_shardings=(rep, rep))
    t0 = time.perf_counter()
    self.step = update.lower(self.state, self.batch).compile()
    self.compile_s = time.perf_counter() - t0
    self.runs: dict[str, list[float]] = {}

  def next_batch(self):
    return parallel.shard_batch(next(self.it), self.mesh)

  def _timed(self, fn, n):
    """Wall-clock and process CPU seconds per call of `fn` (CPU: all threads, so the
    pipeline's reader threads count wherever they run)."""

    w, c = time.perf_counter(), time.process_time()
    for _ in range(n):
      out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - w) / n, (time.process_time() - c) / n

  def _step(self, feed):
    self.state, m = self.step(self.state, feed())
    return self.state, m

  def round(self, n: int):
    # (a) Drain the read-ahead buffer first (64 examples), so the time is the pipeline's rate.
    for _ in range(-(-64 // self.config.batch_size) + 1):
      self.next_batch()
    self._record("pipeline", self._timed(self.next_batch, _PIPELINE_BATCHES.value))
    self._timed(lambda: self.augment(self.key, self.batch), 2)
    self._record("augment", self._timed(lambda: self.augment(self.key, self.batch), n))
    self._timed(lambda: self._step(lambda: self.batch), 2)  # warm-up
    self._record("resident_step", self._timed(lambda: self._step(lambda: self.batch), n))
    self._timed(lambda: self._step(self.next_batch), 2)
    self._record("fed_step", self._timed(lambda: self._step(self.next_batch), n))

  def _record(self, name, wall_cpu):
    self.runs.setdefault(f"{name}_s", []).append(wall_cpu[0])
    self.runs.setdefault(f"{name}_cpu_s", []).append(wall_cpu[1])

  def result(self) -> dict:
    best = {k: min(v) for k, v in self.runs.items()}
    a, b, c = best["pipeline_s"], best["resident_step_s"], best["fed_step_s"]
    a_cpu, b_cpu, c_cpu = (best[f"{k}_cpu_s"] for k in ("pipeline", "resident_step", "fed_step"))
    return {"compile_s": self.compile_s, "pipeline_s_per_batch": a,
            "resident_step_s": b, "fed_step_s": c,
            "pipeline_batches_per_s": 1 / a, "fed_images_per_s": self.config.batch_size / c,
            "pipeline_share_of_step": (c - b) / c, "pipeline_alone_over_step": a / c,
            "pipeline_cpu_s_per_batch": a_cpu, "resident_step_cpu_s": b_cpu,
            "fed_step_cpu_s": c_cpu, "pipeline_cpu_share_of_step": a_cpu / c_cpu,
            "augment_in_step_s": best["augment_s"], "augment_in_step_cpu_s": best["augment_cpu_s"],
            "runs": self.runs}


def main(argv):
  del argv

  tracking.quiet_library_logs()
  t0 = time.perf_counter()
  dev = jax.devices()[0]
  base = make_config("host")
  block = data_block(base)
  source = sources.get_source(block, block.train_split)
  mesh = parallel.make_mesh()
  result = {"device": f"{dev.platform}: {dev.device_kind}", "num_devices": jax.device_count(),
            "cpu_count": os.cpu_count(), "data": _DATA.value, "variant": _VARIANT.value,
            "size": _SIZE.value, "batch": _BATCH.value, "cache": _CACHE.value,
            "read_threads": _READ_THREADS.value, "worker_count": _WORKERS.value,
            "steps": _STEPS.value, "rounds": _ROUNDS.value,
            "load_avg_start": os.getloadavg()[0], "modes": {}}
  modes = {m: Mode(m, source, mesh) for m in _MODES.value}
  with jax.set_mesh(mesh):
    for _ in range(_ROUNDS.value):
      for mode in modes.values():
        mode.round(_STEPS.value)
  result["modes"] = {name: mode.result() for name, mode in modes.items()}
  if {"host", "device"} <= set(modes):
    h, d = result["modes"]["host"], result["modes"]["device"]
    result["device_over_host"] = {
        "fed_step_s": d["fed_step_s"] / h["fed_step_s"],
        "resident_step_s": d["resident_step_s"] / h["resident_step_s"],
        "pipeline_s_per_batch": d["pipeline_s_per_batch"] / h["pipeline_s_per_batch"],
        "pipeline_cpu_s_per_batch": d["pipeline_cpu_s_per_batch"] / h["pipeline_cpu_s_per_batch"]}
  result["load_avg_end"] = os.getloadavg()[0]
  result["wall_s"] = time.perf_counter() - t0
  text = json.dumps(result, indent=1)
  if _OUT.value:
    pathlib.Path(_OUT.value).write_text(text + "\n")
  print(text)


if __name__ == "__main__":
  app.run(main)
