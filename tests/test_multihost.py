"""Two processes on localhost with jax.distributed (CPU, 2 fake devices each)."""

import json
import os
import subprocess
import sys

import numpy as np
import portpicker
import pytest

from tests.trainer_util import ROOT

SCRIPT = r"""
import json, sys
from fbjax.runtime import parallel
parallel.initialize()
import jax, numpy as np
from fbjax.trainers import autoencoder as trainer
from tests.trainer_util import tiny_config

assert jax.process_count() == 2 and jax.device_count() == 4, jax.devices()
out = sys.argv[1]
state = trainer.train_and_evaluate(tiny_config(checkpoint_every=2), out)
# Each process reads its local copy of the replicated params.
local = jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data), state["params"])
flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(local)])
json.dump(flat.tolist(), open(f"{out}/params_{jax.process_index()}.json", "w"))
# The first local batch this process trained on (its own slice of the data).
from fbjax.data import pipeline, sources
c = tiny_config()
ds = pipeline.make_dataset(sources.get_source(c.sources.toy, "train"), size=c.input.size,
                           batch_size=8,
                           seed=c.seed, train=True, num_epochs=None, keys=("image",),
                           process_index=jax.process_index(), process_count=2)
np.save(f"{out}/batch_{jax.process_index()}.npy", next(iter(ds))["image"])
"""


@pytest.mark.slow
def test_two_processes_end_with_identical_params(tmp_path):
  port = portpicker.pick_unused_port()
  procs = []
  for pid in range(2):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), WANDB_MODE="disabled",
               JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
               JAX_PROCESS_ID=str(pid))
    procs.append(subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True))
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=300))
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  for p, (_, err) in zip(procs, outs, strict=True):
    assert p.returncode == 0, err[-4000:]
  p0, p1 = (np.asarray(json.loads((tmp_path / f"params_{i}.json").read_text()))
            for i in range(2))
  np.testing.assert_array_equal(p0, p1)
  b0, b1 = (np.load(tmp_path / f"batch_{i}.npy") for i in range(2))
  assert b0.shape == b1.shape == (4, 32, 32) and not np.allclose(b0, b1)
  # Process 0 alone wrote the metrics: one line per step.
  steps = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")]
  assert steps == [1, 2, 3]
  # Each process saved its own data-iterator position.
  data = tmp_path / "checkpoints" / "3" / "data"
  assert sorted(os.listdir(data)) == ["commit_success.txt", "process_0-of-2.json",
                                      "process_1-of-2.json"]
  s0, s1 = (json.loads((data / f"process_{i}-of-2.json").read_text()) for i in range(2))
  assert s0 == s1  # same position in each process's own (disjoint) slice
