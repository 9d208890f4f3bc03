"""Data parallelism: 8 devices give the same SGD steps as 1 (host or on-device augmentation);
resume on another device count."""

import json

import pytest

from tests.trainer_util import run

SCRIPT = r"""
import json, sys
import jax, numpy as np
from fbjax.models import autoencoder as ae
from fbjax.trainers import autoencoder as trainer
from tests.trainer_util import tiny_config

assert jax.device_count() == 8, jax.devices()
out = sys.argv[1]

def train(workdir, **kw):
  state = trainer.train_and_evaluate(tiny_config(**kw), workdir)
  return jax.tree.map(np.asarray, jax.device_get(state["params"]))

def flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])

p1 = train(f"{out}/one", num_devices=1)
p8 = train(f"{out}/eight", num_devices=8)
c = tiny_config()
x = np.zeros((1, *c.input.size, c.model.channels), np.float32)
p0 = ae.Model(**c.model).init(jax.random.key(c.seed), x)["params"]
# Resume onto a different device count: 2 steps on 8 devices, then step 3 on 2 devices.
train(f"{out}/resume", num_devices=8, total_steps=2)
pr = train(f"{out}/resume", num_devices=2, total_steps=3)
# The same with the augmentation inside the jitted step (per-example RNG by global index).
dev = {"augment_on": "device"}
d1 = train(f"{out}/dev_one", num_devices=1, **dev)
d8 = train(f"{out}/dev_eight", num_devices=8, **dev)
train(f"{out}/dev_resume", num_devices=8, total_steps=2, **dev)
dr = train(f"{out}/dev_resume", num_devices=2, total_steps=3, **dev)
json.dump({"p1": flat(p1).tolist(), "p8": flat(p8).tolist(), "p0": flat(p0).tolist(),
           "pr": flat(pr).tolist(), "d1": flat(d1).tolist(), "d8": flat(d8).tolist(),
           "dr": flat(dr).tolist()}, open(f"{out}/params.json", "w"))
"""


@pytest.mark.slow
def test_eight_devices_equal_one_device_and_resume_on_other_count(tmp_path):
  import numpy as np

  run(["-c", SCRIPT, str(tmp_path)], devices=8)
  p = {k: np.asarray(v) for k, v in json.loads((tmp_path / "params.json").read_text()).items()}
  # The test can fail: 3 SGD steps moved the params far more than the tolerance, so a
  # gradient scaled by the device count (8x the step) would be caught.
  assert np.abs(p["p1"] - p["p0"]).max() > 1e-2
  np.testing.assert_allclose(p["p8"], p["p1"], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(p["pr"], p["p1"], rtol=1e-5, atol=1e-5)
  # On-device augmentation: it acts (the params differ from the host-augmented run's),
  # and it is the same on 8 devices, on 1, and across a resume onto 2.
  assert np.abs(p["d1"] - p["p1"]).max() > 1e-4
  np.testing.assert_allclose(p["d8"], p["d1"], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(p["dr"], p["d1"], rtol=1e-5, atol=1e-5)
