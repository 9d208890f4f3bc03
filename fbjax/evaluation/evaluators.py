"""Evaluation over a data source, shared by training, `launch.evaluate`, benchmarks and the demo.

Each evaluator takes a `train_lib.Run` (mesh, batches, jit), a jitted
`fn(params, batch)` and the parameters, and returns a row of scalars named
`val/<source>/<metric>` plus what the caller needs beyond the scalars (the
first batch for images, the predictions for thresholds). Training validation
and `launch.evaluate` call the same function with the same prediction
function, so the number logged during training is the number evaluation
prints for the same checkpoint and split.

- `reconstruction`: mean squared error of an autoencoder;
- `denoising`: the despeckler's blind-spot loss; PSNR and SSIM against the
  clean image where the data set has one (the phantom);
- `segmentation`: Dice per channel on the network grid (probabilities > 0.5)
  and, where the data set gives HC, the HC error of the ellipse fitted to the
  predicted head, in mm (original-resolution measurements: `segment_eval`);
- `classification`: per task accuracy, macro-F1, ECE and, for the abnormal
  head, AUROC and sensitivity at 95 % specificity, plus the probabilities.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from fbjax.core import metrics
from fbjax.data import pipeline
from fbjax.enhance import despeckle
from fbjax.enhance import metrics as quality
from fbjax.evaluation import networks
from fbjax.geometry import biometry, segment_post
from fbjax.models import autoencoder as ae
from fbjax.runtime import parallel, train_lib

SEG_CHANNELS = ("head", "skull", "brain")
SEG_KEYS = ("image", *(f"{c}_mask" for c in SEG_CHANNELS),
            *(f"has_{c}_mask" for c in SEG_CHANNELS), "pixel_spacing_mm", "hc_mm")
CLASSIFY_KEYS = ("image", "plane", "abnormal", "condition")


def _sums(total, part):
  return part if total is None else jax.tree.map(lambda a, b: a + b, total, part)


# ---------------------------------------------------------------------------
# Reconstruction
# ---------------------------------------------------------------------------


def per_example_mse(recon, target):

  return jnp.mean(jnp.square(recon.astype(jnp.float32) - target), axis=(1, 2, 3))


def reconstruction_fn(config, model=None):
  """(params, batch) -> masked MSE sums and the first `config.num_images` reconstructions."""


  model = model or ae.Model(**config.model)
  inputs, k = networks.autoencoder_inputs(config), config.num_images

  def fn(params, batch):
    x, y = inputs(batch)
    recon, aux = model.apply({"params": params}, x)
    mask = batch["_mask"]
    return {"mse_sum": jnp.sum(per_example_mse(recon, y) * mask), "count": jnp.sum(mask),
            "input": x[:k, ..., 0], "recon": recon[:k, ..., 0], "latent": aux["latent"][:k]}

  return fn


def reconstruction(run, fn, params, source, keys, name: str = ""):
  """`fn(params, batch)` -> {"mse_sum", "count", ...}: row {"val/[name/]mse"}, first batch."""
  total, first = None, None
  for b in run.batches(source, keys):
    out = fn(params, b)
    total = _sums(total, {"mse_sum": out["mse_sum"], "count": out["count"]})
    first = first or out
  total = jax.device_get(total)
  prefix = f"val/{name}/" if name else "val/"
  return {f"{prefix}mse": float(total["mse_sum"]) / max(float(total["count"]), 1.0)}, \
      jax.device_get(first)


# ---------------------------------------------------------------------------
# Denoising (the self-supervised despeckler)
# ---------------------------------------------------------------------------

DENOISE_KEYS = ("image", "clean", "has_clean")


def denoising_fn(config, model=None):
  """(params, batch, index) -> blind-spot loss sums (the same hidden boxes at every
  evaluation), PSNR/SSIM sums against `clean` where the example has one."""


  model = model or despeckle.Model(**config.model)
  bs = dict(fraction=float(config.blind_spot.fraction),
            mask_hw=tuple(int(v) for v in config.blind_spot.mask_hw))
  k, eval_rng = config.num_images, jax.random.key(config.seed + 1)

  def fn(params, batch, index):
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

  return fn


def denoising(run, fn, params, source, name: str = ""):
  """Row {"val/[name/]blind_spot_loss", "psnr_db", "ssim"} (the last two where a clean
  image exists) and the first batch."""

  total, first = None, None
  for i, b in enumerate(run.batches(source, DENOISE_KEYS)):
    out = fn(params, b, jnp.int32(i))
    total = _sums(total, {n: v for n, v in out.items() if n.endswith(("_sum", "_count"))})
    first = first or out
  total = {n: float(v) for n, v in jax.device_get(total).items()}
  prefix = f"val/{name}/" if name else "val/"
  row = {f"{prefix}blind_spot_loss": total["loss_sum"] / max(total["loss_count"], 1.0)}
  if total["clean_count"] > 0:
    row[f"{prefix}psnr_db"] = total["psnr_sum"] / total["clean_count"]
    row[f"{prefix}ssim"] = total["ssim_sum"] / total["clean_count"]
  return row, jax.device_get(first)


# ---------------------------------------------------------------------------
# Segmentation
# ---------------------------------------------------------------------------


def segmentation_batch(probs, batch):
  """Per-example Dice (B, 3) of `probs` > 0.5 and what the host needs for HC errors."""

  ref = jnp.stack([batch[f"{c}_mask"] for c in SEG_CHANNELS], axis=-1) > 0
  present = jnp.stack([batch[f"has_{c}_mask"] for c in SEG_CHANNELS], axis=-1)
  pred = probs > 0.5
  inter = (pred & ref).sum(axis=(1, 2))
  total = pred.sum(axis=(1, 2)) + ref.sum(axis=(1, 2))
  dice = jnp.where(total > 0, 2.0 * inter / jnp.maximum(total, 1), 1.0)
  w = present.astype(jnp.float32) * batch["_mask"][:, None]
  return {"dice_sum": (dice * w).sum(0), "dice_count": w.sum(0), "head": probs[..., 0],
          "pixel_spacing_mm": batch["pixel_spacing_mm"], "hc_mm": batch["hc_mm"],
          "mask": batch["_mask"], "image": batch["image"]}


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


def segmentation(run, fn, params, source, name: str, method: str):
  """`fn(params, batch)` = `segmentation_batch(probs, batch)`: Dice, HC error; first batch."""
  total, first, hc_err = None, None, []
  for b in run.batches(source, SEG_KEYS):
    out = fn(params, b)
    total = _sums(total, {"d": out["dice_sum"], "n": out["dice_count"]})
    host = jax.device_get({k: out[k] for k in ("head", "pixel_spacing_mm", "hc_mm", "mask",
                                               "image")})
    keep = host["mask"] > 0
    hc_err += grid_hc_errors(host["head"][keep], host["pixel_spacing_mm"][keep],
                             host["hc_mm"][keep], method)
    first = first or host
  total = jax.device_get(total)
  row = {}
  for i, c in enumerate(SEG_CHANNELS):
    if total["n"][i] > 0:
      row[f"val/{name}/dice_{c}"] = float(total["d"][i] / total["n"][i])
  if hc_err:
    e = np.asarray(hc_err)
    ok = np.isfinite(e)
    row[f"val/{name}/hc_abs_mm"] = float(np.mean(e[ok])) if ok.any() else math.nan
    row[f"val/{name}/hc_fail_rate"] = float(np.mean(~ok))
  return row, first


# ---------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------


def predictions(run, fn, params, source, keys=CLASSIFY_KEYS) -> dict[str, np.ndarray]:
  """Every output of `fn(params, batch)` over `source`, padding rows dropped, in order.

  `fn` returns per-example arrays (probabilities per task, labels as
  `label_<task>`, ...) and the batch's `_mask` (real rows 1, padding 0).
  """
  out: dict[str, list] = {}
  for b in run.batches(source, keys):
    got = jax.device_get(fn(params, b))
    keep = np.asarray(got.pop("_mask")) > 0
    for k, v in got.items():
      out.setdefault(k, []).append(np.asarray(v)[keep])
  return {k: np.concatenate(v) for k, v in out.items()}


def classification(result: dict, class_names: dict, name: str) -> tuple[dict, dict]:
  """Row of scalars and the full `metrics.classification_summary` per task.

  `result` holds `<task>` (N, C) probabilities and `label_<task>` (N,) labels
  (-1 unknown); `class_names` maps each task to its classes.
  """
  row, summaries = {}, {}
  for t, names in class_names.items():
    y, p = result[f"label_{t}"], result[t]
    if not np.any(y >= 0):
      continue
    s = metrics.classification_summary(y, p, names)
    pre = f"val/{name}/{t}"
    row.update({f"{pre}/accuracy": s["accuracy"], f"{pre}/macro_f1": s["macro_f1"],
                f"{pre}/ece": s["ece"]})
    if t == "abnormal" and len(np.unique(y[y >= 0])) == 2:
      row[f"{pre}/auroc"] = s["auroc"]
      row[f"{pre}/sens_at_95spec"] = metrics.sensitivity_at_specificity(y, p[:, 1], 0.95)
    summaries[t] = s
  return row, summaries


def abnormal_threshold(labels, probs, specificity: float) -> dict:
  """The abnormal-probability threshold at `specificity` on the normal images given.

  `labels` (N,) 0 normal / 1 abnormal / -1 unknown, `probs` (N,) abnormal
  probabilities, pooled over the evaluated sources. Empty without a normal image.
  """
  labels, probs = np.asarray(labels), np.asarray(probs)
  neg = probs[labels == 0]
  if not neg.size:
    return {}
  t = metrics.threshold_at_specificity(neg, specificity)
  sens, spec = metrics.sensitivity_specificity(labels, probs, t)
  return {"abnormal_threshold": t, "specificity_target": specificity,
          "validation_sensitivity": sens, "validation_specificity": spec,
          "validation_normals": int(neg.size), "validation_abnormals": int(np.sum(labels == 1))}


def decision(labels, probs, source, specificity: float, pool=()) -> dict:
  """`abnormal_threshold` of the validation images of the sources in `pool` (all
  sources when empty), plus `per_source`: the same on each source's own images
  (`source` (N,) names), where that source has normals.

  `pool` names the sources whose normals look like the images the decision is
  for (e.g. the abnormalities set's normals and the FETAL_PLANES_DB images they
  were taken from), so that a large source of other normals (HC18) does not set
  the threshold. A pool with no normal image falls back to all sources.
  """
  labels, probs, source = np.asarray(labels), np.asarray(probs), np.asarray(source)
  on = np.isin(source, list(pool)) if pool else np.ones(len(source), bool)
  d = abnormal_threshold(labels[on], probs[on], specificity)
  pooled_from = sorted({str(v) for v in source[on]})
  if not d:
    d, pooled_from = abnormal_threshold(labels, probs, specificity), sorted(
        {str(v) for v in source})
  if d:
    d["sources"] = pooled_from
    d["per_source"] = {}
    for name in np.unique(source):
      ds = abnormal_threshold(labels[source == name], probs[source == name], specificity)
      if ds:
        d["per_source"][str(name)] = ds
  return d


def calibration(pooled: dict, tasks) -> dict:
  """Per task with known labels in `pooled` (`label_<task>`, `<task>` probabilities):
  the temperature fitted on them (`metrics.fit_temperature`; apply with
  `metrics.apply_temperature`) and the NLL / ECE before and after."""
  out = {}
  for t in tasks:
    if t not in pooled or not np.any(pooled[f"label_{t}"] >= 0):
      continue
    y, p = pooled[f"label_{t}"], pooled[t]
    temp = metrics.fit_temperature(p, y)
    q = metrics.apply_temperature(p, temp)
    out[t] = {"temperature": temp, "n": int(np.sum(y >= 0)),
              "nll": metrics.nll(p, y), "nll_calibrated": metrics.nll(q, y),
              "ece": metrics.expected_calibration_error(p, y),
              "ece_calibrated": metrics.expected_calibration_error(q, y)}
  return out


def classification_fn(config, probs_fn):
  """(params, batch) -> probabilities per task, `label_<task>` (condition re-indexed to
  `config.condition_classes`), `_mask`; with `config.eval_flip`, probabilities averaged
  with those of the left-right mirrored image (training flips, so both are in-distribution);
  with `config.eval_rot180`, with those of the image rotated by 180 degrees.
  """


  lookup = jnp.asarray(networks.condition_lookup(config.condition_classes))
  flip = bool(config.get("eval_flip", False))
  rot180 = bool(config.get("eval_rot180", False))

  def fn(params, batch):
    out = probs_fn(params, batch["image"])
    if flip:
      mirrored = probs_fn(params, batch["image"][:, :, ::-1])
      out = {k: (v + mirrored[k]) / 2 if k != "features" else v for k, v in out.items()}
    if rot180:
      # The aligned head's other canonical orientation (`align.aligned_head(flip=True)`
      # is the crop rotated by 180 degrees): the mean over both.
      turned = probs_fn(params, batch["image"][:, ::-1, ::-1])
      out = {k: (v + turned[k]) / 2 if k != "features" else v for k, v in out.items()}
    for t in CLASSIFY_KEYS[1:]:
      y = batch[t].astype(jnp.int32)
      if t == "condition":
        y = jnp.where(y >= 0, lookup[jnp.maximum(y, 0)], -1)
      out[f"label_{t}"] = y
    out["_mask"] = batch["_mask"]
    return out

  return fn


def predict_source(clf, source, batch_size: int | None = None, *, tta: bool | None = None):
  """A loaded classifier's probabilities per task over a whole source, and its labels.

  The same function validation runs during training (`classification_fn`);
  `tta` overrides the workdir's `eval_flip`.
  """

  config = clf.config.copy_and_resolve_references()
  with config.unlocked():
    if tta is not None:
      config.eval_flip = bool(tta)
  run = train_lib.eval_run(config, clf.workdir, batch_size=batch_size)
  fn = run.jit(classification_fn(config, clf.predict_fn()))
  return predictions(run, fn, clf.params, source)


def host_batches(source, size, batch_size: int, keys=CLASSIFY_KEYS):
  """Fixed-size numpy batches over `source` in order (last one padded, `_mask` marks rows)."""

  ds = pipeline.make_dataset(source, size=tuple(size), batch_size=batch_size, seed=0,
                             train=False, num_epochs=1, keys=keys)
  n = max(1, -(-len(source) // batch_size))
  return parallel.padded_batches(iter(ds), n, batch_size)
