r"""Convolutional autoencoder (MSE reconstruction of B-mode images).

Variants (the part of `--config` after the colon, comma separated):
  variant=default   grey 224x224, residual GroupNorm encoder/decoder with a 56x56x8 code,
                    Adam + warmup-cosine, augmentation on the device.
  variant=seed      the prototype: 224x224x3, conv 32/64/128 + max-pool, upsampling
                    decoder, linear output, MSE, Adam 1e-3, 30 epochs, batch 32.
  runlocal          64 px phantom (`fetal_brain_synth:tiny`), small model: finishes on
                    2 CPU cores in well under 2 minutes.
  demo              the main job's autoencoder: phantom `small` at 64 px, normal images
                    only (it also gives the anomaly score of configs/classify.py:demo).
  data=NAME         fetal_brain_synth[:tiny|small|full] (default), fetal_brain_abnormalities,
                    fetal_planes_db, hc18, toy.

  python -m launch.train --config configs/autoencoder.py --workdir ~/runs/ae
  python -m launch.train --config configs/autoencoder.py:variant=seed --workdir ~/runs/ae_seed
  python -m launch.train --config configs/autoencoder.py:runlocal --workdir /tmp/ae_local
  python -m launch.train --config configs/autoencoder.py:demo --workdir /tmp/ae_demo
  python -m launch.train --config configs/autoencoder.py:data=fetal_brain_abnormalities \
      --config.sources.fba.manual_dir=../shared/data/fetal_brain_abnormalities \
      --workdir ~/runs/ae_fba
  python -m launch.sweep --config configs/autoencoder.py --workdir ~/runs/ae_sweep
"""

from __future__ import annotations

from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, variant="default", runlocal=False, demo=False,
                         data="fetal_brain_synth")
  if arg.variant not in ("default", "seed"):
    raise KeyError(f"unknown variant {arg.variant!r}; expected 'default' or 'seed'")
  c = common.base(arg)
  c.trainer = "autoencoder"
  c.variant = arg.variant
  c.input = common.model_input("image", (224, 224))
  c.sources = common.sources(common.data(arg.data))
  c.target = "image"             # reconstruct the input ("clean": denoise, phantom only)
  c.num_epochs = 30
  c.batch_size = 32

  # The code is a 1/4-resolution map of 8 channels (half as many numbers as pixels,
  # a quarter of the seed's code); the feature vector for heads comes from one
  # more strided stage (1/8). Chosen over a 1/8-resolution code of 32 or 64
  # channels, which reconstructed worse (fetal brain abnormalities, 112 px, 3 epochs).
  c.model = dict(arch="resnet", channels=1, widths=(32, 64), blocks=1, latent_channels=8,
                 latent_dim=256, latent_widths=(128,), groups=8)
  c.optimizer = dict(name="adam", lr=2e-3, b1=0.9, b2=0.999, weight_decay=0.0,
                     grad_clip=1.0, schedule="warmup_cosine", warmup_epochs=1.0,
                     end_lr_fraction=0.01)

  if arg.variant == "seed":
    # The prototype, as it was: RGB copies of the grey image, Adam at a constant
    # Keras-default learning rate, no augmentation.
    c.model = dict(arch="seed", channels=3, widths=(32, 64, 128))
    c.optimizer = dict(name="adam", lr=1e-3, b1=0.9, b2=0.999, weight_decay=0.0,
                       grad_clip=0.0, schedule="constant", warmup_epochs=0.0,
                       end_lr_fraction=1.0)
    c.augment = False

  if arg.demo:
    # Normal images only: the encoder initialises configs/classify.py:demo and the
    # reconstruction / latent density of normal heads gives its anomaly score.
    c.input.size = (64, 64)
    c.sources = common.sources(common.data("fetal_brain_synth:small", where="abnormal=0"))
    c.model = dict(arch="resnet", channels=1, widths=(16, 32, 64), blocks=1,
                   latent_channels=16, latent_dim=128, groups=8)
    c.batch_size = 32
    c.num_epochs = 10
    c.log_every = 10

  if arg.runlocal:
    # The phantom's `tiny` config (64 px, 132 training images) builds in seconds.
    c.input.size = (64, 64)
    c.sources = common.sources(common.data(
        "fetal_brain_synth:tiny" if arg.data == "fetal_brain_synth" else arg.data))
    c.batch_size = 8
    c.num_epochs = 4
    if c.model.arch == "resnet":
      c.model.update(widths=(8, 16), latent_channels=4, latent_dim=32, latent_widths=(32,))
    else:
      c.model.widths = (8, 16, 32)
  if c.augment:
    # Flip, rotation + scale, gain and gamma inside the jitted step: on an H200 the
    # host's per-image warp made the input pipeline half of the step time.
    c.augment_on = "device"
  return c


def sweep():
  """Latent size x learning rate x variant, and the enhancement chain (config arg + overrides)."""
  runs = []
  for lr in (1e-3, 2e-3, 4e-3):
    for latent_channels in (4, 8, 16, 32):
      runs.append({"arg": "variant=default", "optimizer.lr": lr,
                   "model.latent_channels": latent_channels})
    runs.append({"arg": "variant=seed", "optimizer.lr": lr})
  # Enhancement ablation (the "none" run is the default one above: lr 2e-3, 32 latent
  # channels). The learned chain needs a trained despeckler (configs/despeckle.py):
  # --config.enhance.chain=learned --config.enhance.learned.workdir=DIR.
  for chain in ("prototype", "srad"):
    runs.append({"arg": "variant=default", "enhance.chain": chain})
  return runs
