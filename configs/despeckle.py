r"""Self-supervised despeckler (structured blind spots; no clean targets).

Arguments (after the colon, comma separated):
  runlocal          tiny phantom (64 px), small network: a CPU smoke run of about a minute.
  data=NAME         fetal_brain_synth[:tiny|small|full] (default: small, 128 px) or hc18
                    (real images; give --config.sources.hc18.manual_dir).

  python -m launch.train --config configs/despeckle.py --workdir ~/runs/despeckle
  python -m launch.train --config configs/despeckle.py:runlocal --workdir /tmp/despeckle
  python -m launch.train --config configs/despeckle.py:data=hc18 \
      --config.sources.hc18.manual_dir=../shared/data/hc18 --workdir ~/runs/despeckle_hc18
  python -m launch.sweep --config configs/despeckle.py --workdir ~/runs/despeckle_sweep

Use the result in front of another model: --config.enhance.chain=learned
--config.enhance.learned.workdir=~/runs/despeckle.

`blind_spot.mask_hw` (rows, cols) should cover the speckle's correlation: on
the 128 px phantom the noise correlation is 0.53 / 0.10 at 1 / 2 pixels
axially and 0.77 / 0.44 / 0.22 at 1 / 2 / 3 pixels laterally, hence (3, 7).
"""

from __future__ import annotations

from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, runlocal=False, data="fetal_brain_synth")
  c = common.base(arg)
  c.trainer = "despeckle"
  c.input = common.model_input("image", (128, 128))
  c.sources = common.sources(common.data(arg.data))
  c.augment = False
  c.crop = 64                      # training crop (px); 0 = whole images
  c.batch_size = 32
  c.num_epochs = 0
  c.total_steps = 3000
  c.eval_every = 500
  c.checkpoint_every = 500
  c.model = dict(features=(32, 64, 128))
  c.blind_spot = dict(fraction=0.01, mask_hw=(3, 7))
  c.optimizer = dict(name="adam", lr=1e-3, b1=0.9, b2=0.999, weight_decay=0.0,
                     grad_clip=1.0, schedule="warmup_cosine", warmup_epochs=1.0,
                     end_lr_fraction=0.01)
  if arg.data == "hc18":
    c.input.size = (256, 256)      # letterboxed 800x540 images keep more of their speckle
    c.blind_spot.mask_hw = (3, 7)
  if arg.runlocal:
    c.input.size = (64, 64)
    c.sources = common.sources(common.data(
        "fetal_brain_synth:tiny" if arg.data == "fetal_brain_synth" else arg.data))
    c.crop = 32
    c.batch_size = 8
    c.total_steps = 40
    c.eval_every = 20
    c.checkpoint_every = 20
    c.model.features = (8, 16)
    c.blind_spot.mask_hw = (1, 3)  # 64 px: the speckle is a pixel or two wide
  return c


def sweep():
  """Blind-spot shape x centre fraction x learning rate."""
  runs = []
  for mask_hw in ((1, 1), (3, 5), (3, 7), (5, 9)):
    for fraction in (0.005, 0.01, 0.02):
      runs.append({"blind_spot.mask_hw": mask_hw, "blind_spot.fraction": fraction})
  for lr in (3e-4, 3e-3):
    runs.append({"optimizer.lr": lr})
  return runs
