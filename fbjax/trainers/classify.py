"""Trainer for the plane / abnormal / condition heads on the autoencoder's encoder.

    python -m launch.train --config configs/classify.py:runlocal --workdir /tmp/cls

What is the classifier's own (the loop is `fbjax.runtime.train_lib`'s):

- several sources mixed in fixed shares (`config.sources.*.weight`); each
  source teaches only its `tasks`, the other labels are masked (-1), and
  unknown labels never enter a loss (`fbjax.data.sources.mixture`);
- per head a class-weighted softmax cross-entropy (weights from the training
  label counts, `config.class_weighting`), with label smoothing; an optional
  joint reconstruction loss (`config.loss.recon`);
- the encoder initialised from an autoencoder workdir (`config.init_from`,
  whose model and enhancement configs are taken over) and either fine-tuned
  (optionally at a lower learning rate, `encoder_lr_mult`) or frozen;
- validation per source (`fbjax.evaluation.evaluators.classification`): accuracy,
  macro-F1, ECE, AUROC, confusion matrices and ROC curves;
- artefacts of the final checkpoint, for prediction (`fbjax.predict`):
  `decision.json`, the abnormal-probability threshold at
  `config.decision_specificity` on the normal validation images of every
  evaluated source, pooled and per source, from the final evaluation of the
  final parameters; `calibration.json`, a temperature per head fitted on the
  same validation predictions; and the unsupervised anomaly model
  (`fbjax.evaluation.anomaly_fit.fit_from_config`) under `<workdir>/anomaly/`.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fbjax.core import metrics, plots, schema
from fbjax.core import workdir as workdir_lib
from fbjax.data import device_augment, sources
from fbjax.data.mix import Subset
from fbjax.enhance import modules as enhance_lib
from fbjax.evaluation import (
  anomaly,
  anomaly_fit,
  evaluators,
  head_tables,
  inference,
  networks,
)
from fbjax.models import autoencoder as ae_lib
from fbjax.models import heads as heads_lib
from fbjax.models import losses
from fbjax.runtime import optim, parallel, tracking, train_lib

KEYS = evaluators.CLASSIFY_KEYS


def source_blocks(config, *, train: bool) -> dict:
  """{name: block} of the sources trained on (weight > 0) or evaluated on (`eval`); each is
  read as the model's `config.input`."""
  if train:
    return sources.training_blocks(config)
  out = sources.eval_blocks(config)
  if not out:
    raise ValueError("no source is evaluated on (every eval is False)")
  return out


def label_counts(config, mix) -> dict[str, np.ndarray]:
  """Per task, the class counts of one epoch of the mixture (repeats counted)."""
  lookup = networks.condition_lookup(config.condition_classes)
  counts = {t: np.zeros(n, np.float64) for t, n in networks.head_sizes(config)}
  parts = zip(mix.sources, mix.counts, strict=True) if hasattr(mix, "counts") else \
      [(mix, len(mix))]                                  # a MixSource, or one source
  for src, count in parts:
    table = sources.label_table(src, tuple(counts))
    for t in counts:
      y = table[t]
      if t == "condition":
        y = np.where(y >= 0, lookup[np.maximum(y, 0)], -1)
      y = y[y >= 0]
      counts[t] += count / len(src) * np.bincount(y, minlength=len(counts[t]))[
          : len(counts[t])]
  return counts


def resolve_init(config) -> dict | None:
  """Takes the autoencoder's model and enhancement configs over from `config.init_from`.

  Returns its parameters (None when `init_from` is empty). `config` is
  updated in place, so `config.json` of the run records what was used.
  """
  if not config.get("init_from"):
    if config.get("freeze_encoder"):
      logging.warning("freeze_encoder without init_from: the heads learn on a random encoder")
    return None
  ae = anomaly.load_autoencoder(config.init_from)
  with config.unlocked():
    if dict(config.model.ae) != ae.model:
      tracking.log(f"model.ae taken from {config.init_from}: {ae.model}")
    config.model.ae = ae.model
    config.enhance = ml_collections.ConfigDict(ae.enhance)
  return {"encoder": ae.params["encoder"], "decoder": ae.params["decoder"]}


def resolve_input(config) -> None:
  """Checks `config.input`: a classifier reads the image or the aligned head."""
  kind = schema.input_of(config)["kind"]
  if kind not in schema.CLASSIFIER_INPUTS:
    raise ValueError(f"config.input.kind={kind!r}; a classifier reads one of "
                     f"{schema.CLASSIFIER_INPUTS}")


def make_loss_fn(config, model, class_w: dict):
  """Class-weighted, label-smoothed cross-entropy per head (+ reconstruction)."""
  enhance_fn = enhance_lib.make_enhance_fn(config.enhance, schema.size_of(config))
  smoothing = float(config.loss.get("label_smoothing", 0.0))
  lookup = jnp.asarray(networks.condition_lookup(config.condition_classes))

  def loss_fn(params, batch, rng):
    x = ae_lib.to_channels(enhance_fn(batch["image"]), model.channels)
    logits, aux = model.apply({"params": params}, x, train=True, rngs={"dropout": rng})
    total, terms = 0.0, {}
    for t, n in networks.head_sizes(config):
      y = batch[t].astype(jnp.int32)
      if t == "condition":
        y = jnp.where(y >= 0, lookup[jnp.maximum(y, 0)], -1)
      yt = jnp.maximum(y, 0)
      target = jax.nn.one_hot(yt, n)
      target = optax.smooth_labels(target, smoothing) if smoothing else target
      ce = optax.softmax_cross_entropy(logits[t].astype(jnp.float32), target)
      w = class_w[t][yt] * (y >= 0)
      terms[t] = jnp.sum(w * ce) / jnp.maximum(jnp.sum(w), 1e-6)
      total = total + config.loss[t] * terms[t]
    if config.loss.get("recon", 0.0) > 0:
      err = jnp.square(aux["recon"].astype(jnp.float32) - x)
      terms["recon"] = jnp.mean(err)
      total = total + config.loss.recon * terms["recon"]
    return total, terms

  return loss_fn


def _caption(config, probs: dict, i: int) -> str:
  parts = []
  for t in config.tasks:
    names = networks.class_names(config, t)
    p, truth = probs[t][i], int(probs[f"label_{t}"][i])
    k = int(np.argmax(p))
    mark = "" if truth < 0 else ("=" if truth == k else f"/{names[truth][:6]}")
    parts.append(f"{names[k][:8]} {p[k]:.2f}{mark}")
  return "\n".join(parts)


def evaluate(run, eval_fn, params, val_sources: dict, step: int):
  """Validation rows and plots per source; for `finish`: the abnormal (labels,
  probabilities) pooled and per source, and every task's (labels, probabilities)."""
  config, row, pooled = run.config, {}, {"y": [], "p": [], "source": []}
  names = {t: networks.class_names(config, t) for t in config.tasks}
  for t in config.tasks:
    pooled[f"label_{t}"], pooled[t] = [], []
  for name, src in val_sources.items():
    res = evaluators.predictions(run, eval_fn, params, src)
    part, summaries = evaluators.classification(res, names, name)
    counts = getattr(src, "head_counts", None)
    if counts:
      part[f"val/{name}/no_head"] = float(counts["no_head"])
    for t in config.tasks:
      pooled[f"label_{t}"].append(res[f"label_{t}"])
      pooled[t].append(res[t])
    row.update(part)
    for t, s in summaries.items():
      pre = f"val/{name}/{t}"
      run.writer.confusion_matrix(step, f"{pre}/confusion", np.asarray(s["confusion_matrix"]),
                                  names[t])
      if f"{pre}/auroc" in part:
        fpr, tpr, _ = metrics.roc_curve(res["label_abnormal"], res["abnormal"][:, 1])
        run.writer.roc_curves(step, f"{pre}/roc", {"abnormal head": (fpr, tpr)})
    if "abnormal" in names:
      pooled["y"].append(res["label_abnormal"])
      pooled["p"].append(res["abnormal"][:, 1])
      pooled["source"].append(np.full(len(res["abnormal"]), name, dtype=object))
    k = min(config.num_images, len(res["label_plane"]))
    if k:
      imgs = list(next(iter(evaluators.host_batches(
          Subset(src, np.arange(k)), schema.size_of(config), k, keys=("image",))))["image"])
      texts = [_caption(config, res, i) for i in range(k)]
      run.writer.images(step, {f"val/{name}/examples": plots.label_grid(
          imgs, texts, columns=4, thumb=max(64, imgs[0].shape[0])) / 255.0})
  return row, {k: np.concatenate(v) for k, v in pooled.items() if v}


def finish(run, params, step: int, pooled: dict) -> None:
  """The final checkpoint's artefacts: `decision.json` and the anomaly model."""
  config = run.config
  if not run.is_main:
    return
  spec = float(config.get("decision_specificity", 0.95))
  if pooled.get("y") is not None:
    d = evaluators.decision(pooled["y"], pooled["p"], pooled["source"], spec,
                            pool=tuple(config.get("decision_sources", ())))
    if d:
      workdir_lib.write_json(run.workdir, workdir_lib.DECISION, {**d, "step": int(step)})
      tracking.log(f"abnormal decision threshold {d['abnormal_threshold']:.4f}: validation "
                   f"sensitivity {d['validation_sensitivity']:.3f}, specificity "
                   f"{d['validation_specificity']:.3f}")
    else:
      tracking.log("no normal validation image: no abnormal decision threshold")
  cal = evaluators.calibration(pooled, config.tasks)
  for t, v in cal.items():
    tracking.log(f"{t}: temperature {v['temperature']:.3f}, validation ECE "
                 f"{v['ece']:.3f} -> {v['ece_calibrated']:.3f}")
  workdir_lib.write_json(run.workdir, workdir_lib.CALIBRATION, {"step": int(step), "tasks": cal})
  am = anomaly_fit.fit_from_config(config, source_blocks(config, train=True),
                               source_blocks(config, train=False))
  if am is not None:
    am.info["step"] = int(step)
    anomaly.save(am, run.workdir)
    run.writer.scalars(step, {f"val/{name}/anomaly_{k}/{key}": val
                              for name, r in am.info["validation"].items()
                              for k, v in r.items() for key, val in v.items()})


def train_and_evaluate(config, workdir: str):
  """Trains the heads described by `config`, resuming from `workdir`; returns the state."""
  resolve_input(config)
  blocks = source_blocks(config, train=True)
  mix = parallel.main_process_first(lambda: sources.mixture(
      blocks, model_input=config.input, head_table=head_tables.table))
  val_sources = parallel.main_process_first(lambda: {
      n: sources.block_source(b, b.val_split, model_input=config.input,
                              head_table=head_tables.table)
      for n, b in source_blocks(config, train=False).items()})
  train_lib.log_source(blocks, mix)
  class_w = {}
  for t, c in label_counts(config, mix).items():
    class_w[t] = jnp.asarray(losses.class_weights(c, config.class_weighting))
    tracking.log(f"{t}: counts per epoch {np.round(c).astype(int).tolist()}, class weights "
                 f"{np.round(np.asarray(class_w[t]), 2).tolist()}")
  ae_params = resolve_init(config)
  model = networks.classifier_model(config)
  eval_fn = None

  def init_params(rng):
    return model.init(rng, jnp.zeros((1, *schema.size_of(config), model.channels)))["params"]

  def warm_start(params):
    tracking.log(f"encoder initialised from {config.init_from}")
    return heads_lib.init_from_autoencoder(params, ae_params)

  def evaluate_fn(run, params, step):
    nonlocal eval_fn
    eval_fn = eval_fn or run.jit(evaluators.classification_fn(
        config, networks.classifier_probs_fn(config, model)))
    return evaluate(run, eval_fn, params, val_sources, step)

  return train_lib.train(
      config, workdir, kind="classifier", train_source=mix, keys=KEYS, init_params=init_params,
      loss_fn=make_loss_fn(config, model, class_w), evaluate=evaluate_fn,
      make_tx=lambda s: optim.make_finetune_optimizer(
          config.optimizer, s, 0.0 if config.get("freeze_encoder") else
          float(config.get("encoder_lr_mult", 1.0))), finish=finish,
      warm_start=warm_start if ae_params is not None else None,
      batch_fn=device_augment.random_rot180 if config.get("rot180", False) else None,
      shown=("accuracy", "macro_f1", "auroc"))


def calibrate(workdir: str, step: int | None = None, batch_size: int | None = None) -> dict:
  """Refits a trained classification workdir's artefacts without training: the final
  evaluation of checkpoint `step` (default: the latest) on its validation sources, then
  `finish` (decision.json, calibration.json, the anomaly model) and `complete.json`.
  The same checkpoint gives the same files as the training's own final step."""
  model = inference.load(workdir, step, kind="classifier")
  config = model.config.copy_and_resolve_references()
  resolve_input(config)
  val_sources = {n: sources.block_source(b, b.val_split, model_input=config.input,
                                         head_table=head_tables.table)
                 for n, b in source_blocks(config, train=False).items()}
  run = train_lib.eval_run(config, model.workdir, batch_size)
  run.writer = tracking.Writer(model.workdir, config, enabled=False)
  at = int(step) if step is not None else workdir_lib.checkpoint_steps(model.workdir)[-1]
  fn = run.jit(evaluators.classification_fn(
      config, networks.classifier_probs_fn(config, networks.classifier_model(config))))
  params = jax.device_put(model.params, parallel.replicated(run.mesh))
  row, pooled = evaluate(run, fn, params, val_sources, at)
  finish(run, params, at, pooled)
  workdir_lib.write_json(model.workdir, workdir_lib.COMPLETE,
                         {"step": at, "trainer": config.get("trainer", "")})
  return row
