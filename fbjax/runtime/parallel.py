"""Data parallelism: one `('data',)` mesh over every device of every process.

The batch is sharded over the `data` axis and the train state is replicated;
`jax.jit` with these NamedShardings inserts the gradient all-reduce itself
(the modern successor of `pmap`). Multi-host runs call
`jax.distributed.initialize()` first; each process then feeds only its own
slice of the global batch (`jax.make_array_from_process_local_data`).

    initialize()                              # no-op on one host
    mesh = make_mesh()
    batch = shard_batch(local_numpy_batch, mesh)
    step = jax.jit(update, donate_argnums=(0,),
                   out_shardings=(replicated(mesh), replicated(mesh)))
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA = "data"


def _env_int(name: str) -> int | None:
  v = os.environ.get(name)
  return int(v) if v not in (None, "") else None


def multi_process_requested() -> bool:
  """True when the environment describes a run over several processes.

  Recognised: an explicit coordinator (`JAX_COORDINATOR_ADDRESS`), SLURM with
  more than one task, Open MPI with more than one rank, a multi-host Cloud TPU
  slice (`TPU_WORKER_HOSTNAMES` lists several hosts).
  """
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    return True
  for var in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    if (_env_int(var) or 1) > 1:
      return True
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return len([h for h in hosts.split(",") if h]) > 1


def initialize(mode: str = "auto") -> None:
  """Starts `jax.distributed` when the run spans several processes.

  Args:
    mode: "auto" (initialize when `multi_process_requested()`), "on" or "off".

  With `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` set
  (e.g. several processes on one machine) those are passed explicitly; on
  SLURM and TPU pods jax detects the cluster itself.
  """
  if mode not in ("auto", "on", "off"):
    raise ValueError(f"distributed mode must be auto, on or off, got {mode!r}")
  if mode == "off" or (mode == "auto" and not multi_process_requested()):
    return
  kwargs = {}
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    kwargs = dict(coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                  num_processes=_env_int("JAX_NUM_PROCESSES"),
                  process_id=_env_int("JAX_PROCESS_ID"))
  jax.distributed.initialize(**kwargs)
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D `('data',)` mesh over all devices (or the first `num_devices`).

  `num_devices` is for single-process experiments (e.g. comparing 1 and 8
  devices in one process); a multi-process run must use every device.
  """
  devices = jax.devices()
  if num_devices:
    if jax.process_count() > 1 and num_devices != len(devices):
      raise ValueError("num_devices must cover all devices in a multi-process run")
    if num_devices > len(devices):
      raise ValueError(f"num_devices={num_devices} but only {len(devices)} devices exist")
    devices = devices[:num_devices]
  # Auto axes: the compiler propagates the batch sharding through the model,
  # so models need no sharding annotations (Explicit axes reject e.g. a
  # reshape of a batch-sharded activation unless told its output sharding).
  return jax.make_mesh((len(devices),), (DATA,), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def batch_sharding(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def local_batch_size(global_batch_size: int, mesh) -> int:
  """This process's share of the global batch; checks it splits evenly."""
  n = mesh.devices.size
  if global_batch_size % n:
    raise ValueError(f"batch size {global_batch_size} is not divisible by {n} devices")
  return global_batch_size // jax.process_count()


def shard_batch(batch: Mapping[str, np.ndarray], mesh) -> dict:
  """Host-local numpy batch -> global arrays sharded along `data`.

  Non-numeric entries (strings such as `id`) stay behind on the host.
  """
  sharding = batch_sharding(mesh)
  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    if v.dtype.kind in "biuf":
      out[k] = jax.make_array_from_process_local_data(sharding, v)
  return out


def padded_batches(it: Iterator[dict], num_batches: int, local_batch: int) -> Iterator[dict]:
  """Exactly `num_batches` full-size batches from `it`, padded with masked rows.

  Evaluation over a finite split yields a different number of batches on each
  process (and a short last batch); a collective step needs the same count and
  shape everywhere. Each batch carries `_mask` (1 real, 0 padding), so that
  metrics computed as (sum, count) pairs stay exact.
  """
  template = None
  for _ in range(num_batches):
    b = next(it, None)
    if b is None:
      if template is None:
        raise ValueError("evaluation data is empty on this process")
      b = {k: np.zeros_like(v) for k, v in template.items()}
      n = 0
    else:
      b = {k: np.asarray(v) for k, v in b.items() if np.asarray(v).dtype.kind in "biuf"}
      template = template or b
      n = len(next(iter(b.values())))
    pad = local_batch - n
    if pad < 0:
      raise ValueError(f"batch of {n} exceeds the local batch size {local_batch}")
    if pad:
      b = {k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)]) if n else
           np.zeros((local_batch, *v.shape[1:]), v.dtype) for k, v in b.items()}
    b["_mask"] = (np.arange(local_batch) < n).astype(np.float32)
    yield b


def num_eval_batches(num_examples: int, global_batch: int) -> int:
  """Batches per process so that every process's slice fits (see `padded_batches`)."""
  per_process = -(-num_examples // jax.process_count())
  local = global_batch // jax.process_count()
  return max(1, -(-per_process // local))


def compile_once(fn, *args, out_shardings=None):
  """`jax.jit(fn)` compiled for `args`, for functions run once (e.g. init).

  On CPU, XLA's backend optimisations dominate the compile time of a
  parameter initialiser (many small random-number kernels) while saving
  nothing at run time, so they are switched off there.
  """
  lowered = jax.jit(fn, out_shardings=out_shardings).lower(*args)
  opts = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else {}
  return lowered.compile(compiler_options=opts)


def main_process_first(fn, name: str = "main_process_first"):
  """Runs `fn()` on process 0, then on the others (e.g. building a data set once).

  Every process must call this the same number of times (it is a barrier).
  """
  if jax.process_count() == 1:
    return fn()

  out = fn() if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices(name)
  return out if jax.process_index() == 0 else fn()
