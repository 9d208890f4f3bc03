"""`python -m benchmarks.pipeline` runs end to end on the toy source (both augment_on modes)."""

import json

import pytest

from tests.trainer_util import run


@pytest.mark.slow  # two compiles of the default autoencoder in a subprocess: ~15-25 s
def test_pipeline_benchmark_on_toy_data(tmp_path):
  out = tmp_path / "share.json"
  run(["-m", "benchmarks.pipeline", "--data", "toy", "--size", "32", "--batch", "8", "--steps",
       "1", "--rounds", "1", "--pipeline_batches", "2", "--nocache", "--out", str(out)])
  r = json.loads(out.read_text())
  assert set(r["modes"]) == {"host", "device"}
  for name, m in r["modes"].items():
    assert 0 < m["pipeline_cpu_share_of_step"] < 1, (name, m)
    assert m["fed_step_s"] > 0 and m["resident_step_s"] > 0
    assert m["pipeline_share_of_step"] == (m["fed_step_s"] - m["resident_step_s"]) / m[
        "fed_step_s"]
    assert m["augment_in_step_s"] > 0
  assert r["device_over_host"]["fed_step_s"] == (r["modes"]["device"]["fed_step_s"]
                                                 / r["modes"]["host"]["fed_step_s"])
