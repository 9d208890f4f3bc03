"""Flat trainer for the plane / abnormal / condition heads on the autoencoder's encoder.

    python -m launch.train --config configs/classify.py:runlocal --workdir /tmp/cls

A fork of `fbjax/trainers/autoencoder.py` (same sections, same mesh,
checkpoint and tracking mechanics), with:

- several sources mixed in fixed shares (`config.sources.*.weight`,
  `fbjax.data.mix.MixSource`); each source teaches only its `tasks`, the
  other labels are masked (-1), and unknown labels never enter a loss;
- per head a class-weighted softmax cross-entropy (weights from the training
  label counts, `config.class_weighting`), with label smoothing; an optional
  joint reconstruction loss (`config.loss.recon`);
- the encoder initialised from an autoencoder workdir (`config.init_from`,
  whose model and enhancement configs are taken over) and either fine-tuned
  (optionally at a lower learning rate, `encoder_lr_mult`) or frozen;
- evaluation per source: accuracy, macro-F1, ECE, AUROC, confusion matrices
  and ROC curves (metrics.jsonl, PNG, wandb);
- at the end, the unsupervised anomaly score (`fbjax.anomaly`) fitted on the
  normal training images and calibrated on the normal validation images,
  saved under `<workdir>/anomaly/`.

`load(workdir)` gives a `Classifier` for prediction (`fbjax.predict`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fbjax import anomaly, metrics, parallel, plots, tracking
from fbjax import checkpoint as ckpt_lib
from fbjax.data import labels, pipeline, sources
from fbjax.data.mix import MixSource
from fbjax.models import autoencoder as ae_lib
from fbjax.models import heads as heads_lib
from fbjax.trainers.autoencoder import make_optimizer, make_schedule, per_example_mse

TASK_CLASSES = {"plane": labels.PLANE_SHORT, "abnormal": labels.ABNORMAL}
KEYS = ("image", "plane", "abnormal", "condition")


# ---------------------------------------------------------------------------
# Labels and sources
# ---------------------------------------------------------------------------


def class_names(config, task: str) -> tuple[str, ...]:
  if task == "condition":
    return tuple(config.condition_classes)
  return tuple(TASK_CLASSES[task])


def head_sizes(config) -> tuple[tuple[str, int], ...]:
  unknown = [t for t in config.tasks if t not in ("plane", "abnormal", "condition")]
  if unknown:
    raise ValueError(f"unknown tasks {unknown}; expected plane, abnormal, condition")
  return tuple((t, len(class_names(config, t))) for t in config.tasks)


def condition_lookup(classes) -> np.ndarray:
  """CONDITIONS index -> index in `classes` (-1: not a modelled class)."""
  table = np.full(len(labels.CONDITIONS), -1, np.int32)
  for i, name in enumerate(classes):
    table[labels.condition_index(name)] = i
  return table


class TaskMask:
  """A source whose labels outside `tasks` read as unknown (-1)."""

  def __init__(self, source, tasks):
    self._source, self._drop = source, [k for k in sources.LABEL_KEYS if k not in tasks]

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, i):
    ex = self._source[i]
    if not self._drop:
      return ex
    ex = dict(ex)
    for k in self._drop:
      ex[k] = -1
    return ex


def source_blocks(config, *, train: bool) -> dict:
  """{name: block} of the sources trained on (weight > 0) or evaluated on."""
  out = {}
  for name, block in config.sources.items():
    if (block.weight > 0) if train else block.get("eval", False):
      out[name] = block
  if not out:
    raise ValueError("no source is " + ("trained on (every weight is 0)" if train
                                         else "evaluated on (every eval is False)"))
  return out


def get_source(block, split: str, *, masked: bool = True):
  """A source's split; labels outside its `tasks` masked (sizes come from `image_size`)."""
  src = sources.get_source(block, split)
  return TaskMask(src, tuple(block.tasks)) if masked else src


def train_source(config):
  """The mixture of training sources and the per-source sources, by name."""
  blocks = source_blocks(config, train=True)
  srcs = {n: get_source(b, b.train_split) for n, b in blocks.items()}
  mix = MixSource(list(srcs.values()), [b.weight for b in blocks.values()])
  return mix, srcs


def label_counts(config, mix: MixSource, srcs: dict) -> dict[str, np.ndarray]:
  """Per task, the class counts of one epoch of the mixture (repeats counted)."""
  lookup = condition_lookup(config.condition_classes)
  counts = {t: np.zeros(n, np.float64) for t, n in head_sizes(config)}
  for src, count in zip(mix.sources, mix.counts, strict=True):
    table = sources.label_table(src, tuple(counts))
    reps = count / len(src)
    for t in counts:
      y = table[t]
      if t == "condition":
        y = np.where(y >= 0, lookup[np.maximum(y, 0)], -1)
      y = y[y >= 0]
      counts[t] += reps * np.bincount(y, minlength=len(counts[t]))[: len(counts[t])]
  del srcs
  return counts


def class_weights(counts: np.ndarray, mode: str) -> np.ndarray:
  """Weights with mean 1 over the classes present: none, inverse or inverse_sqrt frequency."""
  c = np.asarray(counts, np.float64)
  present = c > 0
  if mode == "none" or not present.any():
    return np.ones_like(c, np.float32)
  if mode == "inverse":
    w = np.where(present, 1.0 / np.maximum(c, 1e-9), 0.0)
  elif mode == "inverse_sqrt":
    w = np.where(present, 1.0 / np.sqrt(np.maximum(c, 1e-9)), 0.0)
  else:
    raise ValueError(f"unknown class_weighting {mode!r}; expected none, inverse, inverse_sqrt")
  w = w / w[present].mean()
  return np.where(present, w, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------
# Model, initialisation from an autoencoder, prediction
# ---------------------------------------------------------------------------


def resolve_init(config) -> dict | None:
  """Takes the autoencoder's model and enhancement configs over from `config.init_from`.

  Returns its parameters (None when `init_from` is empty). `config` is
  updated in place, so `config.json` of the run records what was used.
  """
  if not config.get("init_from"):
    return None
  ae = anomaly.load_autoencoder(config.init_from)
  with config.unlocked():
    if dict(config.model.ae) != ae.model:
      tracking.log(f"model.ae taken from {config.init_from}: {ae.model}")
    config.model.ae = ae.model
    config.enhance = ml_collections.ConfigDict(ae.enhance)
  return {"encoder": ae.params["encoder"], "decoder": ae.params["decoder"]}


def make_model(config) -> heads_lib.Model:
  m = dict(config.model)
  return heads_lib.Model(ae=dict(m.pop("ae")), heads=head_sizes(config),
                         features=tuple(m.pop("features")),
                         decode=config.loss.get("recon", 0.0) > 0,
                         stop_gradient=bool(config.get("freeze_encoder")), **m)


def param_groups(params) -> dict:
  """"encoder" for the autoencoder's parameters, "heads" for the rest (optax labels)."""
  return {k: jax.tree.map(lambda _, g="encoder" if k == "ae" else "heads": g, v)
          for k, v in params.items()}


def make_enhance(config, size):
  from fbjax.trainers.autoencoder import make_enhance as ae_make_enhance  # noqa: PLC0415

  return ae_make_enhance(config.enhance, jnp.zeros((1, *size), jnp.float32))


@dataclasses.dataclass
class Classifier:
  """A trained classification workdir: config, model and parameters."""

  config: ml_collections.ConfigDict
  model: heads_lib.Model
  params: dict
  workdir: str = ""

  @property
  def size(self) -> tuple[int, int]:
    return tuple(self.config.image_size)

  @property
  def tasks(self) -> tuple[str, ...]:
    return tuple(self.config.tasks)

  def class_names(self, task: str) -> tuple[str, ...]:
    return class_names(self.config, task)

  def make_predict(self, *, jit: bool = True):
    """(B, H, W) images on the grid -> {task: (B, C) probabilities, "features": (B, F)}."""
    enhance = make_enhance(self.config, self.size)
    model, channels = self.model, self.model.channels
    params = jax.tree.map(jnp.asarray, self.params)

    def fn(images):
      logits, aux = model.apply({"params": params}, ae_lib.to_channels(enhance(images),
                                                                       channels))
      out = {t: jax.nn.softmax(v.astype(jnp.float32), axis=-1) for t, v in logits.items()}
      out["features"] = aux["features"]
      return out

    return jax.jit(fn) if jit else fn

  def logit_fn(self, task: str, cls: int):
    """images (B, H, W) -> (B,) logit of class `cls` of `task` (for saliency maps)."""
    enhance = make_enhance(self.config, self.size)
    model, channels = self.model, self.model.channels

    def fn(params, images):
      logits, _ = model.apply({"params": params}, ae_lib.to_channels(enhance(images),
                                                                     channels))
      lg = logits[task].astype(jnp.float32)
      others = jnp.where(jnp.arange(lg.shape[1]) == cls, -jnp.inf, lg)
      return lg[:, cls] - jax.nn.logsumexp(others, axis=1)

    return fn


def load(workdir: str, step: int | None = None) -> Classifier:
  config = anomaly.read_config(workdir)
  if config.get("trainer") != "classify":
    raise ValueError(f"{workdir} was trained by {config.get('trainer')!r}, not classify")
  params = ckpt_lib.load_state(workdir, step)["params"]
  return Classifier(config, make_model(config), params, str(workdir))


def batches(source, size, batch_size: int, keys=KEYS):
  """Fixed-size numpy batches over `source` in order (last one padded, `_mask` marks rows)."""
  ds = pipeline.make_dataset(source, size=tuple(size), batch_size=batch_size, seed=0,
                             train=False, num_epochs=1, keys=keys)
  n = max(1, -(-len(source) // batch_size))
  return parallel.padded_batches(iter(ds), n, batch_size)


def predict_source(clf: Classifier, source, batch_size: int = 64, predict=None,
                   lookup=None, tta: bool = False) -> dict[str, np.ndarray]:
  """Probabilities per task over a whole source, and its labels (condition re-indexed).

  `tta`: average the probabilities of each image and its left-right mirror
  image (the training augmentation flips, so both are in-distribution).
  """
  predict = predict or clf.make_predict()
  lookup = condition_lookup(clf.config.condition_classes) if lookup is None else lookup
  out: dict[str, list] = {}
  for b in batches(source, clf.size, batch_size):
    keep = b["_mask"] > 0
    probs = jax.device_get(predict(jnp.asarray(b["image"])))
    if tta:
      flipped = jax.device_get(predict(jnp.asarray(b["image"][:, :, ::-1])))
      probs = {k: (v + flipped[k]) / 2 if k != "features" else v for k, v in probs.items()}
    for k, v in probs.items():
      out.setdefault(k, []).append(np.asarray(v)[keep])
    for k in sources.LABEL_KEYS:
      y = b[k][keep]
      if k == "condition":
        y = np.where(y >= 0, lookup[np.maximum(y, 0)], -1)
      out.setdefault(f"label_{k}", []).append(y)
  return {k: np.concatenate(v) for k, v in out.items()}


def summarize(clf_config, result: dict) -> dict:
  """Per task, `metrics.classification_summary` over the examples with a known label."""
  out = {}
  for t in clf_config.tasks:
    y = result[f"label_{t}"]
    if not np.any(y >= 0):
      continue
    out[t] = metrics.classification_summary(y, result[t], class_names(clf_config, t))
  return out


# ---------------------------------------------------------------------------
# The anomaly score
# ---------------------------------------------------------------------------


def ae_scores(model_ae: anomaly.Autoencoder, source, batch_size: int, score_fn,
              limit: int | None = None):
  """`score_fn`'s features and reconstruction errors over `source` (at most `limit`
  evenly spaced examples), and the examples' abnormal labels."""
  feats, recon, abnormal = [], [], []
  idx = None
  if limit is not None and len(source) > limit:
    idx = np.linspace(0, len(source) - 1, limit).round().astype(np.int64)
    source = sources.Subset(source, idx)
  for b in batches(source, model_ae.size, batch_size, keys=("image", "abnormal")):
    keep = b["_mask"] > 0
    o = jax.device_get(score_fn(jnp.asarray(b["image"])))
    feats.append(np.asarray(o["features"])[keep])
    recon.append(np.asarray(o["recon"])[keep])
    abnormal.append(b["abnormal"][keep])
  return {"features": np.concatenate(feats), "recon": np.concatenate(recon)}, \
      np.concatenate(abnormal)


def fit_anomaly(config, *, log=tracking.log) -> anomaly.AnomalyModel | None:
  """Fits the Gaussian on normal training images, calibrates on normal validation images.

  The autoencoder is `config.anomaly.ae_workdir` (or `config.init_from`);
  "none" or nothing configured: no anomaly model.
  """
  acfg = config.anomaly
  ae_dir = acfg.get("ae_workdir") or config.get("init_from")
  if not ae_dir or ae_dir == "none":
    return None
  t0 = time.perf_counter()
  ae = anomaly.load_autoencoder(ae_dir)
  score_fn = anomaly.make_score_fn(ae)
  bs = config.eval_batch_size
  normal_train = []
  blocks = source_blocks(config, train=True)
  per = max(1, int(acfg.max_fit_images) // len(blocks))
  for name, block in blocks.items():
    try:
      src = sources.select(get_source(block, block.train_split, masked=False), {"abnormal": 0})
    except ValueError:
      log(f"anomaly: no normal training images in {name}")
      continue
    o, _ = ae_scores(ae, src, bs, score_fn, limit=per)
    normal_train.append(o["features"])
  if not normal_train:
    raise ValueError("anomaly: no normal training image in any training source")
  gaussian = anomaly.Gaussian.fit(np.concatenate(normal_train), float(acfg.shrinkage))
  val_normal: dict[str, list] = {k: [] for k in anomaly.SCORES}
  per_source = {}
  for name, block in source_blocks(config, train=False).items():
    o, y = ae_scores(ae, get_source(block, block.val_split, masked=False), bs, score_fn)
    s = {"mahalanobis": gaussian.distance(o["features"]), "recon": o["recon"]}
    for k in anomaly.SCORES:
      val_normal[k].append(s[k][y == 0])
    per_source[name] = (s, y)
  val_normal = {k: np.concatenate(v) for k, v in val_normal.items()}
  if not val_normal["recon"].size:
    raise ValueError("anomaly: no normal validation image to calibrate the threshold on")
  thresholds = anomaly.calibrate(val_normal, float(acfg.specificity))
  info = {"n_fit": int(sum(len(f) for f in normal_train)),
          "n_calibrate": int(val_normal["recon"].size), "validation": {}}
  for name, (s, y) in per_source.items():
    row = {}
    for k in anomaly.SCORES:
      sens, spec = metrics.sensitivity_specificity(y, s[k], thresholds[k])
      row[k] = {"auroc": metrics.auroc(y, s[k]), "sensitivity": sens, "specificity": spec}
    info["validation"][name] = row
  model = anomaly.AnomalyModel(ae=ae, gaussian=gaussian, thresholds=thresholds,
                               specificity=float(acfg.specificity), primary=acfg.score,
                               info=info)
  log(f"anomaly model from {ae_dir}: fitted on {info['n_fit']} normal images, thresholds "
      f"{thresholds} at {acfg.specificity:.0%} specificity on {info['n_calibrate']} normal "
      f"validation images ({time.perf_counter() - t0:.1f} s)")
  return model


def write_decision(workdir: str, y: np.ndarray, p: np.ndarray, specificity: float) -> dict:
  """`decision.json`: the abnormal-probability threshold at `specificity` on normal val images."""
  neg = p[y == 0]
  if not neg.size:
    tracking.log("no normal validation image: the abnormal decision threshold stays 0.5")
    return {}
  t = metrics.threshold_at_specificity(neg, specificity)
  sens, spec = metrics.sensitivity_specificity(y, p, t)
  d = {"abnormal_threshold": t, "specificity_target": specificity,
       "validation_sensitivity": sens, "validation_specificity": spec,
       "validation_normals": int(neg.size), "validation_abnormals": int(np.sum(y == 1))}
  with open(f"{workdir}/decision.json", "w") as f:
    json.dump(d, f, indent=1)
  tracking.log(f"abnormal decision threshold {t:.4f}: validation sensitivity {sens:.3f}, "
               f"specificity {spec:.3f}")
  return d


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def _caption(config, probs: dict, i: int, y: dict) -> str:
  parts = []
  for t in config.tasks:
    names = class_names(config, t)
    p = probs[t][i]
    k = int(np.argmax(p))
    truth = int(y[t][i])
    mark = "" if truth < 0 else ("=" if truth == k else f"/{names[truth][:6]}")
    parts.append(f"{names[k][:8]} {p[k]:.2f}{mark}")
  return "\n".join(parts)


def train_and_evaluate(config, workdir: str):
  """Trains the heads described by `config`, resuming from `workdir`; returns the state."""
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
  size = tuple(config.image_size)
  mix, srcs = parallel.main_process_first(lambda: train_source(config))
  eval_blocks = source_blocks(config, train=False)
  val_sources = parallel.main_process_first(lambda: {
      n: get_source(b, b.val_split) for n, b in eval_blocks.items()})
  tracking.log(f"training on {mix!r} ({', '.join(srcs)}); validating on "
               + ", ".join(f"{n} ({len(s)})" for n, s in val_sources.items()))
  steps_per_epoch = len(mix) // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"{len(mix)} training examples < batch size {config.batch_size}")
  total_steps = config.total_steps or config.num_epochs * steps_per_epoch
  train_ds = pipeline.make_dataset(
      mix, size=size, batch_size=config.batch_size, seed=config.seed, train=True,
      num_epochs=None, keys=KEYS, augment=None if config.get("augment", True) else
      (lambda rng, ex: ex), process_index=jax.process_index(),
      process_count=jax.process_count(), worker_count=config.get("data_workers", 0),
      read_threads=4, cache=bool(config.get("data_cache", True)))
  train_iter = iter(train_ds)
  counts = label_counts(config, mix, srcs)
  weights = {t: class_weights(c, config.class_weighting) for t, c in counts.items()}
  for t, c in counts.items():
    tracking.log(f"{t}: counts per epoch {np.round(c).astype(int).tolist()}, class weights "
                 f"{np.round(weights[t], 2).tolist()}")
  lookup = jnp.asarray(condition_lookup(config.condition_classes))

  def val_batches(name):
    src = val_sources[name]
    ds = pipeline.make_dataset(
        src, size=size, batch_size=config.eval_batch_size, seed=config.seed, train=False,
        num_epochs=1, keys=KEYS, process_index=jax.process_index(),
        process_count=jax.process_count())
    n = parallel.num_eval_batches(len(src), config.eval_batch_size)
    return parallel.padded_batches(iter(ds), n, config.eval_batch_size // jax.process_count())

  # ---------------------------------------------------------------------------
  # Model and optimizer.
  # ---------------------------------------------------------------------------
  ae_params = resolve_init(config)
  if config.get("freeze_encoder") and ae_params is None:
    logging.warning("freeze_encoder without init_from: the heads learn on a random encoder")
  model = make_model(config)
  channels = model.channels
  schedule = make_schedule(config.optimizer, total_steps, steps_per_epoch)
  enhance = make_enhance(config, size)
  mult = 0.0 if config.get("freeze_encoder") else float(config.get("encoder_lr_mult", 1.0))
  core = make_optimizer(config.optimizer, schedule)
  if mult == 1.0:
    tx = core
  else:
    enc_tx = optax.set_to_zero() if mult == 0.0 else optax.chain(
        make_optimizer(config.optimizer, schedule), optax.scale(mult))
    tx = optax.multi_transform({"heads": core, "encoder": enc_tx}, param_groups)

  def init(rng):
    x = jnp.zeros((1, *size, channels), jnp.float32)
    params = model.init(rng, x)["params"]
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt": tx.init(params),
            "rng": jax.random.key_data(jax.random.fold_in(rng, 1))}

  init_rng = jax.random.key(config.seed)
  abstract_state = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep),
                                jax.eval_shape(init, init_rng))
  class_w = {t: jnp.asarray(w) for t, w in weights.items()}
  heads = head_sizes(config)
  smoothing = float(config.loss.get("label_smoothing", 0.0))

  def inputs(batch):
    return ae_lib.to_channels(enhance(batch["image"]), channels)

  def task_labels(batch):
    y = {t: batch[t].astype(jnp.int32) for t, _ in heads}
    if "condition" in y:
      c = y["condition"]
      y["condition"] = jnp.where(c >= 0, lookup[jnp.maximum(c, 0)], -1)
    return y

  def losses(params, batch, rng, train):
    x = inputs(batch)
    logits, aux = model.apply({"params": params}, x, train=train, rngs={"dropout": rng})
    y = task_labels(batch)
    total, terms = 0.0, {}
    for t, n in heads:
      known = y[t] >= 0
      yt = jnp.maximum(y[t], 0)
      target = optax.smooth_labels(jax.nn.one_hot(yt, n), smoothing) if smoothing else \
          jax.nn.one_hot(yt, n)
      ce = optax.softmax_cross_entropy(logits[t].astype(jnp.float32), target)
      w = class_w[t][yt] * known * batch.get("_mask", 1.0)
      terms[t] = jnp.sum(w * ce) / jnp.maximum(jnp.sum(w), 1e-6)
      total = total + config.loss[t] * terms[t]
    if config.loss.get("recon", 0.0) > 0:
      terms["recon"] = jnp.mean(per_example_mse(aux["recon"], x))
      total = total + config.loss.recon * terms["recon"]
    return total, (terms, logits)

  # ---------------------------------------------------------------------------
  # Update step.
  # ---------------------------------------------------------------------------
  def update_fn(state, batch):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
    (loss, (terms, _)), grads = jax.value_and_grad(
        lambda p: losses(p, batch, rng, True), has_aux=True)(state["params"])
    updates, opt = tx.update(grads, state["opt"], state["params"])
    new_state = dict(state, step=state["step"] + 1, opt=opt,
                     params=optax.apply_updates(state["params"], updates))
    return new_state, {"loss": loss, **{f"loss_{k}": v for k, v in terms.items()},
                       "grad_norm": optax.global_norm(grads), "lr": schedule(state["step"])}

  update = jax.jit(update_fn, donate_argnums=(0,), out_shardings=(rep, rep))

  # ---------------------------------------------------------------------------
  # Checkpoint.
  # ---------------------------------------------------------------------------
  mngr = ckpt_lib.manager(workdir, keep=config.keep_checkpoints, every=config.checkpoint_every,
                          async_save=config.async_checkpoint)
  restored = ckpt_lib.restore(mngr, abstract_state, train_iter)
  if restored is None:
    state = parallel.compile_once(init, init_rng, out_shardings=rep)(init_rng)
    if ae_params is not None:
      params = heads_lib.init_from_autoencoder(jax.device_get(state["params"]), ae_params)
      params = jax.device_put(params, rep)
      state = dict(state, params=params, opt=jax.jit(tx.init, out_shardings=rep)(params))
      tracking.log(f"encoder initialised from {config.init_from}")
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
  k_img = config.num_images

  def eval_fn(params, batch):
    _, (terms, logits) = losses(params, batch, jax.random.key(0), False)
    out = {t: jax.nn.softmax(v.astype(jnp.float32), axis=-1) for t, v in logits.items()}
    out["labels"] = task_labels(batch)
    out["_mask"] = batch["_mask"]
    out["image"] = batch["image"][:k_img]
    return out

  evaluate_batch = jax.jit(eval_fn, out_shardings=rep)

  pooled: dict[str, list] = {}   # abnormal head on every validation source, last evaluation

  def evaluate(step) -> dict:
    row = {}
    pooled.clear()
    for name in val_sources:
      got: dict[str, list] = {}
      images = None
      for b in val_batches(name):
        out = jax.device_get(evaluate_batch(state["params"], parallel.shard_batch(b, mesh)))
        keep = np.asarray(out["_mask"]) > 0
        for t, _ in heads:
          got.setdefault(t, []).append(np.asarray(out[t])[keep])
          got.setdefault(f"y_{t}", []).append(np.asarray(out["labels"][t])[keep])
        if images is None:
          images = (np.asarray(out["image"]), {t: np.asarray(out[t])[:k_img] for t, _ in heads},
                    {t: np.asarray(out["labels"][t])[:k_img] for t, _ in heads})
      for t, _ in heads:
        y, p = np.concatenate(got[f"y_{t}"]), np.concatenate(got[t])
        if not np.any(y >= 0):
          continue
        s = metrics.classification_summary(y, p, class_names(config, t))
        pre = f"val/{name}/{t}"
        row.update({f"{pre}/accuracy": s["accuracy"], f"{pre}/macro_f1": s["macro_f1"],
                    f"{pre}/ece": s["ece"]})
        writer.confusion_matrix(step, f"{pre}/confusion", np.asarray(s["confusion_matrix"]),
                                class_names(config, t))
        if t == "abnormal":
          pooled.setdefault("y", []).append(y)
          pooled.setdefault("p", []).append(p[:, 1])
        if t == "abnormal" and len(np.unique(y[y >= 0])) == 2:
          row[f"{pre}/auroc"] = s["auroc"]
          row[f"{pre}/sens_at_95spec"] = metrics.sensitivity_at_specificity(y, p[:, 1], 0.95)
          fpr, tpr, _ = metrics.roc_curve(y, p[:, 1])
          writer.roc_curves(step, f"{pre}/roc", {"abnormal head": (fpr, tpr)})
      if images is not None and k_img:
        imgs, probs, ys = images
        texts = [_caption(config, probs, i, ys) for i in range(len(imgs))]
        writer.images(step, {f"val/{name}/examples": plots.label_grid(
            list(imgs), texts, columns=4, thumb=max(64, imgs.shape[1])) / 255.0})
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
        state, m = update(state, batch)
        step += 1
        pending.append((step, m))

        last = step == total_steps
        epoch_end = step % steps_per_epoch == 0
        ckpt_due = step % config.checkpoint_every == 0 or last
        eval_due = (step % config.eval_every == 0 if config.eval_every else epoch_end) or last
        if not (step % config.log_every == 0 or epoch_end or ckpt_due or eval_due):
          continue

        fetched = jax.device_get([x for _, x in pending])
        tracking.check_finite((s, x["loss"]) for (s, _), x in zip(pending, fetched, strict=True))
        pending = []
        mean = {k: float(np.mean([x[k] for x in fetched])) for k in fetched[-1]
                if k.startswith("loss")}
        terms = " ".join(f"{k[5:]} {v:.4f}" for k, v in mean.items() if k != "loss")
        line, timing = progress.log(step, f"| loss {mean['loss']:.4f} ({terms})")
        tracking.log(line)
        row = {"epoch": step / steps_per_epoch,
               **{f"train/{k}": v for k, v in mean.items()},
               "train/grad_norm": float(fetched[-1]["grad_norm"]),
               "train/lr": float(fetched[-1]["lr"]), **timing}
        if not compile_logged:
          row["perf/compile_s"], compile_logged = compile_s, True
        if eval_due:
          t0 = time.perf_counter()
          row.update(evaluate(step))
          shown = {k: v for k, v in row.items() if k.startswith("val/")
                   and k.endswith(("accuracy", "macro_f1", "auroc"))}
          tracking.log(f"step {step} | " + " | ".join(f"{k[4:]} {v:.3f}"
                                                      for k, v in shown.items())
                       + f" | eval {time.perf_counter() - t0:.1f} s")
          progress.start(step)
        writer.scalars(step, row)
        if ckpt_due:
          ckpt_lib.save(mngr, step, state, train_iter, force=True)
    mngr.wait_until_finished()
    if is_main and pooled:
      write_decision(workdir, np.concatenate(pooled["y"]), np.concatenate(pooled["p"]),
                     float(config.get("decision_specificity", 0.95)))

    # -------------------------------------------------------------------------
    # Anomaly score (once, after training; rerun it with `fit_anomaly` if needed).
    # -------------------------------------------------------------------------
    if is_main and not anomaly.exists(workdir):
      am = fit_anomaly(config)
      if am is not None:
        anomaly.save(am, workdir)
        row = {}
        for name, r in am.info["validation"].items():
          for k, v in r.items():
            for key, val in v.items():
              row[f"val/{name}/anomaly_{k}/{key}"] = val
        writer.scalars(step, row)
  finally:
    mngr.close()
    writer.close()
  if is_main:
    logging.info("done: %d steps in %.1f s", step, time.perf_counter() - t_start)
  return state

