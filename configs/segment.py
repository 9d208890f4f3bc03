r"""Head / skull / brain segmentation (U-Net) with ellipse biometry.

Arguments (the part of `--config` after the colon, comma separated):
  data=mix        train on HC18 (head masks) and the phantom (head, skull, brain)
  data=hc18       HC18 only
  data=phantom    the phantom only (transfer study: evaluate it on HC18)
  variant=default CPU-sized: 128x192 grid (HC18's aspect), U-Net width 8, depth 4
  variant=device  accelerator-sized: 256x384 grid, width 32, depth 5
  runlocal        toy data, 32x48, a tiny U-Net: seconds on a laptop CPU
  augment=randomize
                  domain randomisation for phantom-to-scanner transfer: the device
                  augmentation chain with wide geometry (rotation +-30 degrees, scale
                  0.70-1.42, anisotropy), speckle, depth gain, shadows, gain and gamma
                  (RANDOMIZE; fbjax/data/device_augment.py)
  stage=2         the second stage of coarse-to-fine segmentation (fbjax/evaluation/coarse_fine.py):
                  trained on head crops (160x160, the head's major axis over 0.75 of
                  the side) around the reference ellipse, jittered; the workdir records
                  `stage1_workdir`, the stage-1 model inference runs first

  python -m launch.train --config configs/segment.py --workdir ~/runs/seg \
      --config.sources.hc18.manual_dir=../shared/data/hc18
  python -m launch.train --config configs/segment.py:data=phantom --workdir ~/runs/seg_phantom
  python -m launch.train --config configs/segment.py:variant=device --workdir ~/runs/seg_dev \
      --config.sources.hc18.manual_dir=../shared/data/hc18
  python -m launch.train --config configs/segment.py:runlocal --workdir /tmp/seg_local
  python -m launch.train --config configs/segment.py:stage=2 --workdir ~/runs/seg2 \
      --config.sources.hc18.manual_dir=../shared/data/hc18 --config.stage1_workdir=~/runs/seg
  python -m launch.evaluate --config configs/segment.py:stage=2 --workdir ~/runs/seg2 \
      --data hc18 --config.sources.hc18.manual_dir=../shared/data/hc18 --split validation
  python -m launch.evaluate --config configs/segment.py --workdir ~/runs/seg --data hc18 \
      --config.sources.hc18.manual_dir=../shared/data/hc18 --split validation \
      --out ~/runs/seg/eval
  python -m launch.sweep --config configs/segment.py --workdir ~/runs/seg_sweep

`config.sources.hc18` is HC18 (the real data), `config.sources.phantom` the
phantom; each block's `weight` is its share of a training epoch (0: not trained
on) and `eval` says whether it is validated on (`fbjax.core.schema`). The network
reads `config.input` (stage 1: the letterboxed image; stage 2: head crops).
"""

from __future__ import annotations

import ml_collections

from configs import common
from fbjax.enhance import modules as enhance_lib

# The share of a training epoch of HC18 and of the phantom, per `data=`.
MIXES = {"mix": (0.7, 0.3), "hc18": (1.0, 0.0), "phantom": (0.0, 1.0)}
SIZES = {"default": (128, 192), "device": (256, 384)}
# Stage 2: the crop grid per variant, and the fine grid both stages are run from
# (HC18's native 540x800: crops are taken at the image's own resolution).
CROP_SIZES = {"default": (160, 160), "device": (256, 256)}
FINE_SIZE = (540, 800)
# augment=randomize: image formation randomised beyond what the phantom varies, so
# that a model trained on it meets a scanner's images as one more draw (domain
# randomisation: tobin2017domainrandomization, billot2023synthseg in CITATIONS.bib).
RANDOMIZE = dict(flip_prob=0.5, max_rotate_deg=30.0, max_log_scale=0.35, max_log_aspect=0.1,
                 max_log_gain=0.4, max_log_gamma=0.5, max_depth_log_gain=0.4,
                 shadow_prob=0.3, max_speckle_sigma=0.3,
                 # A random PSF blur (up to sigma 1.5 px) did not help on HC18
                 # validation (README, "Phantom-only transfer"): off, kept for sweeps.
                 max_blur_sigma=0.0)
AUGMENTS = ("default", "randomize")


def get_config(arg=None):
  arg = common.parse_arg(arg, variant="default", runlocal=False, data="mix", stage=1,
                         augment="default")
  if arg.variant not in SIZES:
    raise KeyError(f"unknown variant {arg.variant!r}; expected one of {sorted(SIZES)}")
  if arg.data not in MIXES:
    raise KeyError(f"unknown data {arg.data!r}; expected one of {sorted(MIXES)}")
  if arg.augment not in AUGMENTS:
    raise KeyError(f"unknown augment {arg.augment!r}; expected one of {AUGMENTS}")
  size = SIZES[arg.variant]
  c = common.base(arg)
  c.trainer = "segment"
  c.variant = arg.variant
  c.input = common.model_input("image", size)
  hc18_share, phantom_share = MIXES[arg.data]
  c.sources = ml_collections.ConfigDict()
  c.sources.hc18 = common.data("hc18", weight=hc18_share)
  c.sources.phantom = common.data("fetal_brain_synth:small", weight=phantom_share)
  c.data_cache = True           # decoded, resized examples kept in memory (small data sets)
  c.eval_method = "robust"      # head ellipse in evaluation: plain | direct | robust
  c.eval_flip = True            # evaluation/prediction: average with the mirrored image
  c.batch_size = 16
  c.eval_batch_size = 32
  # An "epoch" of the mixture covers the phantom once in its 30 % share (4,000
  # examples), so training length is given in steps.
  c.total_steps = 1200
  c.model = dict(width=8, depth=4, max_width=256, norm="group", groups=8)
  # boundary_weight > 0: the BCE weighs the pixels within boundary_width of a mask's
  # edge 1 + boundary_weight times (fbjax.models.losses.boundary_band).
  c.loss = dict(dice_weight=1.0, bce_weight=1.0, boundary_weight=0.0, boundary_width=2)
  c.optimizer = dict(name="adam", lr=3e-3, b1=0.9, b2=0.999, weight_decay=0.0,
                     grad_clip=1.0, schedule="warmup_cosine", warmup_epochs=0.5,
                     end_lr_fraction=0.01)
  c.num_images = 4
  # Enhancement in front of the U-Net: "none", "prototype", "srad", ... (fbjax.enhance).
  c.enhance = enhance_lib.default_config("none")

  if arg.variant == "device":
    c.sources.phantom = common.data("fetal_brain_synth:full", weight=phantom_share)
    c.model.width, c.model.depth = 32, 5
    c.batch_size = 32
    c.total_steps = 3000

  if arg.runlocal:
    c.input.size = (32, 48)
    c.sources.hc18 = common.data("toy", weight=hc18_share, num_examples=48,
                                 source_size=(32, 48))
    c.sources.phantom = common.data("toy", weight=phantom_share, num_examples=48,
                                    source_size=(32, 48), seed=1)
    c.data_cache = False         # toy images are drawn on the fly
    c.model = dict(width=4, depth=2, max_width=16, norm="group", groups=2)
    c.batch_size = 8
    c.eval_batch_size = 8
    c.total_steps = 12

  if arg.augment == "randomize":
    c.augment_on = "device"
    c.augment_params = dict(RANDOMIZE)

  c.stage = int(arg.stage)
  # Stage 2 requires it: the stage-1 segmenter workdir inference runs first (stage 1
  # ignores it, so a sweep can pass it to every run).
  c.stage1_workdir = ""
  if c.stage not in (1, 2):
    raise KeyError(f"unknown stage {arg.stage!r}; expected 1 or 2")
  if c.stage == 2:
    # The network reads head crops (toy images keep their letterbox shape).
    c.input = common.model_input("head_crop", (32, 32) if arg.runlocal
                                 else CROP_SIZES[arg.variant])
    c.fine_size = (48, 64) if arg.runlocal else FINE_SIZE
    # Training crops: reference ellipse, centre shifted by up to `shift` semi-major
    # axes and scaled by up to 1 +- `zoom`; each image `copies` times per epoch.
    # Inference: `refine` more stage-2 passes, each on the crop re-placed around the
    # previous pass's head ellipse (`coarse_fine.TwoStage`).
    c.crop = dict(head_fraction=0.75, shift=0.08, zoom=0.08, copies=8, refine=0)
    # The crop model's cross-entropy weighs the pixels within 2 px of a mask's edge 5x:
    # measured at two seeds each against none, HC18 validation Dice 0.977 -> 0.978 and
    # mean HC error 1.98 -> 1.87 mm (docs/segment_boundary_loss_cpu_budget.json).
    c.loss.boundary_weight = 4.0
    if arg.augment == "randomize":
      # The crop fixes the head's size (head_fraction, jittered by `zoom`): no
      # further scaling, the rest of the randomisation as in stage 1.
      c.augment_params.max_log_scale = 0.0
  return c


def sweep():
  """Data mixture x model width x loss weighting x stage-2 crops (config arg + overrides)."""
  runs = []
  for data in ("mix", "hc18", "phantom"):
    for width in (8, 16, 32):
      runs.append({"arg": f"data={data}", "model.width": width})
  for dice_weight, bce_weight in ((1.0, 0.0), (0.0, 1.0)):
    runs.append({"arg": "data=mix", "loss.dice_weight": dice_weight,
                 "loss.bce_weight": bce_weight})
  for norm in ("instance", "none"):
    runs.append({"arg": "data=mix", "model.norm": norm})
  for chain in ("prototype", "srad"):
    runs.append({"arg": "data=mix", "enhance.chain": chain})
  # Phantom-to-scanner transfer: the phantom-only model with domain randomisation,
  # without and with a PSF blur (its default-augmentation arm is data=phantom above;
  # evaluate all on HC18 validation).
  runs.append({"arg": "data=phantom,augment=randomize"})
  runs.append({"arg": "data=phantom,augment=randomize", "augment_params.max_blur_sigma": 1.5})
  # The same randomisation for the HC18 + phantom mix (measured: no gain, README).
  runs.append({"arg": "data=mix,augment=randomize"})
  # Stage 2 (python -m launch.sweep ... --config.stage1_workdir=DIR): crop scale, jitter
  # (none: crops exactly on the reference head), flip averaging at inference.
  for head_fraction in (0.6, 0.75, 0.9):
    runs.append({"arg": "data=mix,stage=2", "crop.head_fraction": head_fraction})
  runs.append({"arg": "data=mix,stage=2", "crop.shift": 0.0, "crop.zoom": 0.0})
  runs.append({"arg": "data=mix,stage=2", "crop.shift": 0.15, "crop.zoom": 0.15})
  runs.append({"arg": "data=mix,stage=2", "eval_flip": False})
  runs.append({"arg": "data=mix,stage=2,augment=randomize"})
  # Boundary-weighted cross-entropy for the crop model (the contour is what HC measures):
  # off, and twice the default weight.
  for boundary_weight in (0.0, 8.0):
    runs.append({"arg": "data=mix,stage=2", "loss.boundary_weight": boundary_weight})
  return runs
