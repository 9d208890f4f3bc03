"""The anomaly model fitted from a config: the autoencoder's scores over data blocks, the
Gaussian on the normal training images, the thresholds on the normal validation images.

    am = anomaly_fit.fit_from_config(config, train_blocks, eval_blocks)   # anomaly.AnomalyModel

The model itself (its scores, its files) is `fbjax.evaluation.anomaly`; this module reads
data for it, so it sits above the evaluators.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from fbjax.core import metrics, schema
from fbjax.data import sources
from fbjax.data.mix import Subset
from fbjax.evaluation import anomaly, evaluators
from fbjax.runtime import tracking


def scores_over(ae: anomaly.Autoencoder, source, batch_size: int, score_fn,
                limit: int | None = None) -> tuple[dict, np.ndarray]:
  """`score_fn`'s features and reconstruction errors over `source` (at most `limit`
  evenly spaced examples), and the examples' abnormal labels."""
  if limit is not None and len(source) > limit:
    source = Subset(source, np.linspace(0, len(source) - 1, limit).round())
  feats, recon, abnormal = [], [], []
  for b in evaluators.host_batches(source, ae.size, batch_size, keys=("image", "abnormal")):
    keep = b["_mask"] > 0
    o = jax.device_get(score_fn(jnp.asarray(b["image"])))
    feats.append(np.asarray(o["features"])[keep])
    recon.append(np.asarray(o["recon"])[keep])
    abnormal.append(b["abnormal"][keep])
  return {"features": np.concatenate(feats), "recon": np.concatenate(recon)}, \
      np.concatenate(abnormal)


def fit_from_config(config, train_blocks: dict, eval_blocks: dict, *, log=None,
                    calibrate_on=()):
  """Fits the Gaussian on the normal training images of `train_blocks` (name -> data
  block), calibrates the thresholds on the normal validation images of `eval_blocks`
  (only of those named in `calibrate_on`, when given; the others are still scored).

  The autoencoder is `config.anomaly.ae_workdir` (or `config.init_from`);
  "none" or nothing configured: None. The score reads whole images (prediction
  letterboxes the image onto the autoencoder's grid), so every block is read as whole
  images whatever the classifier's own input; an autoencoder trained on aligned heads
  gives no anomaly model (said in the log).
  """
  log = log or tracking.log
  acfg = config.anomaly
  ae_dir = acfg.get("ae_workdir") or config.get("init_from")
  if not ae_dir or ae_dir == "none":
    return None
  if schema.input_of(anomaly.read_config(ae_dir))["kind"] != "image":
    log(f"anomaly: {ae_dir} reads aligned heads, the anomaly score whole images: "
        "no anomaly model")
    return None
  t0 = time.perf_counter()
  ae = anomaly.load_autoencoder(ae_dir)
  score_fn = anomaly.make_score_fn(ae)
  bs = config.eval_batch_size
  normal_train = []
  per = max(1, int(acfg.max_fit_images) // len(train_blocks))
  for name, block in train_blocks.items():
    try:
      src = sources.select(sources.block_source(block, block.train_split, masked=False),
                           {"abnormal": 0})
    except ValueError:
      log(f"anomaly: no normal training images in {name}")
      continue
    normal_train.append(scores_over(ae, src, bs, score_fn, limit=per)[0]["features"])
  if not normal_train:
    raise ValueError("anomaly: no normal training image in any training source")
  gaussian = anomaly.Gaussian.fit(np.concatenate(normal_train), float(acfg.shrinkage))
  val_normal: dict[str, list] = {k: [] for k in anomaly.SCORES}
  per_source = {}
  pool = tuple(calibrate_on) or tuple(eval_blocks)
  for name, block in eval_blocks.items():
    o, y = scores_over(ae, sources.block_source(block, block.val_split, masked=False), bs,
                       score_fn)
    s = {"mahalanobis": gaussian.distance(o["features"]), "recon": o["recon"]}
    if name in pool:
      for k in anomaly.SCORES:
        val_normal[k].append(s[k][y == 0])
    per_source[name] = (s, y)
  val_normal = {k: np.concatenate(v) if v else np.zeros(0) for k, v in val_normal.items()}
  if not val_normal["recon"].size:
    raise ValueError(f"anomaly: no normal validation image in {list(pool)} to calibrate the "
                     "threshold on")
  thresholds = anomaly.calibrate(val_normal, float(acfg.specificity))
  info = {"n_fit": int(sum(len(f) for f in normal_train)),
          "n_calibrate": int(val_normal["recon"].size),
          "calibrated_on": sorted(n for n in pool if n in eval_blocks), "validation": {}}
  for name, (s, y) in per_source.items():
    row = {}
    for k in anomaly.SCORES:
      sens, spec = metrics.sensitivity_specificity(y, s[k], thresholds[k])
      row[k] = {"auroc": metrics.auroc(y, s[k]), "sensitivity": sens, "specificity": spec}
    info["validation"][name] = row
  model = anomaly.AnomalyModel(ae=ae, gaussian=gaussian, thresholds=thresholds,
                       specificity=float(acfg.specificity), primary=acfg.score, info=info)
  log(f"anomaly model from {ae_dir}: fitted on {info['n_fit']} normal images, thresholds "
      f"{thresholds} at {acfg.specificity:.0%} specificity on {info['n_calibrate']} normal "
      f"validation images ({time.perf_counter() - t0:.1f} s)")
  return model
