"""The self-supervised despeckler: blind spots, model, trainer and its use as an enhance stage."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from fbjax.core import checkpoint
from fbjax.enhance import despeckle as D
from fbjax.enhance import modules as M
from fbjax.runtime import tracking
from tests.trainer_util import run

RNG = np.random.default_rng(0)
X = RNG.random((3, 40, 52)).astype(np.float32)


@pytest.mark.parametrize("mask_hw", [(1, 1), (3, 7), (5, 3)])
def test_blind_spot_hides_boxes_around_the_centres(mask_hw):
  x_in, centres = D.blind_spot(jax.random.key(0), X, fraction=0.02, mask_hw=mask_hw)
  x_in, centres = np.asarray(x_in), np.asarray(centres)
  assert 0.01 < centres.mean() < 0.03
  box = np.ones((1, *mask_hw), bool)
  hidden = ndimage.binary_dilation(centres, structure=box)
  # Outside the boxes the input is untouched; inside, every value is a pixel
  # of the same image (so the grey-level distribution is kept).
  np.testing.assert_array_equal(x_in[~hidden], X[~hidden])
  changed = x_in != X
  assert not (changed & ~hidden).any() and changed[hidden].mean() > 0.95
  for b in range(3):
    assert np.isin(x_in[b][hidden[b]], X[b]).all()


def test_blind_spot_rejects_even_boxes():
  with pytest.raises(ValueError, match="odd"):
    D.blind_spot(jax.random.key(0), X, mask_hw=(2, 3))


def test_masked_mse_is_a_sum_and_a_count():
  pred = np.zeros((1, 2, 2), np.float32)
  target = np.array([[[1.0, 2.0], [3.0, 4.0]]], np.float32)
  centres = np.array([[[True, False], [False, True]]])
  total, count = D.masked_mse(pred, target, centres)
  assert float(total) == 17.0 and float(count) == 2.0


def test_model_keeps_any_shape_and_the_channel_axis():
  m = D.Model((4, 8, 8))
  v = m.init(jax.random.key(0), X[:1])
  assert m.apply(v, X).shape == X.shape
  assert m.apply(v, X[..., None]).shape == X.shape + (1,)
  odd = X[:, :29, :37]
  assert m.apply(v, odd).shape == odd.shape
  with pytest.raises(ValueError, match=r"\(B, H, W\)"):
    m.apply(v, X[0])


def test_learned_stage_errors_are_clear(tmp_path):
  with pytest.raises(ValueError, match="enhance.learned.workdir"):
    M.make_enhance(M.default_config("learned"))
  cfg = M.default_config("learned")
  cfg.learned.workdir = str(tmp_path)
  with pytest.raises(FileNotFoundError, match="config.json"):
    M.make_enhance(cfg)
  with pytest.raises(ValueError, match="no despeckler parameters"):
    D.Learned().apply({}, X)


@pytest.mark.slow
def test_runlocal_learns_and_serves_as_the_learned_chain(tmp_path):
  run(["-m", "launch.train", "--config", "configs/despeckle.py:runlocal",
       "--workdir", str(tmp_path / "w")],
      env={"WANDB_MODE": "disabled", "FBJAX_DATA_DIR": str(tmp_path / "tfds")})
  w = tmp_path / "w"
  rows = [r for r in tracking.read_metrics(w) if "val/ssim" in r]
  assert len(rows) == 2
  # Trained on noisy images only, it moves towards the clean ones.
  assert rows[-1]["val/ssim"] > rows[0]["val/ssim"]
  assert rows[-1]["val/blind_spot_loss"] < rows[0]["val/blind_spot_loss"]
  config = json.loads((w / tracking.CONFIG).read_text())
  params = checkpoint.load_state(w)["params"]
  cfg = M.default_config("learned")
  cfg.learned.workdir = str(w)
  enhance = M.make_enhance(cfg)
  assert enhance.init(jax.random.key(0), X) == {}          # frozen: nothing to train
  expected = np.clip(D.Model(tuple(config["model"]["features"])).apply(
      {"params": params}, jnp.asarray(X)), 0, 1)
  np.testing.assert_allclose(jax.jit(enhance.apply)({}, X), expected, atol=1e-5)
