r"""Plane / abnormal / condition heads on the autoencoder's encoder.

Arguments (the part of `--config` after the colon, comma separated):
  data=phantom    the phantom (`fetal_brain_synth`): planes, 11 conditions
  data=real       fetal brain abnormalities (abnormal, 16 conditions, planes of the
                  normal images) + FETAL_PLANES_DB (planes) + HC18 (screening images
                  taken as normal: a second source of normal images, against the
                  source shortcut of the abnormalities set)
  data=mix        both, with the per-source weights of `config.sources.*.weight`
  variant=finetune  (default) the encoder is trained with the heads
  variant=frozen    the encoder is kept as initialised; only the heads learn
  variant=pretrain  no heads: an autoencoder on every image of every source (labelled or
                  not, normal or not, HC18's test images too, and the phantom): the
                  encoder that `init_from` then fine-tunes
  size=N          the network grid N x N (default 128; demo 64)
  input=aligned_head  the network sees the aligned head (`fbjax.geometry.align.aligned_head` of
                  the original image, `config.input`), not the letterboxed image
  phantom_planes=F  the phantom's planes (plane labels only, crops from its head masks)
                  as the share F of data=real's training mixture (default 0: measured
                  at 0.25 with aligned heads, two seeds, no gain on validation beyond
                  the seeds' spread; docs/classify_benchmark_aligned.md)
  seg_workdir=DIR a segmentation workdir: the head ellipse of images without a head mask
                  (`config.input.seg_workdir`; FETAL_PLANES_DB, the abnormalities set)
  init_from=DIR   an autoencoder workdir: its encoder (and model config) initialise ours,
                  and, trained on normal images only, it gives the anomaly score
  encoder=small   the CPU-sized encoder of the benchmarks (residual 16/32/64, latent 128,
                  hidden 64) instead of 32/64/128
  heads=planes    (data=real) the measured plane run: the plane head alone, on
                  FETAL_PLANES_DB and the abnormalities set's normal images (their planes),
                  small encoder, 5,000 steps (docs/classify_benchmark_aligned.md)
  heads=abnormal  (data=real) the measured abnormal run: abnormal + condition heads on the
                  abnormalities set with HC18 as further normals, FETAL_PLANES_DB validated
                  as normals so that the decision threshold rests on the normals of both
                  sets, small encoder, 3,000 steps
  demo            phantom `small` at 64 px, CI-sized model: ~3 minutes on 2 CPU cores
  runlocal        phantom `tiny`, tiny model: seconds

  python -m launch.train --config configs/classify.py:data=phantom,init_from=~/runs/ae_normal \
      --workdir ~/runs/cls_phantom
  python -m launch.train --config configs/classify.py:data=real,init_from=~/runs/ae_real \
      --config.real_data=../shared/data --workdir ~/runs/cls_real
  python -m launch.train --config configs/classify.py:data=real,variant=frozen,init_from=DIR \
      --config.real_data=../shared/data --workdir ~/runs/cls_real_frozen
  python -m launch.train --config configs/classify.py:demo,init_from=/tmp/ae_demo \
      --workdir /tmp/cls_demo
  python -m launch.train --config configs/classify.py:runlocal --workdir /tmp/cls_local
  python -m launch.sweep --config configs/classify.py:data=real --workdir ~/runs/cls_sweep

The autoencoder for `init_from` (normal images only, see `configs/autoencoder.py`):

  python -m launch.train --config configs/autoencoder.py:variant=default \
      --config.sources.phantom.where=abnormal=0 --workdir ~/runs/ae_normal
  # real normal images (three sources): this trainer with no heads and a reconstruction loss
  python -m launch.train --config configs/classify.py:data=real,variant=autoencoder \
      --config.real_data=../shared/data --workdir ~/runs/ae_real

`config.input` is what the network reads (`fbjax.core.schema`: the letterboxed image or
the aligned head, its grid and alignment), named once; every source is read as it.
`config.sources` holds one data block per source (`fbjax.data.sources`:
`block_source` reads one block, `mixture` mixes the blocks trained on): its
`weight` (share of a training epoch; 0 = not trained on), `tasks` (the labels
learnt from it; others read as unknown, `sources.TaskMask`) and `eval`
(validated on during training, and by `launch.evaluate` by default).
`variant=autoencoder` is this mechanism with no tasks: every source's normal
images (`where`, `label_defaults`) and a reconstruction loss. Condition
logits cover `config.condition_classes`.
"""

from __future__ import annotations

import os

import ml_collections

from configs import common
from fbjax.core import labels, schema

# The sixteen classes of the fetal brain abnormalities set, in fbjax's order.
REAL_CONDITIONS = tuple(c for c in labels.CONDITIONS if c not in (
    "microcephaly", "absent_csp"))
TASKS = ("plane", "abnormal", "condition")
VARIANTS = ("finetune", "frozen", "autoencoder", "pretrain")


def _source(name, *, weight, tasks=TASKS, evaluate=True, real=None, **kw):
  block = common.data(name, weight=weight, evaluate=evaluate, **kw)
  block.tasks = tuple(tasks)
  if real is not None:
    # A reference derived from `real_data` per source: `--config.real_data=DIR` moves
    # every source, `--config.sources.fba.manual_dir=X` moves that source alone.
    block.manual_dir = real + ""
  return block


# The aligned head's grid and crop (the keyword arguments of `fbjax.geometry.align.aligned_head`)
# and where the head ellipse comes from when an example has no ground-truth mask.
ALIGNED_SIZE = (96, 128)
ALIGN = dict(head_fraction=0.8, margin=0.08, seg_workdir="")
# The phantom's share of data=real's training mixture, plane labels only, in the
# sweep's arm (`phantom_planes=`; the default is none).
PHANTOM_PLANES = 0.25
# The CPU-sized encoder of the benchmarks (`encoder=small`, and every `heads=` run).
SMALL_ENCODER = dict(arch="resnet", channels=1, widths=(16, 32, 64), blocks=1,
                     latent_channels=16, latent_dim=128, groups=8)
SMALL_HIDDEN = 64
# `heads=`: the task-specific runs of benchmarks/classify_aligned.py and their measured
# step counts (docs/classify_segmenter_crops_cpu.json: planes at 5,000 steps;
# docs/classify_benchmark_aligned_cpu.json: abnormal + condition at 3,000).
HEADS = {"planes": 5000, "abnormal": 3000}
# On-device ultrasound augmentation of aligned heads (`fbjax.data.device_augment`):
# mirror, small rotations, isotropic and anisotropic scale, depth gain, shadows,
# speckle, gain and gamma. The other canonical orientation (180 degrees) is drawn by
# the trainer (`config.rot180`).
ALIGNED_AUGMENT = dict(flip_prob=0.5, max_rotate_deg=10.0, max_log_scale=0.08,
                       max_log_aspect=0.08, max_depth_log_gain=0.3, shadow_prob=0.3,
                       max_shadow_strength=0.6, max_speckle_sigma=0.25, max_log_gain=0.2,
                       max_log_gamma=0.2)


def set_input(c, kind: str, seg_workdir: str = "") -> None:
  """`config.input` and what follows from it: the grid, augmentation and test-time averaging."""
  if kind not in schema.CLASSIFIER_INPUTS:
    raise KeyError(f"unknown input {kind!r}; expected one of {schema.CLASSIFIER_INPUTS}")
  if kind == "image":
    c.input = common.model_input("image", c.input.size)
    return
  c.input = common.model_input(kind, ALIGNED_SIZE, **dict(ALIGN, seg_workdir=seg_workdir))
  if kind == "aligned_head":
    c.augment_on = "device"
    c.augment_params = dict(ALIGNED_AUGMENT)
    c.rot180 = True        # training draws either canonical orientation
    c.eval_rot180 = True   # evaluation averages both (mean of probabilities)


def add_phantom_planes(c, share: float) -> None:
  """The phantom's planes (no other label) as `share` of the training mixture."""
  if not 0.0 <= share < 1.0:
    raise ValueError(f"phantom_planes={share}: expected a share in [0, 1)")
  real = sum(s.weight for n, s in c.sources.items() if n != "phantom")
  c.sources.phantom.update(weight=real * share / (1.0 - share), tasks=("plane",), eval=False)


def set_encoder(c, kind: str) -> None:
  """`model.ae` and the head's hidden width: "small" (the benchmarks') or "default"."""
  if kind == "small":
    c.model.ae = dict(SMALL_ENCODER)
    c.model.hidden = SMALL_HIDDEN
  elif kind != "default":
    raise KeyError(f"unknown encoder {kind!r}; expected default or small")


def set_heads(c, heads: str) -> None:
  """The measured task-specific runs on real data (`heads=planes|abnormal`), in place.

  Both use the small encoder, batch 32, one validation at the end and no anomaly model
  of their own; FETAL_PLANES_DB is first reset to not trained, not validated.
  """
  if heads not in HEADS:
    raise KeyError(f"unknown heads {heads!r}; expected one of {sorted(HEADS)}")
  set_encoder(c, "small")
  c.batch_size = 32
  c.total_steps = HEADS[heads]
  c.eval_every = c.total_steps
  c.log_every = 50
  c.anomaly.ae_workdir = "none"
  c.sources.fpdb.update(weight=0.0, eval=False)
  if heads == "planes":
    c.tasks = ("plane",)
    c.sources.fpdb.update(weight=0.6, eval=True)
    c.sources.fba.update(weight=0.4, eval=True, tasks=("plane",), where="abnormal=0")
    c.sources.hc18.update(weight=0.0, eval=False)
  else:
    c.tasks = ("abnormal", "condition")
    c.sources.fba.update(weight=0.8, eval=True, tasks=("abnormal", "condition"))
    c.sources.hc18.update(weight=0.2, eval=True)
    # The decision threshold: validation normals of the abnormalities set and of
    # FETAL_PLANES_DB, where its normals come from (same look: the 640 copy was
    # exported like them), not HC18's. FETAL_PLANES_DB is validated, not trained on.
    c.sources.fpdb.update(eval=True, tasks=("abnormal",), label_defaults="abnormal=0")
    c.decision_sources = ("fba", "fpdb")


def get_config(arg=None):
  arg = common.parse_arg(arg, variant="finetune", runlocal=False, demo=False, data="phantom",
                         init_from="", size=0, input="image", seg_workdir="",
                         phantom_planes=0.0, encoder="default", heads="")
  if arg.variant not in VARIANTS:
    raise KeyError(f"unknown variant {arg.variant!r}; expected one of {VARIANTS}")
  if arg.data not in ("phantom", "real", "mix"):
    raise KeyError(f"unknown data {arg.data!r}; expected phantom, real or mix")
  c = common.base(arg)
  c.trainer = "classify"
  c.variant = arg.variant
  c.input = common.model_input("image", (128, 128))

  # Real data: `--config.real_data=DIR` (DIR holds fetal_brain_abnormalities/, ...).
  c.real_data = ml_collections.FieldReference(os.environ.get("FBJAX_REAL_DATA", ""))
  real = c.get_ref("real_data")
  c.sources = ml_collections.ConfigDict()
  use_phantom = arg.data in ("phantom", "mix")
  use_real = arg.data in ("real", "mix")
  c.sources.phantom = _source("fetal_brain_synth:small", weight=1.0 if use_phantom else 0.0,
                              evaluate=use_phantom)
  c.sources.fba = _source("fetal_brain_abnormalities", weight=0.6 if use_real else 0.0,
                          evaluate=use_real, real=real)
  c.sources.fpdb = _source("fetal_planes_db:brain_combined",
                           weight=0.15 if use_real else 0.0,
                           tasks=("plane",), evaluate=use_real, real=real)
  c.sources.hc18 = _source("hc18", weight=0.25 if use_real else 0.0,
                           tasks=("abnormal", "condition"), evaluate=use_real, real=real,
                           label_defaults="abnormal=0,condition=0")
  if arg.data == "mix":
    c.sources.phantom.weight = 0.4
  c.condition_classes = {"phantom": labels.PHANTOM_CONDITIONS, "real": REAL_CONDITIONS,
                         "mix": labels.CONDITIONS}[arg.data]
  c.tasks = TASKS

  c.batch_size = 32
  c.eval_batch_size = 64
  c.num_epochs = 30
  c.data_cache = True             # keep decoded, resized training images in memory
  c.data_workers = 0              # grain worker processes (0: threads in this process)
  c.model = dict(
      ae=dict(arch="resnet", channels=1, widths=(32, 64, 128), blocks=1, latent_channels=32,
              latent_dim=256, groups=8),
      features=("latent", "map_mean", "map_max"), hidden=128, dropout=0.2, feature_norm=True)
  c.loss = dict(plane=1.0, abnormal=1.0, condition=1.0, recon=0.0, label_smoothing=0.05)
  # Class weights per head from the training label counts: none | inverse | inverse_sqrt.
  c.class_weighting = "inverse_sqrt"
  c.init_from = arg.init_from     # autoencoder workdir ("" = random initialisation)
  c.freeze_encoder = arg.variant == "frozen"
  c.encoder_lr_mult = 1.0         # learning-rate factor of a fine-tuned encoder
  c.optimizer = dict(name="adam", lr=1e-3, b1=0.9, b2=0.999, weight_decay=1e-4,
                     grad_clip=1.0, schedule="warmup_cosine", warmup_epochs=1.0,
                     end_lr_fraction=0.01)
  # Unsupervised anomaly score from the autoencoder trained on normal images only
  # (`ae_workdir`; "" = `init_from`), calibrated on normal validation images.
  c.anomaly = dict(ae_workdir="", specificity=0.95, score="mahalanobis", shrinkage=-1.0,
                   max_fit_images=2000)
  c.decision_specificity = 0.95  # abnormal-head threshold, on normal validation images
  # ... of these sources (empty: every validated source; `evaluators.decision`). Real
  # data: the abnormalities set's normals and FETAL_PLANES_DB (where they come from,
  # counted where its abnormal label is a task), not HC18's many normals.
  c.decision_sources = ("fba", "fpdb") if use_real else ()
  c.num_images = 8
  c.rot180 = False
  c.eval_rot180 = False

  if arg.data == "phantom":
    # Plenty of labelled images, no label noise: faster, unregularised (measured on the
    # phantom at 64 px: plane accuracy 0.70 after 600 steps at 3e-3 vs 0.45 at 1e-3 with
    # dropout and label smoothing).
    c.optimizer.lr = 3e-3
    c.model.dropout = 0.0
    c.loss.label_smoothing = 0.0

  if arg.variant == "frozen":
    c.model.dropout = 0.0
    c.optimizer.lr = 3e-3
  if arg.variant == "autoencoder":
    # No heads: a reconstruction-only autoencoder over the (normal) images of every source,
    # e.g. the anomaly model for real data.
    c.tasks = ()
    c.loss.recon = 1.0
    c.class_weighting = "none"
    for s in c.sources.values():
      s.where = "abnormal=0"
      s.label_defaults = "abnormal=0,condition=0" if s.name != "fetal_brain_abnormalities" \
          else ""
      s.tasks = ()
    c.anomaly.ae_workdir = "none"
  if arg.variant == "pretrain":
    # Representation learning on every image, labelled or not, normal or not: the
    # reconstruction-only autoencoder over all real sources (HC18's unlabelled test
    # images too) and the phantom, each source its share of an epoch. Its encoder
    # initialises the heads (`init_from`).
    c.tasks = ()
    c.loss.recon = 1.0
    c.class_weighting = "none"
    c.anomaly.ae_workdir = "none"
    shares = {"phantom": 0.25, "fba": 0.35, "fpdb": 0.15, "hc18": 0.25}
    for name, s in c.sources.items():
      s.tasks = ()
      s.weight = shares[name]
      s.where = ""
    c.sources.hc18.train_split = "train+test"

  if arg.demo:
    # The main job's size: 64 px phantom, a small encoder; ~3 minutes on 2 CPU cores
    # (measured with the demo autoencoder: plane accuracy 0.55 after 25 epochs, 0.73 after 60).
    c.input.size = (64, 64)
    c.model.ae = dict(arch="resnet", channels=1, widths=(16, 32, 64), blocks=1,
                      latent_channels=16, latent_dim=128, groups=8)
    c.batch_size = 32
    c.num_epochs = 60
    c.eval_every = 0
    c.log_every = 20
    c.anomaly.max_fit_images = 600

  if arg.runlocal:
    c.input.size = (32, 32)
    c.sources.phantom = _source("fetal_brain_synth:tiny", weight=1.0, evaluate=True)
    for k in ("fba", "fpdb", "hc18"):
      c.sources[k].weight, c.sources[k].eval = 0.0, False
    c.condition_classes = labels.PHANTOM_CONDITIONS
    c.model.ae = dict(arch="resnet", channels=1, widths=(8, 16), blocks=1, latent_channels=8,
                      latent_dim=16, groups=4)
    c.model.hidden = 16
    c.batch_size = 8
    c.num_epochs = 2
  if arg.size:
    c.input.size = (int(arg.size), int(arg.size))
  if arg.input != "image":
    set_input(c, arg.input, arg.seg_workdir)
    if arg.runlocal:
      c.input.size = (24, 32)
  set_encoder(c, arg.encoder)
  if arg.heads:
    if arg.data != "real" or arg.variant != "finetune":
      raise KeyError(f"heads={arg.heads} is a run on data=real, variant=finetune")
    set_heads(c, arg.heads)
  share = float(arg.phantom_planes)
  if share and arg.data == "real" and arg.variant in ("finetune", "frozen") \
      and not arg.runlocal:
    add_phantom_planes(c, share)
  return c


# Where `sweep()` expects the pretrained encoders (variant=pretrain, one per input):
#   python -m launch.train --config configs/classify.py:data=real,variant=pretrain \
#       --workdir $FBJAX_PRETRAIN_DIR/image
#   python -m launch.train --config \
#       configs/classify.py:data=real,variant=pretrain,input=aligned_head,seg_workdir=SEG \
#       --workdir $FBJAX_PRETRAIN_DIR/aligned_head
PRETRAIN_DIR = os.environ.get("FBJAX_PRETRAIN_DIR", os.path.expanduser("~/runs/cls_pretrain"))


def ablation(seg_workdir: str = "") -> list[dict]:
  """From scratch vs pretrained x whole image vs aligned head (all real data)."""
  runs = []
  for kind in schema.CLASSIFIER_INPUTS:
    arg = f"data=real,input={kind}" + (f",seg_workdir={seg_workdir}"
                                       if kind == "aligned_head" and seg_workdir else "")
    runs.append({"arg": arg})
    runs.append({"arg": f"{arg},init_from={os.path.join(PRETRAIN_DIR, kind)}"})
  return runs


def sweep():
  """The input / pretraining ablation; frozen vs fine-tuned x class weighting x joint
  reconstruction x learning rate."""
  runs = ablation(os.environ.get("FBJAX_SEG_WORKDIR", ""))
  for variant in ("finetune", "frozen"):
    for weighting in ("none", "inverse_sqrt", "inverse"):
      runs.append({"arg": f"data=real,variant={variant}", "class_weighting": weighting})
  for recon in (0.1, 1.0):
    runs.append({"arg": "data=real", "loss.recon": recon})
  for lr in (3e-4, 3e-3):
    runs.append({"arg": "data=real", "optimizer.lr": lr})
  for phantom_weight in (0.2, 0.4):
    runs.append({"arg": "data=mix", "sources.phantom.weight": phantom_weight})
  # The phantom's planes beside the real aligned heads: none (the default) and two shares.
  for share in (0.0, PHANTOM_PLANES, 0.4):
    runs.append({"arg": f"data=real,input=aligned_head,phantom_planes={share}"})
  return runs
