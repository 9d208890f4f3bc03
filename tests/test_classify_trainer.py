"""The classify trainer end to end on toy data: init from an autoencoder, frozen encoder,
metrics, decision threshold, anomaly model; its metrics agree with `predict_source`."""

import json

import jax
import numpy as np
import pytest

from fbjax.core import checkpoint, metrics
from fbjax.data import sources
from fbjax.evaluation import anomaly, evaluators, inference
from fbjax.runtime import tracking
from fbjax.trainers import autoencoder as ae_trainer
from fbjax.trainers import classify
from tests import classify_util, trainer_util

# One worker runs both tests, so the autoencoder fixture is trained once.
pytestmark = pytest.mark.xdist_group("classify_trainer")


@pytest.fixture(scope="module")
def ae_workdir(tmp_path_factory):
  c = trainer_util.tiny_config(**{"sources.toy.where": "abnormal=0"})
  c.model = dict(classify_util.AE)
  c.optimizer.lr = 0.01
  w = tmp_path_factory.mktemp("ae")
  ae_trainer.train_and_evaluate(c, str(w))
  return w


@pytest.mark.slow
def test_finetune_from_autoencoder_with_reconstruction(ae_workdir, tmp_path):
  c = classify_util.tiny_config()
  c.init_from = str(ae_workdir)
  c.loss.recon = 0.5
  classify.train_and_evaluate(c, str(tmp_path))
  rows = tracking.read_metrics(tmp_path)
  final = [r for r in rows if "val/phantom/plane/accuracy" in r][-1]
  assert final["step"] == 3 and "train/loss_recon" in final
  assert "val/phantom/anomaly_recon/specificity" in rows[-1]
  # The logged validation accuracy is what the saved model predicts on that split.
  clf = inference.load(str(tmp_path), kind="classifier")
  src = sources.block_source(c.sources.phantom, "validation")
  res = evaluators.predict_source(clf, src, batch_size=8)
  assert len(res["plane"]) == len(src)
  np.testing.assert_allclose(res["plane"].sum(axis=1), 1.0, rtol=1e-5)
  acc = metrics.accuracy(res["label_plane"], res["plane"].argmax(1))
  assert final["val/phantom/plane/accuracy"] == pytest.approx(acc, abs=1e-6)
  assert list((tmp_path / "plots").glob("val_phantom_plane_confusion_*.json"))
  assert list((tmp_path / "images").glob("val_phantom_plane_confusion_*.png"))
  decision = json.loads((tmp_path / "decision.json").read_text())
  assert decision["validation_specificity"] >= 0.95
  am = anomaly.load(tmp_path)
  assert am.info["n_fit"] > 0 and set(am.thresholds) == set(anomaly.SCORES)
  assert json.loads((tmp_path / "config.json").read_text())["model"]["ae"]["widths"] == [4, 8]


@pytest.mark.slow
def test_frozen_encoder_stays_the_autoencoders(ae_workdir, tmp_path):
  c = classify_util.tiny_config()
  c.init_from = str(ae_workdir)
  c.freeze_encoder = True
  c.anomaly.ae_workdir = "none"
  classify.train_and_evaluate(c, str(tmp_path))
  got = checkpoint.load_state(tmp_path)["params"]
  want = checkpoint.load_state(ae_workdir)["params"]
  flat = [np.concatenate([np.ravel(v) for v in jax.tree.leaves(p["encoder"])])
          for p in (got["ae"], want)]
  np.testing.assert_array_equal(flat[0], flat[1])
  heads = np.ravel(got["head_plane"]["out"]["kernel"])
  assert heads.size and np.all(np.isfinite(heads))
  assert not anomaly.exists(tmp_path)


def test_init_from_a_path_with_the_home_folder(ae_workdir, monkeypatch):
  """`--config.init_from=~/ae` gives the trainer the same encoder as its absolute path."""
  monkeypatch.setenv("HOME", str(ae_workdir.parent))
  home = classify_util.tiny_config()
  home.init_from = f"~/{ae_workdir.name}"
  full = classify_util.tiny_config()
  full.init_from = str(ae_workdir)
  got, want = classify.resolve_init(home), classify.resolve_init(full)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, got, want)))
  assert home.model.ae.to_dict() == full.model.ae.to_dict()
