"""Flat trainer for head / skull / brain segmentation (U-Net) with biometry.

    python -m launch.train --config configs/segment.py:runlocal --workdir /tmp/seg
    python -m launch.evaluate --config configs/segment.py --workdir DIR --split validation

Forked from the autoencoder trainer (same sections, mesh, checkpoints,
metrics). What differs: the training data may mix several sources
(`config.train_on` names config blocks, e.g. the phantom and HC18, mixed in
the proportions `config.train_weights`); the loss is Dice + BCE per
(example, channel), averaged only where the example has that mask (HC18 has
a head mask but no skull or brain mask); evaluation reports Dice per channel
on the network grid and, where the data set gives HC, the HC error of the
ellipse fitted to the predicted head (`config.eval_method`) in mm.

`evaluate_workdir` measures a trained workdir on any data set and split in
the original image resolution (`fbjax.segment_eval`), for `launch/evaluate.py`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fbjax import biometry, losses, parallel, segment_eval, segment_post, tracking
from fbjax import checkpoint as ckpt_lib
from fbjax.data import pipeline, sources
from fbjax.data.mix import MixSource
from fbjax.enhance import modules as enhance_lib
from fbjax.models import unet
from fbjax.trainers.autoencoder import make_optimizer, make_schedule

MASK_KEYS = tuple(f"{c}_mask" for c in unet.CLASSES)
HAS_KEYS = tuple(f"has_{m}" for m in MASK_KEYS)
KEYS = ("image", *MASK_KEYS, *HAS_KEYS, "pixel_spacing_mm", "hc_mm")


def targets(batch):
  """(B, H, W, 3) float targets and (B, 3) presence flags from a batch."""
  t = jnp.stack([batch[k] for k in MASK_KEYS], axis=-1).astype(jnp.float32)
  present = jnp.stack([batch[k] for k in HAS_KEYS], axis=-1).astype(bool)
  return t, present


def data_block(block):
  """`block` with a data_dir of its own for each manual_dir.

  tfds reuses a data set already prepared in `data_dir`, whatever
  `manual_dir` it was built from; so that pointing `manual_dir` at another
  folder builds that folder (rather than silently reading the old one), data
  built from a manual folder goes to `<data_dir>/manual/<hash of its path>`.
  An explicit `data_dir` is used as given.
  """
  if not block.get("manual_dir") or block.get("data_dir"):
    return block
  key = hashlib.sha1(os.path.realpath(block.manual_dir).encode()).hexdigest()[:12]
  out = ml_collections.ConfigDict(block.to_dict())
  out.data_dir = os.path.join(sources.default_data_dir(), "manual", key)
  return out


def get_source(config, name: str, split: str):
  return sources.get_source(data_block(config[name]), split)


def train_source(config):
  """The (possibly mixed) training source named by `config.train_on`."""
  names = tuple(config.train_on)
  srcs = [get_source(config, n, config[n].train_split) for n in names]
  if len(srcs) == 1:
    return srcs[0]
  weights = tuple(config.get("train_weights") or ()) or None
  return MixSource(srcs, weights)


def make_model(config):
  """The U-Net, with `config.enhance`'s chain in front unless it is "none"."""
  enhance = None
  if config.enhance.get("chain", "none") not in ("none", ""):
    enhance = enhance_lib.make_enhance(config.enhance)
  return unet.Model(**config.model, enhance=enhance)


def make_predict(config, params, model=None):
  """Jitted (B, H, W) images -> (B, H, W, 3) probabilities (enhancement included).

  With `config.eval_flip` the probabilities are averaged with those of the
  left-right mirrored image, mirrored back (test-time augmentation: the
  prediction becomes exactly mirror-equivariant, at twice the network cost).
  """
  model = model or make_model(config)
  flip = bool(config.get("eval_flip", False))

  @jax.jit
  def predict(images):
    probs = jax.nn.sigmoid(model.apply({"params": params}, images)[0])
    if flip:
      mirrored = jax.nn.sigmoid(model.apply({"params": params}, images[:, :, ::-1])[0])
      probs = 0.5 * (probs + mirrored[:, :, ::-1])
    return probs

  return predict


def grid_hc_errors(probs, spacing, hc_mm, method: str) -> list[float]:
  """|HC - reference| (mm) on the network grid for examples with a reference and a
  spacing (others are skipped); inf where no ellipse could be fitted."""
  out = []
  for p, s, h in zip(probs, spacing, hc_mm, strict=True):
    if not (math.isfinite(h) and math.isfinite(s)):
      continue
    if method == "plain":
      e = segment_post.plain_ellipse(p)
    else:
      e = segment_post.fitted_ellipse(p, method=method)
    hc = biometry.biometry_from_ellipse(e, float(s)).hc_mm
    out.append(abs(hc - float(h)) if math.isfinite(hc) else math.inf)
  return out


def train_and_evaluate(config, workdir: str):
  """Trains the segmentation model described by `config`, resuming from `workdir`."""
  workdir = os.path.abspath(workdir)  # orbax needs absolute paths
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
  # Process 0 builds the data sets if needed; the others then open them.
  tsource, val_sources = parallel.main_process_first(lambda: (
      train_source(config),
      {n: get_source(config, n, config[n].val_split) for n in config.eval_on}))
  tracking.log(f"training on {config.train_on}: {tsource!r}" if isinstance(tsource, MixSource)
               else f"training on {config.train_on}: {len(tsource)} examples")
  steps_per_epoch = len(tsource) // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"{len(tsource)} training examples < batch size {config.batch_size}")
  total_steps = config.total_steps or config.num_epochs * steps_per_epoch
  train_ds = pipeline.make_dataset(
      tsource, size=size, batch_size=config.batch_size, seed=config.seed, train=True,
      num_epochs=None, keys=KEYS, augment=None if config.data.augment else (lambda r, e: e),
      process_index=jax.process_index(), process_count=jax.process_count(),
      worker_count=config.data.worker_count, read_threads=config.data.read_threads,
      cache=config.data.get("cache", False))
  train_iter = iter(train_ds)

  def val_batches(name):
    src = val_sources[name]
    ds = pipeline.make_dataset(
        src, size=size, batch_size=config.eval_batch_size, seed=config.seed, train=False,
        num_epochs=1, keys=KEYS, process_index=jax.process_index(),
        process_count=jax.process_count(), read_threads=config.data.read_threads,
        cache=config.data.get("cache", False))
    n = parallel.num_eval_batches(len(src), config.eval_batch_size)
    return parallel.padded_batches(iter(ds), n, config.eval_batch_size // jax.process_count())

  # ---------------------------------------------------------------------------
  # Model and optimizer.
  # ---------------------------------------------------------------------------
  model = make_model(config)
  schedule = make_schedule(config.optimizer, total_steps, steps_per_epoch)
  tx = make_optimizer(config.optimizer, schedule)

  def init(rng):
    params = model.init(rng, jnp.zeros((1, *size), jnp.float32))["params"]
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt": tx.init(params),
            "rng": jax.random.key_data(jax.random.fold_in(rng, 1))}

  init_rng = jax.random.key(config.seed)
  abstract_state = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep),
                                jax.eval_shape(init, init_rng))

  def loss_terms(params, batch):
    logits, _ = model.apply({"params": params}, batch["image"], train=True)
    t, present = targets(batch)
    return logits, losses.segmentation_loss(logits, t, present, **config.loss)

  # ---------------------------------------------------------------------------
  # Update step.
  # ---------------------------------------------------------------------------
  def update_fn(state, batch):
    def loss_fn(params):
      return loss_terms(params, batch)[1][0]

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
  def eval_fn(params, batch):
    logits, (_, aux) = loss_terms(params, batch)
    mask = batch["_mask"]
    t, present = targets(batch)
    pred = logits > 0
    inter = (pred & (t > 0)).sum(axis=(1, 2))
    total = pred.sum(axis=(1, 2)) + (t > 0).sum(axis=(1, 2))
    dice = jnp.where(total > 0, 2.0 * inter / jnp.maximum(total, 1), 1.0)   # (B, 3)
    w = present * mask[:, None]
    return {"dice_sum": (dice * w).sum(0), "dice_count": w.sum(0),
            "loss_sum": (aux["loss"] * w).sum(), "loss_count": w.sum(),
            "probs": jax.nn.sigmoid(logits[..., 0]),
            "pixel_spacing_mm": batch["pixel_spacing_mm"], "hc_mm": batch["hc_mm"],
            "mask": mask, "image": batch["image"]}

  evaluate_batch = jax.jit(eval_fn, out_shardings=rep)

  def evaluate(step):
    out = {}
    for name in config.eval_on:
      d_sum, d_cnt, l_sum, l_cnt, hc_err, first = 0.0, 0.0, 0.0, 0.0, [], None
      for b in val_batches(name):
        r = evaluate_batch(state["params"], parallel.shard_batch(b, mesh))
        d_sum, d_cnt = d_sum + r["dice_sum"], d_cnt + r["dice_count"]
        l_sum, l_cnt = l_sum + r["loss_sum"], l_cnt + r["loss_count"]
        r = jax.device_get({k: r[k] for k in ("probs", "pixel_spacing_mm", "hc_mm", "mask",
                                              "image")})
        keep = r["mask"] > 0
        hc_err += grid_hc_errors(r["probs"][keep], r["pixel_spacing_mm"][keep],
                                 r["hc_mm"][keep], config.eval_method)
        if first is None:
          first = r
      d_sum, d_cnt = np.asarray(jax.device_get(d_sum)), np.asarray(jax.device_get(d_cnt))
      out[f"val/{name}/loss"] = float(jax.device_get(l_sum)) / max(
          float(jax.device_get(l_cnt)), 1.0)
      for i, c in enumerate(unet.CLASSES):
        if d_cnt[i] > 0:
          out[f"val/{name}/dice_{c}"] = float(d_sum[i] / d_cnt[i])
      if hc_err:
        e = np.asarray(hc_err)
        out[f"val/{name}/hc_abs_mm"] = float(np.mean(e[np.isfinite(e)])) if np.isfinite(
            e).any() else math.nan
        out[f"val/{name}/hc_fail_rate"] = float(np.mean(~np.isfinite(e)))
      k = min(config.num_images, int(first["mask"].sum()))
      grid = np.concatenate([np.concatenate([first["image"][i], first["probs"][i]], axis=1)
                             for i in range(k)], axis=0)
      writer.images(step, {f"val/{name}/head_probability": grid})
    return out

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

        epoch_end = step % steps_per_epoch == 0
        ckpt_due = step % config.checkpoint_every == 0 or step == total_steps
        eval_due = (step % config.eval_every == 0 if config.eval_every else epoch_end)
        if not (step % config.log_every == 0 or epoch_end or ckpt_due or eval_due
                or step == total_steps):
          continue

        fetched = jax.device_get([m for _, m in pending])
        tracking.check_finite((s, m["loss"]) for (s, _), m in zip(pending, fetched, strict=True))
        pending = []
        batch_losses = [float(m["loss"]) for m in fetched]
        epoch_sum, epoch_count = epoch_sum + sum(batch_losses), epoch_count + len(batch_losses)
        line, timing = progress.log(step, f"| loss {np.mean(batch_losses):.4f}")
        row = {"train/loss": float(np.mean(batch_losses)),
               "train/grad_norm": float(fetched[-1]["grad_norm"]),
               "train/lr": float(fetched[-1]["lr"]), "epoch": step / steps_per_epoch, **timing}
        if not compile_logged:
          row["perf/compile_s"], compile_logged = compile_s, True
        writer.scalars(step, row)
        tracking.log(line)

        if eval_due or step == total_steps:
          t0 = time.perf_counter()
          val = {**evaluate(step), "epoch": step / steps_per_epoch}
          if epoch_end:
            val["train/epoch_loss"] = epoch_sum / max(epoch_count, 1)
          writer.scalars(step, val)
          shown = " | ".join(f"{k[4:]} {v:.4f}" for k, v in val.items()
                             if k.startswith("val/") and ("dice" in k or "hc_abs" in k))
          tracking.log(f"step {step} | epoch {step / steps_per_epoch:.2f} | {shown} | "
                       f"eval {time.perf_counter() - t0:.1f} s")
          progress.start(step)
        if epoch_end:
          epoch_sum, epoch_count = 0.0, 0
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


def evaluate_workdir(config, workdir: str, *, data: str = "data", split: str | None = None,
                     out_dir: str | None = None, methods=segment_post.METHODS,
                     num_overlays: int = 16, limit: int | None = None,
                     batch_size: int | None = None, step: int | None = None):
  """Measures the model trained in `workdir` on `config[data]`'s `split`.

  Writes per_image.csv, summary.json and overlays to `out_dir` (see
  `fbjax.segment_eval`); returns (rows, summary).
  """
  workdir = os.path.abspath(workdir)
  params = ckpt_lib.load_state(workdir, step)["params"]
  predict = make_predict(config, params)
  block = config[data]
  split = split or block.val_split
  source = get_source(config, data, split)
  tracking.log(f"evaluating {workdir} on {block.name} {split}: {len(source)} examples")
  rows, summary = segment_eval.evaluate(
      source, lambda x: np.asarray(predict(jnp.asarray(x))), size=tuple(config.data.size),
      methods=methods, batch_size=batch_size or config.eval_batch_size, out_dir=out_dir,
      num_overlays=num_overlays, overlay_method=config.eval_method, limit=limit,
      log=tracking.log)
  summary["data"] = {"name": block.name, "config": block.get("config", ""), "split": split,
                     "manual_dir": block.get("manual_dir", ""), "workdir": str(workdir)}
  if out_dir is not None:
    segment_eval.write(rows, summary, out_dir)
  return rows, summary
