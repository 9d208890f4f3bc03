"""Optimizer and learning-rate schedule from a config's `optimizer` block.

Adam (kingma2015adam) or SGD, optional global-norm clipping; a constant
learning rate or a linear warm-up (goyal2017largebatch) then cosine decay
(loshchilov2017sgdr). Every trainer builds its optimizer here.
"""

from __future__ import annotations

import jax
import optax


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


def make_finetune_optimizer(opt, schedule, encoder_lr_mult: float) -> optax.GradientTransformation:
  """`make_optimizer` on the heads; on the encoder (the `ae` subtree of the params) the
  same scaled by `encoder_lr_mult`, or nothing at all when it is 0 (a frozen encoder)."""
  core = make_optimizer(opt, schedule)
  if encoder_lr_mult == 1.0:
    return core
  enc_tx = optax.set_to_zero() if encoder_lr_mult == 0.0 else optax.chain(
      make_optimizer(opt, schedule), optax.scale(encoder_lr_mult))

  def groups(params):
    return {k: jax.tree.map(lambda _, g="encoder" if k == "ae" else "heads": g, v)
            for k, v in params.items()}

  return optax.multi_transform({"heads": core, "encoder": enc_tx}, groups)
