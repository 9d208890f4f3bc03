"""The training loop every trainer in fbjax/trainers runs (big_vision / flax-examples style).

A trainer keeps what is its own (model, loss, evaluators, artefacts) and hands
them to `train`, which does the rest in this order:

  mesh and shardings -> input pipeline -> optimizer and schedule
  -> restore the latest checkpoint or initialise -> step loop (log line with
  ETA and images/s, NaN check, periodic evaluation and checkpoints)
  -> final evaluation of the final parameters -> the trainer's artefacts
  -> `complete.json`.

Determinism: the data order and augmentation are functions of the seed and
the position in the stream, the step is folded into the RNG, and the grain
iterator state and the running epoch sums are saved with each checkpoint, so
a run killed and resumed ends with the same parameters and metrics as one
that was never interrupted.

Artefacts: the trainer's `finish` writes what prediction needs besides the
parameters (e.g. a decision threshold) from the final evaluation of the
final checkpoint; `complete.json` records the step they belong to. A run
killed after its last checkpoint but before `complete.json` redoes the
final evaluation and the artefacts when it is started again.

The train step is `loss_fn(params, batch, rng) -> (loss, {name: term})`
behind one generic update (gradient, optimizer, metrics); `batch_fn(rng,
batch) -> batch` is the place for on-device batch transforms (e.g.
augmentation), called inside the jitted step with its own step-folded RNG.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils

from fbjax.core import checkpoint as ckpt_lib
from fbjax.core import schema
from fbjax.core import workdir as workdir_lib
from fbjax.data import device_augment, pipeline
from fbjax.runtime import optim, parallel, tracking

COMPLETE = workdir_lib.COMPLETE


@dataclasses.dataclass
class Run:
  """What a trainer's evaluators and artefact writer see of the running job."""

  config: ml_collections.ConfigDict
  workdir: str
  mesh: jax.sharding.Mesh
  writer: tracking.Writer | None = None
  total_steps: int = 0
  steps_per_epoch: int = 0
  batch_size: int | None = None   # evaluation batch (default: config.eval_batch_size)

  @property
  def is_main(self) -> bool:
    return jax.process_index() == 0

  def jit(self, fn):
    """`fn(params, batch)` jitted for sharded batches, replicated outputs."""
    return jax.jit(fn, out_shardings=parallel.replicated(self.mesh))

  def batches(self, source, keys):
    """Padded, sharded evaluation batches over `source` (this process's slice)."""
    opts = data_options(self.config)
    batch_size = self.batch_size or self.config.eval_batch_size
    ds = pipeline.make_dataset(
        source, size=opts["size"], batch_size=batch_size,
        seed=self.config.seed, train=False, num_epochs=1, keys=keys,
        process_index=jax.process_index(), process_count=jax.process_count(),
        read_threads=opts["read_threads"], cache=opts["cache"])
    n = parallel.num_eval_batches(len(source), batch_size)
    local = batch_size // jax.process_count()
    for b in parallel.padded_batches(iter(ds), n, local):
      yield parallel.shard_batch(b, self.mesh)


def eval_run(config, workdir: str = "", batch_size: int | None = None) -> Run:
  """A `Run` for evaluating outside training (`launch.evaluate`, benchmarks, the demo)."""
  mesh = parallel.make_mesh(None)
  if (batch_size or config.eval_batch_size) % mesh.devices.size:
    mesh = parallel.make_mesh(1)   # a batch that does not split evenly runs on one device
  return Run(config=config, workdir=workdir, mesh=mesh, batch_size=batch_size)


def data_options(config) -> dict:
  """The input pipeline's options: the grid (`config.input.size`) and the top-level
  switches (`fbjax.core.schema`)."""
  return {"size": schema.size_of(config), "worker_count": int(config.get("data_workers", 0)),
          "read_threads": int(config.get("read_threads", 4)),
          "cache": bool(config.get("data_cache", False))}


def log_source(names, source) -> None:
  """One log line: which blocks the training data comes from, and how much."""
  desc = repr(source) if hasattr(source, "counts") else f"{len(source)} examples"
  tracking.log(f"training on {', '.join(names)}: {desc}")


def train_dataset(config, source, keys):
  """The endless, shuffled, augmented training stream of this process's slice."""
  opts = data_options(config)
  return pipeline.make_dataset(
      source, size=opts["size"], batch_size=config.batch_size, seed=config.seed, train=True,
      num_epochs=None, keys=keys, augment=device_augment.host_augment(config),
      process_index=jax.process_index(), process_count=jax.process_count(),
      worker_count=opts["worker_count"], read_threads=opts["read_threads"],
      cache=opts["cache"])


def make_init_fn(init_params, tx):
  """rng -> the initial train state: a plain dict (step, params, opt, rng)."""

  def init(rng):
    params = init_params(rng)
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt": tx.init(params),
            "rng": jax.random.key_data(jax.random.fold_in(rng, 1))}

  return init


def make_update_fn(loss_fn, tx, schedule, batch_fn=None):
  """The pure train step (state, batch) -> (state, metrics); jit it with shardings."""

  def update_fn(state, batch):
    # The step is folded into the RNG: each step draws fresh randomness and a
    # resumed run draws exactly what the uninterrupted one did.
    rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
    if batch_fn is not None:
      rng, batch_rng = jax.random.split(rng)
      batch = batch_fn(batch_rng, batch)
    (loss, terms), grads = jax.value_and_grad(
        lambda p: loss_fn(p, batch, rng), has_aux=True)(state["params"])
    updates, opt = tx.update(grads, state["opt"], state["params"])
    new_state = dict(state, step=state["step"] + 1, opt=opt,
                     params=optax.apply_updates(state["params"], updates))
    return new_state, {"loss": loss, **{f"loss_{k}": v for k, v in terms.items()},
                       "grad_norm": optax.global_norm(grads), "lr": schedule(state["step"])}

  return update_fn


def with_device_augment(config, batch_fn: Callable | None) -> Callable | None:
  """`batch_fn` preceded by the on-device augmentation when `augment_on="device"`."""
  if not config.get("augment", True) or config.get("augment_on", "host") == "host":
    return batch_fn
  augment = device_augment.make_batch_fn(config)
  if batch_fn is None:
    return augment

  def both(rng, batch):
    rng_aug, rng_fn = jax.random.split(rng)
    return batch_fn(rng_fn, augment(rng_aug, batch))

  return both


def completed_step(workdir: str) -> int | None:
  """The step whose artefacts `workdir` holds (`complete.json`), or None.

  Process 0's answer, given to every process: the final evaluation that may
  follow is collective, so all processes must take the same branch.
  """
  step = -1
  if jax.process_index() == 0:
    done = workdir_lib.completed_step(workdir)
    step = -1 if done is None else done
  if jax.process_count() > 1:

    step = int(multihost_utils.broadcast_one_to_all(np.int32(step)))
  return None if step < 0 else step


def _train_row(pending, fetched, steps_per_epoch: int, step: int, timing: dict) -> dict:
  tracking.check_finite((s, m["loss"]) for (s, _), m in zip(pending, fetched, strict=True))
  mean = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[-1]
          if k.startswith("loss")}
  return {"epoch": step / steps_per_epoch, **{f"train/{k}": v for k, v in mean.items()},
          "train/grad_norm": float(fetched[-1]["grad_norm"]),
          "train/lr": float(fetched[-1]["lr"]), **timing}


def _eval_line(step: int, row: dict, shown: tuple[str, ...], seconds: float) -> str:
  vals = " | ".join(f"{k[4:]} {v:.4f}" for k, v in row.items() if k.startswith("val/")
                    and isinstance(v, float) and (not shown or any(s in k for s in shown)))
  return f"step {step} | {vals} | eval {seconds:.1f} s"


def train(config, workdir: str, *, kind: str, train_source, keys, init_params: Callable,
          loss_fn: Callable, evaluate: Callable, make_tx: Callable | None = None,
          warm_start: Callable | None = None, finish: Callable | None = None,
          batch_fn: Callable | None = None, shown: tuple[str, ...] = ()):
  """Trains and evaluates; resumes from `workdir`'s latest checkpoint. Returns the state.

  Args:
    kind: the model kind recorded in `config.json` for `fbjax.evaluation.inference.load`.
    train_source: the random-access training source (e.g. a `MixSource`).
    keys: the batch keys the pipeline decodes.
    init_params: rng -> the model's initial parameters.
    loss_fn: (params, batch, rng) -> (scalar loss, {term name: scalar}).
    evaluate: (run, params, step) -> (row of "val/..." scalars, result for `finish`).
    make_tx: schedule -> optax transformation (default: `optim.make_optimizer`).
    warm_start: params (numpy) -> params, applied to a fresh initialisation only.
    finish: (run, params, step, result) -> None, writes the workdir's artefacts
      (called on every process; write on `run.is_main`).
    batch_fn: (rng, batch) -> batch inside the jitted step (e.g. augmentation).
    shown: substrings of the validation metrics printed in the log line (all if empty).
  """
  workdir = os.path.abspath(workdir)  # orbax needs absolute paths
  t_start = time.perf_counter()
  with config.unlocked():
    config.kind = kind
  # The workdir's config is the record its checkpoints and artefacts belong to.
  workdir_lib.check_config(workdir, config)

  # ---------------------------------------------------------------------------
  # Mesh.
  # ---------------------------------------------------------------------------
  mesh = parallel.make_mesh(config.get("num_devices") or None)
  n_dev = mesh.devices.size
  rep = parallel.replicated(mesh)
  local_batch = parallel.local_batch_size(config.batch_size, mesh)
  parallel.local_batch_size(config.eval_batch_size, mesh)
  tracking.log(f"mesh: {n_dev} devices over {jax.process_count()} processes; "
               f"global batch {config.batch_size} ({local_batch} per process)")

  # ---------------------------------------------------------------------------
  # Input pipeline.
  # ---------------------------------------------------------------------------
  steps_per_epoch = len(train_source) // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"{len(train_source)} training examples < batch size {config.batch_size}")
  total_steps = config.total_steps or config.num_epochs * steps_per_epoch
  train_iter = iter(train_dataset(config, train_source, keys))

  # ---------------------------------------------------------------------------
  # Optimizer and initial state.
  # ---------------------------------------------------------------------------
  schedule = optim.make_schedule(config.optimizer, total_steps, steps_per_epoch)
  tx = (make_tx or (lambda s: optim.make_optimizer(config.optimizer, s)))(schedule)

  init = make_init_fn(init_params, tx)
  init_rng = jax.random.key(config.seed)
  abstract_state = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep),
                                jax.eval_shape(init, init_rng))
  batch_fn = with_device_augment(config, batch_fn)
  update = jax.jit(make_update_fn(loss_fn, tx, schedule, batch_fn), donate_argnums=(0,),
                   out_shardings=(rep, rep))

  # ---------------------------------------------------------------------------
  # Restore or initialise.
  # ---------------------------------------------------------------------------
  mngr = ckpt_lib.manager(workdir, keep=config.keep_checkpoints, every=config.checkpoint_every,
                          async_save=config.async_checkpoint)
  restored = ckpt_lib.restore(mngr, abstract_state, train_iter)
  extra = {}
  if restored is None:
    state = parallel.compile_once(init, init_rng, out_shardings=rep)(init_rng)
    if warm_start is not None:
      params = jax.device_put(warm_start(jax.device_get(state["params"])), rep)
      state = dict(state, params=params, opt=jax.jit(tx.init, out_shardings=rep)(params))
  else:
    state, meta = restored
    extra = meta["extra"]
  step = int(jax.device_get(state["step"]))
  writer = tracking.Writer(workdir, config)
  writer.truncate(step)
  if restored is not None:
    tracking.log(f"resumed from step {step} in {workdir}")
  run = Run(config, workdir, mesh, writer, total_steps, steps_per_epoch)
  epoch_sum = float(extra.get("epoch_loss_sum", 0.0))
  epoch_count = int(extra.get("epoch_loss_count", 0))

  # ---------------------------------------------------------------------------
  # Train loop.
  # ---------------------------------------------------------------------------
  progress = tracking.Progress(total_steps, config.batch_size, n_dev)
  pending = []            # (step, metrics on device) since the last flush
  compile_s, compile_logged = None, False
  final = None            # (result,) of the evaluation at total_steps in this session
  tracking.log(f"{total_steps} steps ({steps_per_epoch} per epoch), starting at step {step}; "
               f"setup took {time.perf_counter() - t_start:.1f} s")
  try:
    with jax.set_mesh(mesh):
      while step < total_steps:
        batch = parallel.shard_batch(next(train_iter), mesh)
        if compile_s is None:
          t0 = time.perf_counter()
          update = update.lower(state, batch).compile()
          compile_s = time.perf_counter() - t0
          tracking.log(f"compiled the update step in {compile_s:.1f} s")
          progress.start(step)
        state, metrics = update(state, batch)
        step += 1
        pending.append((step, metrics))

        last = step == total_steps
        epoch_end = step % steps_per_epoch == 0
        ckpt_due = step % config.checkpoint_every == 0 or last
        eval_due = (step % config.eval_every == 0 if config.eval_every else epoch_end) or last
        if not (step % config.log_every == 0 or epoch_end or ckpt_due or eval_due):
          continue

        # One host transfer for every step since the last flush; one metrics row per step.
        fetched = jax.device_get([m for _, m in pending])
        line, timing = progress.log(step, f"| loss {np.mean([m['loss'] for m in fetched]):.5f}")
        row = _train_row(pending, fetched, steps_per_epoch, step, timing)
        pending = []
        tracking.log(line)
        epoch_sum += float(sum(m["loss"] for m in fetched))
        epoch_count += len(fetched)
        if not compile_logged:
          row["perf/compile_s"], compile_logged = compile_s, True  # once per session
        if epoch_end:
          row["train/epoch_loss"] = epoch_sum / max(epoch_count, 1)
          epoch_sum, epoch_count = 0.0, 0
        if eval_due:
          t0 = time.perf_counter()
          val, result = evaluate(run, state["params"], step)
          row.update(val)
          final = (result,) if last else None
          tracking.log(_eval_line(step, row, shown, time.perf_counter() - t0))
          progress.start(step)  # evaluation time is not training speed
        writer.scalars(step, row)
        if ckpt_due:
          ckpt_lib.save(mngr, step, state, train_iter, force=True,
                        extra={"epoch_loss_sum": epoch_sum, "epoch_loss_count": epoch_count})
      mngr.wait_until_finished()

      # -----------------------------------------------------------------------
      # Final evaluation and artefacts (redone if a run stopped before them).
      # -----------------------------------------------------------------------
      if completed_step(workdir) != step:
        if final is None:
          final = evaluate(run, state["params"], step)[1:]
        if finish is not None:
          finish(run, state["params"], step, final[0])
        if run.is_main:
          workdir_lib.write_json(workdir, COMPLETE,
                                 {"step": step, "trainer": config.get("trainer", "")})
  finally:
    mngr.close()
    writer.close()
  tracking.log(f"done: {step} steps in {time.perf_counter() - t_start:.1f} s")
  return state
