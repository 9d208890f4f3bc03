r"""The main job on the built-in phantom (no download): `make demo` runs this.

  python -m launch.demo --out demo_out                 # about 7 minutes on 2 CPU cores
  python -m launch.demo --out /tmp/smoke --size smoke  # the same pipeline at toy size

Builds the phantom data set, trains the segmentation U-Net, the autoencoder and
its plane / abnormal / condition heads, evaluates them on the phantom's test
split, predicts over the 2,949-image unlabelled split and writes
`OUT/predict/report.html`, `OUT/report.png` and `OUT/metrics.json` (see
fbjax/jobs/demo.py). Rerunning with the same `--out` reuses finished trainings.
"""

import os

from absl import app, flags

from fbjax.jobs import demo
from fbjax.runtime import tracking

_OUT = flags.DEFINE_string("out", "demo_out", "Output folder.")
_SIZE = flags.DEFINE_enum("size", "demo", ["demo", "smoke"], "demo: the main job; smoke: toy size.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data_dir for the phantom "
                                "(default: $FBJAX_DATA_DIR, else the user cache).")
_WANDB = flags.DEFINE_enum("wandb_mode", None, ["online", "offline", "disabled"],
                           "wandb mode of the trainings (default: $WANDB_MODE, else disabled).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")


  tracking.quiet_library_logs()
  demo.run(_OUT.value, size=_SIZE.value, data_dir=_DATA_DIR.value,
           wandb_mode=_WANDB.value or os.environ.get("WANDB_MODE") or "disabled")


if __name__ == "__main__":
  app.run(main)
