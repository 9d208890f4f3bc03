"""Unsupervised anomaly scores from an autoencoder trained on normal images only.

Two scores per image, both from the autoencoder `A` (encoder E, decoder D):

  "mahalanobis"  the Mahalanobis distance of the encoder's features
                 (global latent, mean and max of the spatial code) from the
                 normal training images' distribution: a Gaussian fitted to
                 them with Ledoit-Wolf shrinkage of the covariance
                 (Ledoit & Wolf 2004; the feature-density anomaly score of
                 Lee et al. 2018);
  "recon"        the mean squared reconstruction error over the image's
                 content (pixels brighter than `CONTENT_LEVEL`, i.e. not the
                 black background around the ultrasound sector or the
                 letterbox padding).

`calibrate` sets each score's threshold on normal validation images so that
a given fraction of them (the specificity, default 95 %) lie at or below it;
an image is flagged when its score exceeds the threshold. Everything needed
at prediction time (the autoencoder's weights and config, the Gaussian, the
thresholds) is saved under `<workdir>/anomaly/`, so a classification workdir
is self-contained.

    bundle = anomaly.load_autoencoder(ae_workdir)
    score_fn = anomaly.make_score_fn(bundle)       # (B, H, W) -> {"features", "recon"}
    model = anomaly.fit(train_features, val_scores..., ...)
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import serialization

from fbjax.core import checkpoint as ckpt_lib
from fbjax.core import metrics, schema
from fbjax.core import workdir as workdir_lib
from fbjax.enhance import modules as enhance_lib
from fbjax.models import autoencoder

SCORES = ("mahalanobis", "recon")
CONTENT_LEVEL = 0.01
FOLDER = workdir_lib.ANOMALY


# ---------------------------------------------------------------------------
# The autoencoder
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Autoencoder:
  """A trained autoencoder: linen kwargs, parameters, enhancement config, input size."""

  model: dict
  params: dict
  enhance: dict
  size: tuple[int, int]
  workdir: str = ""

  @property
  def channels(self) -> int:
    return int(self.model.get("channels", 1))


def read_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
  return workdir_lib.read_config(workdir)


# Where a workdir's autoencoder lives, by the model kind the workdir records:
# (its parameter subtree, the config field of its linen kwargs, of its grid size).
AUTOENCODER_IN = {"autoencoder": ((), "model", "input.size"),
                  "classifier": (("ae",), "model.ae", "input.size")}


def _field(config, dotted: str):
  for part in dotted.split("."):
    config = config[part]
  return config


def load_autoencoder(workdir: str | os.PathLike, step: int | None = None) -> Autoencoder:
  """The autoencoder of `workdir` (an autoencoder, or a classifier's encoder-decoder)."""
  workdir = os.path.expanduser(os.fspath(workdir))
  cfg = read_config(workdir)
  kind = schema.kind_of(cfg, f"{workdir}/config.json")
  if kind not in AUTOENCODER_IN:
    raise ValueError(f"{workdir} holds a {kind}, which has no autoencoder")
  return autoencoder_of(cfg, ckpt_lib.load_state(workdir, step)["params"], workdir)


def autoencoder_of(cfg, params: dict, workdir: str | os.PathLike = "") -> Autoencoder:
  """The autoencoder inside a loaded workdir's parameters (`cfg` its config.json)."""
  kind = schema.kind_of(cfg, f"{workdir}/config.json")
  path, model_field, size_field = AUTOENCODER_IN[kind]
  for key in path:
    params = params[key]
  if "decoder" not in params:
    raise ValueError(f"{workdir} has no decoder weights (trained without reconstruction)")
  enhance = cfg.get("enhance", {"chain": "none"})
  enhance = enhance.to_dict() if hasattr(enhance, "to_dict") else dict(enhance)
  return Autoencoder(model=_plain(_field(cfg, model_field)), params=params, enhance=enhance,
                     size=tuple(_field(cfg, size_field)), workdir=os.fspath(workdir))


def _plain(d: dict) -> dict:
  return {k: tuple(v) if isinstance(v, list) else v for k, v in dict(d).items()}


def encoder_features(latent, z_map):
  """The feature vector scored by the Gaussian: latent, mean and max of the code."""
  return jnp.concatenate([latent, z_map.mean(axis=(1, 2)), z_map.max(axis=(1, 2))], axis=-1)


def make_score_fn(ae: Autoencoder, *, jit: bool = True):
  """(B, H, W) images in [0, 1] -> {"features": (B, F), "recon": (B,), "recon_image"}."""
  model = autoencoder.Model(**ae.model)
  enhance = enhance_lib.make_enhance_fn(ml_collections.ConfigDict(dict(ae.enhance)), ae.size)
  params = jax.tree.map(jnp.asarray, ae.params)

  def fn(images):
    x = autoencoder.to_channels(enhance(images), ae.channels)
    recon, aux = model.apply({"params": params}, x)
    content = (images > CONTENT_LEVEL).astype(jnp.float32)
    err = jnp.mean(jnp.square(recon.astype(jnp.float32) - x), axis=-1)
    recon_err = (err * content).sum(axis=(1, 2)) / jnp.maximum(content.sum(axis=(1, 2)), 1.0)
    return {"features": encoder_features(aux["latent"], aux["latent_map"]),
            "recon": recon_err, "recon_image": recon[..., 0]}

  return jax.jit(fn) if jit else fn


# ---------------------------------------------------------------------------
# The Gaussian of normal features and the thresholds
# ---------------------------------------------------------------------------


def ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, float]:
  """Ledoit-Wolf shrunk covariance of rows `x` (N, D) and its shrinkage in [0, 1].

  The same estimator as `sklearn.covariance.ledoit_wolf` (centred data,
  shrinkage towards mu * I with mu the mean variance).
  """
  x = np.asarray(x, np.float64)
  n, d = x.shape
  x = x - x.mean(axis=0)
  s = x.T @ x / n
  mu = np.trace(s) / d
  x2 = x ** 2
  beta_ = np.sum(x2.T @ x2)
  delta_ = np.sum((x.T @ x) ** 2) / n ** 2
  beta = (beta_ / n - delta_) / (d * n)
  delta = (delta_ - 2.0 * mu * np.trace(s) + d * mu ** 2) / d
  beta = min(beta, delta)
  shrink = 0.0 if beta == 0 else float(beta / delta)
  return (1.0 - shrink) * s + shrink * mu * np.eye(d), shrink


@dataclasses.dataclass
class Gaussian:
  mean: np.ndarray
  precision: np.ndarray
  shrinkage: float

  @classmethod
  def fit(cls, features: np.ndarray, shrinkage: float = -1.0) -> Gaussian:
    """Mean and (shrunk) precision of `features` (N, D); shrinkage < 0: Ledoit-Wolf."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
      raise ValueError(f"need at least 2 feature rows to fit a Gaussian, got {f.shape}")
    if shrinkage < 0:
      cov, shrinkage = ledoit_wolf(f)
    else:
      fc = f - f.mean(axis=0)
      s = fc.T @ fc / f.shape[0]
      cov = (1 - shrinkage) * s + shrinkage * np.trace(s) / s.shape[0] * np.eye(s.shape[0])
    cov += 1e-9 * max(np.trace(cov) / cov.shape[0], 1e-12) * np.eye(cov.shape[0])
    return cls(f.mean(axis=0), np.linalg.pinv(cov, hermitian=True), float(shrinkage))

  def distance(self, features: np.ndarray) -> np.ndarray:
    d = np.asarray(features, np.float64) - self.mean
    return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", d, self.precision, d), 0.0))


@dataclasses.dataclass
class AnomalyModel:
  """Everything `score` needs: the autoencoder, the Gaussian and the thresholds."""

  ae: Autoencoder
  gaussian: Gaussian
  thresholds: dict
  specificity: float
  primary: str = "mahalanobis"
  info: dict = dataclasses.field(default_factory=dict)

  def scores(self, outputs: dict) -> dict[str, np.ndarray]:
    """Host-side scores from `make_score_fn`'s outputs."""
    return {"mahalanobis": self.gaussian.distance(np.asarray(outputs["features"])),
            "recon": np.asarray(outputs["recon"], np.float64)}

  def flags(self, scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) > self.thresholds[k] for k, v in scores.items()}


def calibrate(val_normal_scores: dict[str, np.ndarray], specificity: float) -> dict[str, float]:
  """Per score, the threshold that keeps `specificity` of the normal images below it."""
  return {k: metrics.threshold_at_specificity(v, specificity)
          for k, v in val_normal_scores.items()}


def save(model: AnomalyModel, workdir: str | os.PathLike) -> pathlib.Path:
  folder = pathlib.Path(workdir) / FOLDER
  folder.mkdir(parents=True, exist_ok=True)
  params = jax.tree.map(np.asarray, model.ae.params)
  (folder / "ae_params.msgpack").write_bytes(serialization.msgpack_serialize(params))
  np.savez(folder / "gaussian.npz", mean=model.gaussian.mean, precision=model.gaussian.precision)
  meta = {"ae_model": model.ae.model, "ae_enhance": model.ae.enhance,
          "ae_size": list(model.ae.size), "ae_workdir": model.ae.workdir,
          "shrinkage": model.gaussian.shrinkage, "thresholds": model.thresholds,
          "specificity": model.specificity, "primary": model.primary, "info": model.info}
  (folder / "anomaly.json").write_text(json.dumps(meta, indent=1, default=_json) + "\n")
  return folder


def _json(v):
  if isinstance(v, (np.floating, np.integer)):
    return v.item()
  if isinstance(v, (tuple, np.ndarray)):
    return list(v)
  raise TypeError(type(v))


def exists(workdir: str | os.PathLike) -> bool:
  return (pathlib.Path(workdir) / FOLDER / "anomaly.json").exists()


def load(workdir: str | os.PathLike) -> AnomalyModel:
  folder = pathlib.Path(workdir) / FOLDER
  if not (folder / "anomaly.json").exists():
    raise FileNotFoundError(f"no anomaly model under {folder} (train with anomaly.ae_workdir "
                            "or init_from set)")
  meta = json.loads((folder / "anomaly.json").read_text())
  params = serialization.msgpack_restore((folder / "ae_params.msgpack").read_bytes())
  g = np.load(folder / "gaussian.npz")
  ae = Autoencoder(model=_plain(meta["ae_model"]), params=params, enhance=meta["ae_enhance"],
                   size=tuple(meta["ae_size"]), workdir=meta.get("ae_workdir", ""))
  return AnomalyModel(ae=ae, gaussian=Gaussian(g["mean"], g["precision"], meta["shrinkage"]),
                      thresholds={k: float(v) for k, v in meta["thresholds"].items()},
                      specificity=float(meta["specificity"]), primary=meta["primary"],
                      info=meta.get("info", {}))


# ---------------------------------------------------------------------------
# Fitting from a training config
# ---------------------------------------------------------------------------
