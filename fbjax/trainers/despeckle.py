"""Flat trainer for the self-supervised despeckler (structured blind spots, no clean targets).

    python -m launch.train --config configs/despeckle.py:runlocal --workdir /tmp/despeckle

Forked from the autoencoder trainer (same sections, same resume and logging
machinery). Training sees only the noisy `image`: each step takes random
crops, hides a box around a few random pixels (`fbjax.enhance.despeckle.
blind_spot`) and fits the network's prediction to the noisy value at the box
centres. Evaluation reports the same self-supervised loss on the validation
split (fixed hidden boxes, so it is comparable between steps) and, on images
that carry a `clean` image (the phantom), PSNR and SSIM of the full-image
prediction against it; `clean` is never used for training.

The trained workdir is an enhancement stage: `enhance.chain=learned` with
`enhance.learned.workdir=<workdir>` (fbjax/enhance/modules.py).
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
from fbjax.enhance import despeckle
from fbjax.enhance import metrics as quality
from fbjax.trainers.autoencoder import make_optimizer, make_schedule


def random_crops(rng, images, size: int):
  """One random size x size crop per image (the whole image if size is 0 or too big)."""
  b, h, w = images.shape
  if not size or (size >= h and size >= w):
    return images
  ch, cw = min(size, h), min(size, w)
  ky, kx = jax.random.split(rng)
  oy = jax.random.randint(ky, (b,), 0, h - ch + 1)
  ox = jax.random.randint(kx, (b,), 0, w - cw + 1)
  return jax.vmap(lambda im, y, x: jax.lax.dynamic_slice(im, (y, x), (ch, cw)))(images, oy, ox)


def train_and_evaluate(config, workdir: str):
  """Trains the despeckler described by `config`, resuming from `workdir`."""
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
  train_source, val_source = parallel.main_process_first(lambda: (
      sources.get_source(config.data, config.data.train_split),
      sources.get_source(config.data, config.data.val_split)))
  steps_per_epoch = len(train_source) // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"{len(train_source)} training examples < batch size {config.batch_size}")
  total_steps = config.total_steps or config.num_epochs * steps_per_epoch
  train_ds = pipeline.make_dataset(
      train_source, size=size, batch_size=config.batch_size, seed=config.seed, train=True,
      num_epochs=None, keys=("image",),
      augment=None if config.data.augment else (lambda r, e: e),
      process_index=jax.process_index(), process_count=jax.process_count(),
      worker_count=config.data.worker_count, read_threads=config.data.read_threads)
  train_iter = iter(train_ds)
  val_keys = ("image", "clean", "has_clean")

  def val_batches():
    ds = pipeline.make_dataset(
        val_source, size=size, batch_size=config.eval_batch_size, seed=config.seed,
        train=False, num_epochs=1, keys=val_keys, process_index=jax.process_index(),
        process_count=jax.process_count(), read_threads=config.data.read_threads)
    n = parallel.num_eval_batches(len(val_source), config.eval_batch_size)
    return parallel.padded_batches(iter(ds), n, config.eval_batch_size // jax.process_count())

  # ---------------------------------------------------------------------------
  # Model and optimizer.
  # ---------------------------------------------------------------------------
  model = despeckle.Model(**config.model)
  schedule = make_schedule(config.optimizer, total_steps, steps_per_epoch)
  tx = make_optimizer(config.optimizer, schedule)
  bs = dict(fraction=float(config.blind_spot.fraction),
            mask_hw=tuple(int(v) for v in config.blind_spot.mask_hw))
  crop = int(config.crop)

  def init(rng):
    c = crop or size[0]
    params = model.init(rng, jnp.zeros((1, min(c, size[0]), min(c, size[1])), jnp.float32))
    params = params["params"]
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt": tx.init(params),
            "rng": jax.random.key_data(jax.random.fold_in(rng, 1))}

  init_rng = jax.random.key(config.seed)
  abstract_state = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep),
                                jax.eval_shape(init, init_rng))

  def blind_spot_loss(params, rng, images):
    x_in, centres = despeckle.blind_spot(rng, images, **bs)
    total, count = despeckle.masked_mse(model.apply({"params": params}, x_in), images, centres)
    return total, count

  # ---------------------------------------------------------------------------
  # Update step.
  # ---------------------------------------------------------------------------
  def update_fn(state, batch):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
    k_crop, k_mask = jax.random.split(rng)
    images = random_crops(k_crop, batch["image"], crop)

    def loss_fn(params):
      total, count = blind_spot_loss(params, k_mask, images)
      return total / jnp.maximum(count, 1.0)

    loss, grads = jax.value_and_grad(loss_fn)(state["params"])
    updates, opt = tx.update(grads, state["opt"], state["params"])
    new_state = dict(state, step=state["step"] + 1, opt=opt,
                     params=optax.apply_updates(state["params"], updates))
    return new_state, {"loss": loss, "grad_norm": optax.global_norm(grads),
                       "lr": schedule(state["step"])}

  update = jax.jit(update_fn, donate_argnums=(0,), out_shardings=(rep, rep))

  # ---------------------------------------------------------------------------
  # Checkpoint.
  # ---------------------------------------------------------------------------
  mngr = ckpt_lib.manager(workdir, keep=config.keep_checkpoints, every=config.checkpoint_every,
                          async_save=config.async_checkpoint)
  restored = ckpt_lib.restore(mngr, abstract_state, train_iter)
  if restored is None:
    state = parallel.compile_once(init, init_rng, out_shardings=rep)(init_rng)
  else:
    state, _ = restored
  step = int(jax.device_get(state["step"]))
  writer = tracking.Writer(workdir, config)
  writer.truncate(step)
  if restored is not None:
    tracking.log(f"resumed from step {step} in {workdir}")

  # ---------------------------------------------------------------------------
  # Evals.
  # ---------------------------------------------------------------------------
  k = config.num_images
  eval_rng = jax.random.key(config.seed + 1)   # the same hidden boxes at every evaluation

  def eval_fn(params, batch, index):
    x, mask = batch["image"], batch["_mask"]
    x_in, centres = despeckle.blind_spot(jax.random.fold_in(eval_rng, index), x, **bs)
    centres = centres & (mask[:, None, None] > 0)      # padding rows count nothing
    total, count = despeckle.masked_mse(model.apply({"params": params}, x_in), x, centres)
    y = jnp.clip(model.apply({"params": params}, x), 0.0, 1.0)
    w = mask * batch["has_clean"].astype(jnp.float32)
    psnr = jnp.where(w > 0, quality.psnr(y, batch["clean"]), 0.0)
    ssim = jnp.where(w > 0, quality.ssim(y, batch["clean"]), 0.0)
    return {"loss_sum": total, "loss_count": count, "psnr_sum": jnp.sum(psnr * w),
            "ssim_sum": jnp.sum(ssim * w), "clean_count": jnp.sum(w),
            "input": x[:k], "output": y[:k], "clean": batch["clean"][:k]}

  evaluate_batch = jax.jit(eval_fn, out_shardings=rep)

  def evaluate(step):
    sums, first = None, None
    for i, b in enumerate(val_batches()):
      out = evaluate_batch(state["params"], parallel.shard_batch(b, mesh), jnp.int32(i))
      part = {n: v for n, v in out.items() if n.endswith(("_sum", "_count"))}
      sums = part if sums is None else jax.tree.map(jnp.add, sums, part)
      first = first or out
    sums = {n: float(v) for n, v in jax.device_get(sums).items()}
    first = jax.device_get(first)
    row = {"val/blind_spot_loss": sums["loss_sum"] / max(sums["loss_count"], 1.0)}
    if sums["clean_count"] > 0:
      row["val/psnr_db"] = sums["psnr_sum"] / sums["clean_count"]
      row["val/ssim"] = sums["ssim_sum"] / sums["clean_count"]
    grid = np.concatenate([np.concatenate([a, o, c], axis=1) for a, o, c in zip(
        first["input"], first["output"], first["clean"], strict=True)], axis=0)
    writer.images(step, {"val/noisy_despeckled_clean": grid})
    return row

  # ---------------------------------------------------------------------------
  # Train loop.
  # ---------------------------------------------------------------------------
  progress = tracking.Progress(total_steps, config.batch_size, n_dev)
  pending = []
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

        fetched = jax.device_get([m for _, m in pending])
        tracking.check_finite((s, m["loss"]) for (s, _), m in zip(pending, fetched, strict=True))
        pending = []
        losses = [float(m["loss"]) for m in fetched]
        line, timing = progress.log(step, f"| loss {np.mean(losses):.5f}")
        tracking.log(line)
        row = {"epoch": step / steps_per_epoch, "train/loss": float(np.mean(losses)),
               "train/grad_norm": float(fetched[-1]["grad_norm"]),
               "train/lr": float(fetched[-1]["lr"]), **timing}
        if not compile_logged:
          row["perf/compile_s"], compile_logged = compile_s, True
        if eval_due:
          t0 = time.perf_counter()
          row.update(evaluate(step))
          tracking.log(f"step {step} | " + " | ".join(
              f"{n} {v:.4f}" for n, v in row.items() if n.startswith("val/"))
              + f" | eval {time.perf_counter() - t0:.1f} s")
          progress.start(step)
        writer.scalars(step, row)
        if ckpt_due:
          ckpt_lib.save(mngr, step, state, train_iter, force=True)
    mngr.wait_until_finished()
  finally:
    mngr.close()
    writer.close()
  if is_main:
    logging.info("done: %d steps in %.1f s", step, time.perf_counter() - t_start)
  return state
