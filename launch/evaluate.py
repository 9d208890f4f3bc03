r"""Evaluates a trained workdir on any data set and split, without retraining.

  python -m launch.evaluate --config configs/segment.py --workdir ~/runs/seg \
      --config.data.manual_dir=../shared/data/hc18 --split validation
  python -m launch.evaluate --config configs/segment.py --workdir ~/runs/seg \
      --data phantom --split test --out ~/runs/seg/eval_phantom_test
  # Another folder in the HC18 layout (training_set/, its CSV, test_set/...):
  python -m launch.evaluate --config configs/segment.py --workdir ~/runs/seg \
      --config.data.manual_dir=/data/other_hc18 --split train+validation --out /tmp/other

The config's `trainer` names the module in fbjax.trainers whose
`evaluate_workdir(config, workdir, data=, split=, out_dir=, ...)` does the
work; `--data` names the config block to read (`data`: the real data set,
`phantom`: the phantom). Writes per-image CSV, summary JSON and overlay PNGs
under `--out` (default `<workdir>/eval/<data>_<split>`).
"""

import importlib
import json
import os

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Trained workdir (its latest checkpoint).")
_DATA = flags.DEFINE_string("data", "data", "Config block naming the data set.")
_SPLIT = flags.DEFINE_string("split", None, "Split (tfds syntax, e.g. train+validation); "
                             "default: the block's validation split.")
_OUT = flags.DEFINE_string("out", None, "Output folder.")
_METHODS = flags.DEFINE_list("methods", None, "Ellipse methods (default: all).")
_OVERLAYS = flags.DEFINE_integer("num_overlays", 16, "Overlay PNGs to write (-1: all).")
_LIMIT = flags.DEFINE_integer("limit", None, "Evaluate only the first N examples.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if _DATA.value not in config:
    raise app.UsageError(f"--data={_DATA.value!r} is not a block of the config")
  split = _SPLIT.value or config[_DATA.value].val_split
  out = _OUT.value or os.path.join(_WORKDIR.value, "eval",
                                   f"{_DATA.value}_{split.replace('+', '_')}")
  trainer = importlib.import_module(f"fbjax.trainers.{config.trainer}")
  kwargs = dict(data=_DATA.value, split=split, out_dir=out, num_overlays=_OVERLAYS.value,
                limit=_LIMIT.value, step=_STEP.value)
  if _METHODS.value:
    kwargs["methods"] = tuple(_METHODS.value)
  _, summary = trainer.evaluate_workdir(config, _WORKDIR.value, **kwargs)
  headline = {k: v["mean"] if isinstance(v, dict) and "mean" in v else v
              for k, v in summary.items() if "dice" in k or "hc_abs" in k or "fail" in k}
  print(json.dumps({"out": out, **headline}, indent=1, default=str))


if __name__ == "__main__":
  app.run(main)
