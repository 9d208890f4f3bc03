r"""The trainings of `python -m benchmarks.classify` (one family, in the big_vision way): the
autoencoders and the heads fine-tuned from them, on the phantom and on real data, at the
CPU or the accelerator preset.

Arguments (the part of `--config` after the colon, comma separated):
  stage=ae_phantom  the autoencoder on the phantom's normal images (configs/autoencoder.py)
  stage=cls_phantom the heads on the phantom (configs/classify.py:data=phantom)
  stage=ae_real     the autoencoder on real normal images
                    (configs/classify.py:data=real,variant=autoencoder)
  stage=cls_real    the heads on real data (configs/classify.py:data=real)
  preset=cpu        (default) 64 px, the small encoder, batch 32, the CPU step counts
  preset=device     128 px, the wider encoder, batch 64, the accelerator step counts
  steps=N           training steps (default: the preset's for the stage)
  size=N            the network grid N x N (default: the preset's)
  init_from=DIR     an autoencoder workdir (the cls_* stages; `configs/classify.py`)
  real=DIR          the real data (`config.real_data`; default: configs/classify.py's)
  data_dir=DIR      tfds data_dir of every source (default: fbjax's)

  python -m launch.train --config configs/classify_benchmark.py:stage=ae_phantom \
      --workdir /tmp/bench/ae_phantom
  python -m launch.train \
      --config configs/classify_benchmark.py:stage=cls_phantom,init_from=/tmp/bench/ae_phantom \
      --workdir /tmp/bench/cls_phantom
"""

from __future__ import annotations

import os

from configs import autoencoder as ae_config
from configs import classify as cls_config
from configs import common

STAGES = ("ae_phantom", "cls_phantom", "ae_real", "cls_real")
# Per preset: the steps of each of STAGES, the grid, the global batch, the encoder.
PRESETS = {
    "cpu": dict(steps=(300, 3000, 600, 1500), size=64, batch=32,
                ae=dict(arch="resnet", channels=1, widths=(16, 32, 64), blocks=1,
                        latent_channels=16, latent_dim=128, groups=8)),
    "device": dict(steps=(300, 1500, 300, 1000), size=128, batch=64,
                   ae=dict(arch="resnet", channels=1, widths=(32, 64, 128), blocks=1,
                           latent_channels=32, latent_dim=256, groups=8)),
}
# The configs/classify.py argument of each classifier-trainer stage.
CLASSIFY_ARG = {"cls_phantom": "data=phantom", "ae_real": "data=real,variant=autoencoder",
                "cls_real": "data=real"}


def preset(name: str, steps=None, size=None) -> dict:
  """The preset `name` with the steps of every stage and the grid overridden where given."""
  if name not in PRESETS:
    raise KeyError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
  s = dict(PRESETS[name])
  if steps:
    s["steps"] = tuple(int(v) for v in steps)
  if size:
    s["size"] = int(size)
  return s


def _wandb() -> str:
  return os.environ.get("WANDB_MODE", "disabled")


def get_config(arg=None):
  arg = common.parse_arg(arg, stage="cls_phantom", preset="cpu", steps=0, size=0,
                         init_from="", real="", data_dir="")
  if arg.stage not in STAGES:
    raise KeyError(f"unknown stage {arg.stage!r}; expected one of {STAGES}")
  s = preset(arg.preset, size=arg.size)
  steps = int(arg.steps) or s["steps"][STAGES.index(arg.stage)]
  if arg.stage == "ae_phantom":
    c = ae_config.get_config("variant=default")
    c.input.size = (s["size"], s["size"])
    c.sources.phantom.where = "abnormal=0"
    if arg.data_dir:
      c.sources.phantom.data_dir = arg.data_dir
    c.model = dict(s["ae"])
    c.batch_size, c.total_steps = s["batch"], steps
    c.eval_every = c.checkpoint_every = steps
    c.wandb.mode = _wandb()
    return c
  c = cls_config.get_config(
      f"{CLASSIFY_ARG[arg.stage]},size={s['size']},init_from={arg.init_from}")
  if arg.real:
    c.real_data = arg.real
  if arg.data_dir:
    for b in c.sources.values():
      b.data_dir = arg.data_dir
  c.model.ae = dict(s["ae"])
  c.batch_size, c.total_steps = s["batch"], steps
  c.eval_every = c.checkpoint_every = max(steps // 4, 1)
  c.wandb.mode = _wandb()
  return c
