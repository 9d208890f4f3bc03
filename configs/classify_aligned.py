r"""The aligned-head classifier experiments (one family, in the big_vision way): each run a
variant of `configs/classify.py`, trained by `launch.train` or by
`python -m benchmarks.classify_aligned`, which sequences them and writes their JSON.

Arguments (the part of `--config` after the colon, comma separated):
  run=planes        the plane head on FETAL_PLANES_DB + the abnormalities set's normals
  run=planes_hc18   the same plus HC18's heads as trans-thalamic examples
  run=planes_phantom  the planes run plus the phantom's planes at `phantom_share`
  run=abnormal      abnormal + condition heads on the abnormalities set, HC18 as normals
  run=phantom       plane, abnormal and condition heads on the phantom's aligned heads
  run=pretrain      the autoencoder on the aligned heads of every real image and the phantom
  run=RUN+pretrained  RUN (the encoder from `init_from`, the pretrain run's workdir)
  real=DIR          the real data (fetal_brain_abnormalities/, fetal_planes_db/, hc18/)
  seg=DIR           the segmentation workdir: head ellipses of images without a head mask
  data_dir=DIR      tfds data_dir of every source
  steps=N           training steps (default 300); one validation at the end
  size=HxW          the network grid (default 96x128)
  init_from=DIR     an autoencoder workdir whose encoder initialises ours
  input=image       the whole-image arm of the ablation (default aligned_head)
  class_weighting=W none | inverse_sqrt | inverse (default: configs/classify.py's)
  seed=N            training seed (initialisation, batches, augmentation)
  phantom_share=F   planes_phantom: the phantom's share of the training mixture
                    (default, or < 0: configs/classify.py PHANTOM_PLANES)
  train_groups=F    share of the real training splits' groups kept (a learning curve)

  python -m launch.train --config \
      configs/classify_aligned.py:run=planes,real=../shared/data,seg=~/runs/seg,steps=300 \
      --workdir ~/runs/planes
"""

from __future__ import annotations

import os

from configs import classify as classify_config
from configs import common

RUNS = ("planes", "planes_hc18", "abnormal")
EXTRA_RUNS = ("phantom", "planes_phantom")   # not in the default `--runs`
TT = 0
SIZE = (96, 128)


def experiment(run: str, *, real: str, seg: str, data_dir: str, steps: int, size=SIZE,
               init_from: str = "", input_kind: str = "aligned_head",
               class_weighting: str = "", seed: int = 0,
               phantom_share: float | None = None, train_groups: float = 1.0):
  """The config of `run` (`get_config`'s keys as keyword arguments)."""
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


def get_config(arg=None):
  arg = common.parse_arg(arg, run="planes", real="", seg="", data_dir="", steps=300,
                         size="x".join(map(str, SIZE)), init_from="", input="aligned_head",
                         class_weighting="", seed=0, phantom_share=-1.0, train_groups=1.0)
  share = float(arg.phantom_share)
  return experiment(
      str(arg.run), real=str(arg.real), seg=str(arg.seg), data_dir=str(arg.data_dir),
      steps=int(arg.steps), size=tuple(int(v) for v in str(arg.size).split("x")),
      init_from=str(arg.init_from), input_kind=str(arg.input),
      class_weighting=str(arg.class_weighting), seed=int(arg.seed),
      phantom_share=None if share < 0 else share, train_groups=float(arg.train_groups))
