"""The shared loop: artefacts belong to the final checkpoint (redone after a stop before
them), the decision threshold is that of the final parameters, one metrics row per step."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fbjax.core import metrics
from fbjax.data import sources
from fbjax.evaluation import evaluators, inference
from fbjax.runtime import tracking, train_lib
from fbjax.trainers import classify
from tests import classify_util


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
  os.environ.setdefault("WANDB_MODE", "disabled")
  c = classify_util.tiny_config()
  c.anomaly.ae_workdir = "none"
  c.total_steps = 4
  c.eval_every = 2            # evaluations at steps 2 and 4
  c.checkpoint_every = 2
  w = tmp_path_factory.mktemp("cls")
  classify.train_and_evaluate(c, str(w))
  return c, w


def test_decision_threshold_is_the_final_parameters_on_pooled_normal_validation(classifier):
  c, w = classifier
  decision = json.loads((w / "decision.json").read_text())
  assert decision["step"] == 4
  assert json.loads((w / train_lib.COMPLETE).read_text())["step"] == 4
  # Recomputed another way: the saved model's abnormal probabilities on the validation
  # split, the threshold at 95 % specificity on its normal images.
  clf = inference.load(w, kind="classifier")
  res = evaluators.predict_source(clf, sources.block_source(c.sources.phantom, "validation"))
  y, p = res["label_abnormal"], res["abnormal"][:, 1]
  assert np.sum(y == 0) >= 5
  want = metrics.threshold_at_specificity(p[y == 0], 0.95)
  assert decision["abnormal_threshold"] == pytest.approx(want, abs=1e-6)
  assert decision["validation_normals"] == int(np.sum(y == 0))
  rows = tracking.read_metrics(w)
  assert [r["step"] for r in rows] == [1, 2, 3, 4]     # one row per step
  assert "train/epoch_loss" in rows[-1] and "val/phantom/plane/accuracy" in rows[-1]


def test_stop_after_the_last_checkpoint_redoes_the_artefacts(classifier, tmp_path):
  # A run killed after its checkpoint at total_steps, before its artefacts: the
  # checkpoint is there, decision.json and complete.json are not.
  c, w = classifier
  stopped = tmp_path / "stopped"
  shutil.copytree(w, stopped)
  want = json.loads((w / "decision.json").read_text())
  rows = tracking.read_metrics(w)
  for name in ("decision.json", train_lib.COMPLETE):
    os.remove(stopped / name)
  classify.train_and_evaluate(c, str(stopped))
  assert json.loads((stopped / "decision.json").read_text()) == want
  assert json.loads((stopped / train_lib.COMPLETE).read_text())["step"] == 4
  assert tracking.read_metrics(stopped) == rows        # no step trained or logged again
  # Started once more, a completed run does nothing.
  mtime = os.path.getmtime(stopped / "decision.json")
  classify.train_and_evaluate(c, str(stopped))
  assert os.path.getmtime(stopped / "decision.json") == mtime


def test_launch_evaluate_prints_the_logged_validation_numbers(classifier, tmp_path):
  from fbjax.jobs import evaluate

  c, w = classifier
  logged = tracking.read_metrics(w)[-1]
  summary = evaluate.evaluate_workdir(str(w), c, out_dir=str(tmp_path))
  got = summary["sources"]["phantom"]["metrics"]
  assert got and set(got) <= set(logged)
  for k, v in got.items():
    assert v == pytest.approx(logged[k], abs=1e-6), k
  assert json.loads((tmp_path / "evaluation.json").read_text())["kind"] == "classifier"
  decision = summary["sources"]["phantom"]["abnormal_decision"]
  assert decision["specificity"] >= 0.95


def test_autoencoder_evaluation_equals_the_logged_validation(tmp_path):
  from fbjax.jobs import evaluate
  from fbjax.trainers import autoencoder
  from tests import trainer_util

  c = trainer_util.tiny_config()
  autoencoder.train_and_evaluate(c, str(tmp_path))
  logged = tracking.read_metrics(tmp_path)[-1]
  got = evaluate.evaluate_workdir(str(tmp_path), c)["sources"]["toy"]["metrics"]
  assert got == {"val/mse": pytest.approx(logged["val/mse"], rel=1e-6)}
  assert inference.load(tmp_path).kind == "autoencoder"


def test_batch_fn_transforms_the_batch_in_the_step_with_a_step_folded_rng():
  import jax
  import jax.numpy as jnp
  import optax

  def batch_fn(rng, batch):            # e.g. on-device augmentation
    return {"x": batch["x"] + jax.random.normal(rng, batch["x"].shape)}

  def loss_fn(params, batch, rng):
    return jnp.mean(jnp.square(params["w"] - batch["x"])), {}

  tx = optax.sgd(0.0)                  # the parameters stay 0: the loss shows the batch
  update = jax.jit(train_lib.make_update_fn(loss_fn, tx, lambda s: 0.0, batch_fn))
  s0 = train_lib.make_init_fn(lambda r: {"w": jnp.zeros(4)}, tx)(jax.random.key(0))
  batch = {"x": jnp.zeros(4)}
  s1, m1 = update(s0, batch)
  _, m2 = update(s1, batch)
  rng = jax.random.fold_in(jax.random.wrap_key_data(s0["rng"]), 0)
  want = jnp.mean(jnp.square(jax.random.normal(jax.random.split(rng)[1], (4,))))
  assert float(m1["loss"]) == pytest.approx(float(want), rel=1e-6)
  assert float(update(s0, batch)[1]["loss"]) == float(m1["loss"])   # a resumed step: same draw
  assert float(m2["loss"]) != float(m1["loss"])                      # the next step: new draw


def test_finetune_optimizer_scales_or_freezes_the_encoder():
  """SGD: the encoder's update is the heads' rule times the multiplier (0: frozen)."""
  import ml_collections
  import optax

  from fbjax.runtime import optim

  opt = ml_collections.ConfigDict(dict(name="sgd", grad_clip=0.0))
  params = {"ae": {"w": jnp.ones(3)}, "head": {"w": jnp.ones(2)}}
  grads = jax.tree.map(jnp.ones_like, params)
  for mult in (1.0, 0.25, 0.0):
    tx = optim.make_finetune_optimizer(opt, optax.constant_schedule(0.1), mult)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["head"]["w"], -0.1)
    np.testing.assert_allclose(updates["ae"]["w"], -0.1 * mult)


def test_decision_pools_the_named_sources_and_keeps_each_source_apart():
  # Two sources of normals: "a" scores low, "b" (many more images) high. Pooling all
  # lets "b" set the threshold; pooling ("a",) gives a's own 95 % quantile.
  rng = np.random.default_rng(0)
  pa, pb = rng.uniform(0.0, 0.2, 40), rng.uniform(0.5, 0.9, 400)
  abn = rng.uniform(0.3, 1.0, 30)
  probs = np.concatenate([pa, pb, abn])
  labels = np.concatenate([np.zeros(440, int), np.ones(30, int)])
  source = np.array(["a"] * 40 + ["b"] * 400 + ["a"] * 30, dtype=object)
  d_all = evaluators.decision(labels, probs, source, 0.95)
  d_a = evaluators.decision(labels, probs, source, 0.95, pool=("a",))
  assert d_all["sources"] == ["a", "b"] and d_a["sources"] == ["a"]
  assert d_all["abnormal_threshold"] == pytest.approx(
      metrics.threshold_at_specificity(np.concatenate([pa, pb]), 0.95))
  assert d_a["abnormal_threshold"] == pytest.approx(metrics.threshold_at_specificity(pa, 0.95))
  assert d_a["abnormal_threshold"] < 0.2 < d_all["abnormal_threshold"]
  assert d_a["validation_normals"] == 40 and d_a["validation_abnormals"] == 30
  assert d_a["per_source"] == d_all["per_source"] and set(d_a["per_source"]) == {"a", "b"}
  # A pool without normals falls back to every source.
  d_none = evaluators.decision(labels, probs, source, 0.95, pool=("c",))
  assert d_none["abnormal_threshold"] == d_all["abnormal_threshold"]


def test_calibrate_refits_the_artefacts_training_wrote(classifier, tmp_path):
  """`launch.calibrate` on a trained workdir, without training: the same checkpoint gives
  the same decision.json and calibration.json as training's final step."""
  import shutil

  from fbjax.core import workdir as workdir_lib

  _, w = classifier
  copy = tmp_path / "cls"
  shutil.copytree(w, copy)
  want = {n: json.loads((w / n).read_text()) for n in (workdir_lib.DECISION,
                                                       workdir_lib.CALIBRATION)}
  for n in (*want, workdir_lib.COMPLETE):
    os.remove(copy / n)
  with pytest.raises(workdir_lib.MissingArtefact, match=r"decision.json is missing.*"
                                                        r"launch.calibrate --workdir"):
    from fbjax import predict

    predict.Predictor(str(copy))
  classify.calibrate(str(copy))
  for n, v in want.items():
    got = json.loads((copy / n).read_text())
    assert json.dumps(got, sort_keys=True) == json.dumps(v, sort_keys=True), n
  assert json.loads((copy / workdir_lib.COMPLETE).read_text())["step"] == 4


def test_training_again_with_another_config_stops_naming_both_values(classifier):
  """A finished workdir is the record of its run: another config does not overwrite it
  (and leave the old run's thresholds beside the new settings)."""
  c, w = classifier
  before = (w / "config.json").read_text()
  other = c.copy_and_resolve_references()
  other.optimizer.lr = float(c.optimizer.lr) * 2
  with pytest.raises(ValueError, match=r"optimizer.lr: recorded .*, now "):
    classify.train_and_evaluate(other, str(w))
  assert (w / "config.json").read_text() == before
  # How long to train and how it is logged may change (training continues).
  same = c.copy_and_resolve_references()
  same.log_every = 1
  classify.train_and_evaluate(same, str(w))


def test_a_workdir_written_with_the_home_folder_loads(classifier, monkeypatch):
  _, w = classifier
  monkeypatch.setenv("HOME", str(w.parent))
  assert inference.load(f"~/{w.name}", kind="classifier").workdir == str(w)


def test_load_at_a_step_reads_that_checkpoint(classifier):
  from fbjax.core import checkpoint as ckpt_lib

  _, w = classifier
  early, late = inference.load(w, step=2), inference.load(w)
  import jax

  same = jax.tree.map(np.array_equal, early.params, ckpt_lib.load_state(w, 2)["params"])
  assert all(jax.tree.leaves(same))
  assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, early.params, late.params)))
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, late.params,
                                          ckpt_lib.load_state(w, 4)["params"])))
  with pytest.raises(FileNotFoundError, match=r"no checkpoint 3 under .*holds \[2, 4\]"):
    inference.load(w, step=3)
