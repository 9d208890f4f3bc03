"""The benchmarks' trainings are named configs: `configs/classify_aligned.py` and
`configs/classify_benchmark.py` build what benchmarks/classify_aligned.py and
benchmarks/classify.py built in their own code before (the reference builders below are
that code, kept verbatim but for the flags it read), and the benchmarks train exactly
those configs (`--dry_run` prints them)."""

from __future__ import annotations

import json
import os

import pytest

from configs import autoencoder as ae_config
from configs import classify as classify_config
from configs import classify_aligned as experiments
from configs import classify_benchmark as bench_config
from tests.trainer_util import run

# ---------------------------------------------------------------------------
# The reference: how the benchmarks built their configs before
# ---------------------------------------------------------------------------

RUNS = ("planes", "planes_hc18", "abnormal")
EXTRA_RUNS = ("phantom", "planes_phantom")
TT = 0


def old_run_config(run: str, *, real: str, seg: str, data_dir: str, steps: int,
                   size=(96, 128), init_from: str = "", input_kind: str = "aligned_head",
                   class_weighting: str = "", seed: int = 0,
                   phantom_share: float | None = None, train_groups: float = 1.0):
  """benchmarks/classify_aligned.py `run_config` (commit 91219de)."""
  run = run.removesuffix("+pretrained")
  variant = "pretrain" if run == "pretrain" else "finetune"
  head = input_kind == "aligned_head"
  data = "phantom" if run == "phantom" else "real"
  heads = "planes" if run.startswith("planes") else "abnormal" if run == "abnormal" else ""
  if run not in RUNS + EXTRA_RUNS + ("pretrain",):
    raise ValueError(f"unknown run {run!r}; expected one of {RUNS + EXTRA_RUNS}")
  c = classify_config.get_config(f"data={data},input={input_kind},phantom_planes=0," + (
      f"seg_workdir={seg}," if head else "") + f"variant={variant},encoder=small"
      + (f",heads={heads}" if heads else ""))
  c.init_from = init_from
  c.real_data = real
  if class_weighting:
    c.class_weighting = class_weighting
  c.seed = seed
  c.input.size = tuple(size)
  c.batch_size = 32
  c.total_steps = steps
  c.eval_every = steps
  c.log_every = 50
  c.anomaly.ae_workdir = "none"
  c.wandb.mode = os.environ.get("WANDB_MODE", "disabled")
  if not heads:
    c.sources.fpdb.update(weight=0.0, eval=False)
  for name, b in c.sources.items():
    b.data_dir = data_dir
    if b.name != "fetal_brain_synth":
      b.manual_dir = real
    if name != "phantom":
      b.train_groups = train_groups
  if run == "pretrain":
    c.sources.fpdb.update(weight=0.15, tasks=(), where="")
  elif run == "planes_hc18":
    c.sources.hc18.update(weight=0.25, tasks=("plane",), label_defaults=f"plane={TT}")
  elif run == "planes_phantom":
    classify_config.add_phantom_planes(c, classify_config.PHANTOM_PLANES
                                       if phantom_share is None else phantom_share)
  return c


# benchmarks/classify.py (commit 91219de): its presets and config builders, the flags
# --real_data and --data_dir as arguments.
CPU = dict(steps=(300, 3000, 600, 1500), size=64, batch=32,
           ae=dict(arch="resnet", channels=1, widths=(16, 32, 64), blocks=1, latent_channels=16,
                   latent_dim=128, groups=8))
DEVICE = dict(steps=(300, 1500, 300, 1000), size=128, batch=64,
              ae=dict(arch="resnet", channels=1, widths=(32, 64, 128), blocks=1,
                      latent_channels=32, latent_dim=256, groups=8))


def old_phantom_ae(s: dict, steps: int, data_dir: str):
  c = ae_config.get_config("variant=default")
  c.input.size = (s["size"], s["size"])
  c.sources.phantom.where = "abnormal=0"
  if data_dir:
    c.sources.phantom.data_dir = data_dir
  c.model = dict(s["ae"])
  c.batch_size, c.total_steps = s["batch"], steps
  c.eval_every = c.checkpoint_every = steps
  c.wandb.mode = os.environ.get("WANDB_MODE", "disabled")
  return c


def old_classify(arg: str, s: dict, steps: int, init_from: str, real: str, data_dir: str):
  c = classify_config.get_config(f"{arg},size={s['size']},init_from={init_from}")
  c.real_data = os.path.abspath(real)
  for b in c.sources.values():
    if data_dir:
      b.data_dir = data_dir
  c.model.ae = dict(s["ae"])
  c.batch_size, c.total_steps = s["batch"], steps
  c.eval_every = c.checkpoint_every = max(steps // 4, 1)
  c.wandb.mode = os.environ.get("WANDB_MODE", "disabled")
  return c


def _same(a, b):
  assert json.loads(json.dumps(a.to_dict())) == json.loads(json.dumps(b.to_dict()))


# ---------------------------------------------------------------------------
# configs/classify_aligned.py
# ---------------------------------------------------------------------------

DATA = dict(real="/data/real", seg="/runs/seg", data_dir="/tmp/tfds")
ALIGNED_CASES = [
    ("planes", {}), ("planes_hc18", {}), ("abnormal", {}), ("phantom", {}),
    ("planes_phantom", {}), ("planes_phantom", {"phantom_share": 0.4}),
    ("pretrain", {"steps": 300}), ("planes+pretrained", {"init_from": "/w/pretrain"}),
    ("abnormal", {"input_kind": "image"}), ("planes", {"size": (64, 96), "seed": 3}),
    ("abnormal", {"class_weighting": "none", "train_groups": 0.5}),
    ("planes_hc18", {"class_weighting": "inverse", "phantom_share": 0.25}),
]


def _aligned_arg(run, kw):
  """The argument of the named config equal to `old_run_config(run, **DATA, **kw)`."""
  keys = {"input_kind": "input"}
  parts = [f"run={run}", *(f"{k}={v}" for k, v in DATA.items()), f"steps={kw.get('steps', 600)}"]
  for k, v in kw.items():
    if k == "size":
      v = "x".join(map(str, v))
    if k != "steps":
      parts.append(f"{keys.get(k, k)}={v}")
  return ",".join(parts)


@pytest.mark.parametrize("run, kw", ALIGNED_CASES)
def test_the_aligned_runs_are_the_configs_the_benchmark_built(run, kw):
  want = old_run_config(run, **DATA, **{"steps": 600, **kw})
  _same(experiments.get_config(_aligned_arg(run, kw)), want)
  _same(experiments.experiment(run, **DATA, **{"steps": 600, **kw}), want)


def test_the_aligned_configs_defaults_and_errors():
  _same(experiments.get_config("run=planes"),
        old_run_config("planes", real="", seg="", data_dir="", steps=300))
  with pytest.raises(ValueError, match="unknown run"):
    experiments.get_config("run=nothing")
  with pytest.raises(KeyError, match="unknown config argument"):
    experiments.get_config("runs=planes")


# ---------------------------------------------------------------------------
# configs/classify_benchmark.py
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["cpu", "device"])
@pytest.mark.parametrize("steps, size", [(None, None), (("10", "20", "30", "40"), 48)])
def test_the_classify_stages_are_the_configs_the_benchmark_built(preset, steps, size):
  s = dict(DEVICE if preset == "device" else CPU)
  if steps:
    s["steps"] = tuple(int(v) for v in steps)
  if size:
    s["size"] = size
  assert bench_config.preset(preset, steps, size) == s
  real, data_dir, ae = "/data/real", "/tmp/tfds", "/w/ae"
  want = {"ae_phantom": old_phantom_ae(s, s["steps"][0], data_dir),
          "cls_phantom": old_classify("data=phantom", s, s["steps"][1], ae, real, data_dir),
          "ae_real": old_classify("data=real,variant=autoencoder", s, s["steps"][2], "", real,
                                  data_dir),
          "cls_real": old_classify("data=real", s, s["steps"][3], ae, real, data_dir)}
  for i, (stage, c) in enumerate(want.items()):
    init = ae if stage.startswith("cls") else ""
    _same(bench_config.get_config(
        f"stage={stage},preset={preset},steps={s['steps'][i]},size={s['size']},"
        f"init_from={init},real={real},data_dir={data_dir}"), c)
    if not (steps or size):   # the preset's steps and grid by default
      _same(bench_config.get_config(f"stage={stage},preset={preset},init_from={init},"
                                    f"real={real},data_dir={data_dir}"), c)


def test_the_classify_stages_without_data_dir_keep_the_defaults():
  _same(bench_config.get_config("stage=ae_phantom"), old_phantom_ae(CPU, 300, ""))
  c = bench_config.get_config("stage=cls_real,real=/r")
  _same(c, old_classify("data=real", CPU, 1500, "", "/r", ""))
  assert c.sources.fba.manual_dir == "/r"
  with pytest.raises(KeyError, match="unknown stage"):
    bench_config.get_config("stage=speed")


# ---------------------------------------------------------------------------
# The benchmarks train the named configs
# ---------------------------------------------------------------------------


def _dry_run(module, *args):
  proc = run(["-m", module, "--dry_run", *args], timeout=240)
  return json.loads(proc.stdout)


def test_the_benchmarks_train_the_named_configs(tmp_path, monkeypatch):
  monkeypatch.setenv("WANDB_MODE", "disabled")   # what the subprocess sees (trainer_util.run)
  got = _dry_run("benchmarks.classify_aligned", "--seg_workdir=/runs/seg",
                 "--real_data=/data/real", "--data_dir=/tmp/tfds", f"--workdir={tmp_path}",
                 "--steps=50", "--runs=planes,abnormal+pretrained,planes_phantom",
                 "--phantom_share=0.3", "--seed=2")
  common = dict(real="/data/real", seg="/runs/seg", data_dir="/tmp/tfds")
  want = {"sheet": old_run_config("abnormal", **common, steps=50),
          "pretrain": old_run_config("pretrain", **common, steps=300),
          "planes": old_run_config("planes", **common, steps=50, seed=2, phantom_share=0.3),
          "abnormal+pretrained": old_run_config(
              "abnormal+pretrained", **common, steps=50, seed=2, phantom_share=0.3,
              init_from=str(tmp_path / "pretrain")),
          "planes_phantom": old_run_config("planes_phantom", **common, steps=50, seed=2,
                                           phantom_share=0.3)}
  assert got == {k: json.loads(json.dumps(v.to_dict())) for k, v in want.items()}

  got = _dry_run("benchmarks.classify", "--device", "--real_data=/data/real",
                 "--data_dir=/tmp/tfds", f"--workdir={tmp_path}", "--steps=5,6,7,8")
  s = dict(DEVICE, steps=(5, 6, 7, 8))
  want = {"ae_phantom": old_phantom_ae(s, 5, "/tmp/tfds"),
          "cls_phantom": old_classify("data=phantom", s, 6, str(tmp_path / "ae_phantom"),
                                      "/data/real", "/tmp/tfds"),
          "ae_real": old_classify("data=real,variant=autoencoder", s, 7, "", "/data/real",
                                  "/tmp/tfds"),
          "cls_real": old_classify("data=real", s, 8, str(tmp_path / "ae_real"), "/data/real",
                                   "/tmp/tfds")}
  assert got == {k: json.loads(json.dumps(v.to_dict())) for k, v in want.items()}
