"""`inference.load` opens a workdir of every kind from what it records (no training)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import autoencoder as ae_config
from configs import despeckle as despeckle_config
from fbjax.core import checkpoint as ckpt_lib
from fbjax.enhance import despeckle
from fbjax.evaluation import anomaly, inference
from fbjax.models import autoencoder
from fbjax.runtime import tracking
from tests import classify_util


def _fake(path, config, model, sample, kind):
  """config.json (with `kind`) and one checkpoint of `model`'s random parameters."""
  params = model.init(jax.random.key(0), sample)["params"]
  with config.unlocked():
    config.kind = kind
  tracking.Writer(path, config, enabled=True).close()
  mngr = ckpt_lib.manager(path, async_save=False)
  ckpt_lib.save(mngr, 0, {"step": jnp.zeros((), jnp.int32), "params": params}, force=True)
  mngr.wait_until_finished()
  mngr.close()
  return params


def test_every_kind_loads_and_predicts(tmp_path):
  x = jax.random.uniform(jax.random.key(1), (2, 32, 32))
  # Segmenter (kind derived from the recorded trainer name: an older workdir).
  seg_dir = classify_util.fake_seg_workdir(tmp_path / "seg")
  seg = inference.load(seg_dir)
  assert seg.kind == "segmenter" and seg.size == (32, 48)
  probs = np.asarray(seg.make_predict()(jnp.zeros((2, *seg.size))))
  assert probs.shape == (2, 32, 48, 3) and np.all((probs >= 0) & (probs <= 1))
  # Classifier: probabilities per task that sum to one.
  clf = inference.load(classify_util.fake_workdir(tmp_path / "cls"), kind="classifier")
  out = clf.make_predict()(x)
  assert set(out) == {"plane", "abnormal", "condition", "features"}
  np.testing.assert_allclose(np.asarray(out["plane"]).sum(1), 1.0, rtol=1e-5)
  # Autoencoder: its reconstruction is what the model computes with those parameters.
  c = ae_config.get_config("variant=seed,runlocal")
  c.input.size, c.model.widths, c.wandb.mode = (32, 32), (4, 8, 16), "disabled"
  model = autoencoder.Model(**c.model)
  params = _fake(tmp_path / "ae", c, model, jnp.zeros((1, 32, 32, 3)), "autoencoder")
  ae = inference.load(tmp_path / "ae")
  got = ae.make_predict()(x)
  want = model.apply({"params": params}, autoencoder.to_channels(x, 3))[0][..., 0]
  np.testing.assert_allclose(np.asarray(got["recon_image"]), np.asarray(want), atol=1e-5)
  assert anomaly.load_autoencoder(tmp_path / "ae").size == (32, 32)
  # Despeckler: same shape out, in [0, 1].
  d = despeckle_config.get_config("runlocal")
  d.wandb.mode = "disabled"
  _fake(tmp_path / "dsp", d, despeckle.Model(**d.model), jnp.zeros((1, 32, 32)), "despeckler")
  y = np.asarray(inference.load(tmp_path / "dsp").make_predict()(x))
  assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1


def test_wrong_kind_and_missing_config_are_clear_errors(tmp_path):
  seg_dir = classify_util.fake_seg_workdir(tmp_path / "seg")
  with pytest.raises(ValueError, match="holds a segmenter .* not a classifier"):
    inference.load(seg_dir, kind="classifier")
  with pytest.raises(ValueError, match="segmenter, which has no autoencoder"):
    anomaly.load_autoencoder(seg_dir)
  with pytest.raises(FileNotFoundError, match="not a trained fbjax workdir"):
    inference.load(tmp_path / "nothing")
