"""Flat trainer for the convolutional autoencoder (MSE reconstruction).

    python -m launch.train --config configs/autoencoder.py:runlocal --workdir /tmp/ae

`train_and_evaluate(config, workdir)` is one function split by banner
comments (Mesh / Input pipeline / Model and optimizer / Update step /
Checkpoint / Evals / Train loop), after big_vision's train.py. Other tasks
fork this file; what they share lives in fbjax/parallel.py (mesh, shardings),
fbjax/checkpoint.py (orbax resume) and fbjax/tracking.py (metrics, wandb,
log line, NaN check).

Determinism: the data order and augmentation are functions of the seed and
the position in the stream, the step is folded into the RNG, and the grain
iterator state and the running epoch sums are saved with each checkpoint, so
a run killed and resumed ends with the same parameters and metrics as one
that was never interrupted.

Optimisation (CITATIONS.bib): Adam kingma2015adam; linear warm-up
goyal2017largebatch then cosine decay loshchilov2017sgdr.
"""

from __future__ import annotations

import logging
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fbjax import checkpoint as ckpt_lib
from fbjax import parallel, tracking
from fbjax.data import pipeline, sources
from fbjax.models import autoencoder as ae


def make_schedule(opt, total_steps: int, steps_per_epoch: int):
  """Learning-rate schedule from `config.optimizer` (constant or warmup + cosine)."""
  if opt.schedule == "constant":
    return optax.constant_schedule(opt.lr)
  if opt.schedule == "warmup_cosine":
    warmup = min(int(round(opt.warmup_epochs * steps_per_epoch)), total_steps // 2)
    return optax.warmup_cosine_decay_schedule(
        0.0, opt.lr, warmup_steps=warmup, decay_steps=total_steps,
        end_value=opt.lr * opt.end_lr_fraction)
  raise ValueError(f"unknown schedule {opt.schedule!r}; expected constant or warmup_cosine")


def make_optimizer(opt, schedule) -> optax.GradientTransformation:
  if opt.name == "adam":
    core = (optax.adamw(schedule, opt.b1, opt.b2, weight_decay=opt.weight_decay)
            if opt.weight_decay else optax.adam(schedule, opt.b1, opt.b2))
  elif opt.name == "sgd":
    core = optax.sgd(schedule)
  else:
    raise ValueError(f"unknown optimizer {opt.name!r}; expected adam or sgd")
  if opt.get("grad_clip"):
    return optax.chain(optax.clip_by_global_norm(opt.grad_clip), core)
  return core


def make_enhance(cfg, sample):
  """The enhancement applied on device to each input batch, `(B, H, W) -> (B, H, W)`.

  `config.enhance` selects a chain of `fbjax.enhance.modules` ("none" = identity).
  Its variables (if any stage has some) are fixed here: for the autoencoder,
  enhancement is preprocessing, not something to learn jointly with the
  reconstruction (which would drift towards the identity).
  """
  if cfg.get("chain", "none") == "none":
    return lambda images: images
  from fbjax.enhance import modules as enhance_lib  # noqa: PLC0415

  module = enhance_lib.make_enhance(cfg)
  variables = module.init(jax.random.key(0), sample)
  return lambda images: module.apply(variables, images)


def per_example_mse(recon, target):
  return jnp.mean(jnp.square(recon.astype(jnp.float32) - target), axis=(1, 2, 3))


def data_keys(config) -> tuple[str, ...]:
  return ("image",) if config.target == "image" else ("image", config.target)


def train_dataset(config, source):
  """The endless, shuffled, augmented training stream of this process's slice."""
  return pipeline.make_dataset(
      source, size=tuple(config.data.size), batch_size=config.batch_size, seed=config.seed,
      train=True, num_epochs=None, keys=data_keys(config),
      augment=None if config.data.augment else (lambda rng, ex: ex),
      process_index=jax.process_index(), process_count=jax.process_count(),
      worker_count=config.data.worker_count, read_threads=config.data.read_threads,
      cache=config.data.get("cache", False))


def make_inputs(config, enhance):
  """batch -> (model input, reconstruction target), both (B, H, W, C)."""
  channels = config.model.channels

  def inputs(batch):
    x = enhance(batch["image"])
    y = x if config.target == "image" else batch[config.target]
    return ae.to_channels(x, channels), ae.to_channels(y, channels)

  return inputs


def make_init_fn(config, model, tx):
  """rng -> the initial train state: a plain dict (step, params, opt, rng)."""

  def init(rng):
    x = jnp.zeros((1, *config.data.size, config.model.channels), jnp.float32)
    params = model.init(rng, x)["params"]
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt": tx.init(params),
            "rng": jax.random.key_data(jax.random.fold_in(rng, 1))}

  return init


def make_update_fn(model, tx, schedule, inputs):
  """The pure train step (state, batch) -> (state, metrics); jit it with shardings."""

  def update_fn(state, batch):
    # The step is folded into the RNG: each step draws fresh randomness and a
    # resumed run draws exactly what the uninterrupted one did.
    rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
    x, y = inputs(batch)

    def loss_fn(params):
      recon, _ = model.apply({"params": params}, x, train=True, rngs={"dropout": rng})
      return jnp.mean(per_example_mse(recon, y))

    loss, grads = jax.value_and_grad(loss_fn)(state["params"])
    updates, opt = tx.update(grads, state["opt"], state["params"])
    new_state = dict(state, step=state["step"] + 1, opt=opt,
                     params=optax.apply_updates(state["params"], updates))
    return new_state, {"loss": loss, "grad_norm": optax.global_norm(grads),
                       "lr": schedule(state["step"])}

  return update_fn


def train_and_evaluate(config, workdir: str):
  """Trains the autoencoder described by `config`, resuming from `workdir`.

  Returns the final train state (a dict of replicated arrays).
  """
  t_start = time.perf_counter()
  is_main = jax.process_index() == 0

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
  size = tuple(config.data.size)
  # Process 0 builds the data set if needed; the others then open it.
  train_source, val_source = parallel.main_process_first(lambda: (
      sources.get_source(config.data, config.data.train_split),
      sources.get_source(config.data, config.data.val_split)))
  steps_per_epoch = len(train_source) // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"{len(train_source)} training examples < batch size {config.batch_size}")
  total_steps = config.total_steps or config.num_epochs * steps_per_epoch
  train_iter = iter(train_dataset(config, train_source))

  def val_batches():
    ds = pipeline.make_dataset(
        val_source, size=size, batch_size=config.eval_batch_size, seed=config.seed,
        train=False, num_epochs=1, keys=data_keys(config), process_index=jax.process_index(),
        process_count=jax.process_count(), read_threads=config.data.read_threads,
        cache=config.data.get("cache", False))
    n = parallel.num_eval_batches(len(val_source), config.eval_batch_size)
    return parallel.padded_batches(iter(ds), n, config.eval_batch_size // jax.process_count())

  # ---------------------------------------------------------------------------
  # Model and optimizer.
  # ---------------------------------------------------------------------------
  model = ae.Model(**config.model)
  schedule = make_schedule(config.optimizer, total_steps, steps_per_epoch)
  tx = make_optimizer(config.optimizer, schedule)
  inputs = make_inputs(config, make_enhance(config.enhance, jnp.zeros((1, *size), jnp.float32)))
  init = make_init_fn(config, model, tx)
  init_rng = jax.random.key(config.seed)
  abstract_state = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep),
                                jax.eval_shape(init, init_rng))

  # ---------------------------------------------------------------------------
  # Update step.
  # ---------------------------------------------------------------------------
  update = jax.jit(make_update_fn(model, tx, schedule, inputs), donate_argnums=(0,),
                   out_shardings=(rep, rep))

  # ---------------------------------------------------------------------------
  # Checkpoint.
  # ---------------------------------------------------------------------------
  mngr = ckpt_lib.manager(workdir, keep=config.keep_checkpoints, every=config.checkpoint_every,
                          async_save=config.async_checkpoint)
  restored = ckpt_lib.restore(mngr, abstract_state, train_iter)
  if restored is None:
    state = parallel.compile_once(init, init_rng, out_shardings=rep)(init_rng)
    extra = {}
  else:
    state, meta = restored
    extra = meta["extra"]
  step = int(jax.device_get(state["step"]))
  writer = tracking.Writer(workdir, config)
  writer.truncate(step)
  if restored is not None:
    tracking.log(f"resumed from step {step} in {workdir}")
  epoch_sum = float(extra.get("epoch_loss_sum", 0.0))
  epoch_count = int(extra.get("epoch_loss_count", 0))

  # ---------------------------------------------------------------------------
  # Evals.
  # ---------------------------------------------------------------------------
  k = config.num_images

  def eval_fn(params, batch):
    x, y = inputs(batch)
    recon, aux = model.apply({"params": params}, x)
    mask = batch["_mask"]
    return {"mse_sum": jnp.sum(per_example_mse(recon, y) * mask), "count": jnp.sum(mask),
            "input": x[:k, ..., 0], "recon": recon[:k, ..., 0],
            "latent": aux["latent"][:k]}

  evaluate_batch = jax.jit(eval_fn, out_shardings=rep)

  def evaluate(step):
    total, count, first = 0.0, 0.0, None
    for b in val_batches():
      out = evaluate_batch(state["params"], parallel.shard_batch(b, mesh))
      total, count = total + out["mse_sum"], count + out["count"]
      first = first or out
    mse = float(jax.device_get(total)) / max(float(jax.device_get(count)), 1.0)
    first = jax.device_get(first)
    grid = np.concatenate([np.concatenate(
        [a, np.clip(r, 0, 1), np.clip(4 * np.abs(r - a), 0, 1)], axis=1)
        for a, r in zip(first["input"], first["recon"], strict=True)], axis=0)
    writer.images(step, {"val/reconstructions": grid})
    writer.histograms(step, {"val/latent": first["latent"]})
    return mse

  # ---------------------------------------------------------------------------
  # Train loop.
  # ---------------------------------------------------------------------------
  progress = tracking.Progress(total_steps, config.batch_size, n_dev)
  pending = []            # (step, metrics on device) since the last flush
  compile_s, compile_logged = None, False
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

        # One host transfer for every step since the last flush; one metrics line per step.
        fetched = jax.device_get([m for _, m in pending])
        tracking.check_finite((s, m["loss"]) for (s, _), m in zip(pending, fetched, strict=True))
        pending = []
        losses = [float(m["loss"]) for m in fetched]
        epoch_sum, epoch_count = epoch_sum + sum(losses), epoch_count + len(losses)
        line, timing = progress.log(step, f"| loss {np.mean(losses):.5f}")
        tracking.log(line)
        row = {"epoch": step / steps_per_epoch, "train/loss": float(np.mean(losses)),
               "train/grad_norm": float(fetched[-1]["grad_norm"]),
               "train/lr": float(fetched[-1]["lr"]), **timing}
        if not compile_logged:
          row["perf/compile_s"], compile_logged = compile_s, True  # once per session
        if epoch_end:
          row["train/epoch_loss"] = epoch_sum / max(epoch_count, 1)
          epoch_sum, epoch_count = 0.0, 0
        if eval_due:
          t0 = time.perf_counter()
          row["val/mse"] = evaluate(step)
          tracking.log(f"step {step} | epoch {step / steps_per_epoch:.2f} | val mse "
                       f"{row['val/mse']:.5f} | eval {time.perf_counter() - t0:.1f} s")
          progress.start(step)  # evaluation time is not training speed
        writer.scalars(step, row)
        if ckpt_due:
          ckpt_lib.save(mngr, step, state, train_iter, force=True,
                        extra={"epoch_loss_sum": epoch_sum, "epoch_loss_count": epoch_count})
    mngr.wait_until_finished()
  finally:
    mngr.close()
    writer.close()
  if is_main:
    logging.info("done: %d steps in %.1f s", step, time.perf_counter() - t_start)
  return state
