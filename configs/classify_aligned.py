"""The aligned-head classifier experiments (one family, in the big_vision way): each run a
variant of `configs/classify.py` trained by `launch.train` or by
`python -m benchmarks.classify_aligned`, which sequences them and writes their JSON.

    python -m launch.train --config \
        configs/classify_aligned.py:run=planes,real=../shared/data,seg=~/runs/seg,steps=300 \
        --workdir ~/runs/planes

Runs: "planes", "planes_hc18" (HC18's heads as TT examples), "abnormal", "phantom",
"planes_phantom" (the phantom's planes at `phantom_share`), "pretrain" (the autoencoder
on the aligned heads). Keys of the argument: run, real, seg, data_dir, steps, and the
keyword arguments of `experiment`.
"""

from __future__ import annotations

import os

from configs import classify as classify_config

RUNS = ("planes", "planes_hc18", "abnormal")
EXTRA_RUNS = ("phantom", "planes_phantom")   # not in the default `--runs`
TT = 0

# Keys of `get_config`'s argument that are not strings.
_INTS = ("steps", "seed")
_FLOATS = ("phantom_share", "train_groups")


def experiment(run: str, *, real: str, seg: str, data_dir: str, steps: int, size=(96, 128),
               init_from: str = "", input_kind: str = "aligned_head",
               class_weighting: str = "", seed: int = 0,
               phantom_share: float | None = None, train_groups: float = 1.0):

  run = run.removesuffix("+pretrained")
  variant = "pretrain" if run == "pretrain" else "finetune"
  head = input_kind == "aligned_head"
  data = "phantom" if run == "phantom" else "real"
  heads = "planes" if run.startswith("planes") else "abnormal" if run == "abnormal" else ""
  if run not in RUNS + EXTRA_RUNS + ("pretrain",):
    raise ValueError(f"unknown run {run!r}; expected one of {RUNS + EXTRA_RUNS}")
  # The plane and abnormal runs are the config's `heads=` runs (configs/classify.py).
  c = classify_config.get_config(f"data={data},input={input_kind},phantom_planes=0," + (
      f"seg_workdir={seg}," if head else "") + f"variant={variant},encoder=small"
      + (f",heads={heads}" if heads else ""))
  c.init_from = init_from
  c.real_data = real
  if class_weighting:
    c.class_weighting = class_weighting
  c.seed = seed
  # The network's grid (`config.input`; an aligned head's input already carries its
  # alignment and segmenter, `seg_workdir`).
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
    if name != "phantom":   # a learning curve over the real training patients
      b.train_groups = train_groups
  if run == "pretrain":
    c.sources.fpdb.update(weight=0.15, tasks=(), where="")
  elif run == "planes_hc18":
    c.sources.hc18.update(weight=0.25, tasks=("plane",), label_defaults=f"plane={TT}")
  elif run == "planes_phantom":   # real 0.6 + 0.4 as above, the phantom its share of all
    classify_config.add_phantom_planes(c, classify_config.PHANTOM_PLANES
                                       if phantom_share is None else phantom_share)
  return c


def get_config(arg: str = ""):
  """"run=planes,real=...,seg=...,data_dir=...,steps=300[,size=96x128,...]" -> the config."""
  kw = dict(item.split("=", 1) for item in arg.split(",") if item)
  run = kw.pop("run", "planes")
  for k in _INTS:
    if k in kw:
      kw[k] = int(kw[k])
  for k in _FLOATS:
    if k in kw:
      kw[k] = float(kw[k])
  if "size" in kw:
    kw["size"] = tuple(int(v) for v in kw["size"].split("x"))
  kw.setdefault("data_dir", "")
  kw.setdefault("steps", 300)
  return experiment(run, **{"real": "", "seg": "", **kw})
