r"""Evaluates a trained workdir (any trainer) on any data set and split, without retraining.

  python -m launch.evaluate --workdir ~/runs/seg --split validation
  python -m launch.evaluate --workdir ~/runs/seg --split validation --notta  # no mirror
  python -m launch.evaluate --config configs/segment.py --workdir ~/runs/seg \
      --data phantom --split test --out ~/runs/seg/eval_phantom_test
  # Another folder in the HC18 layout (training_set/, its CSV, test_set/...):
  python -m launch.evaluate --config configs/segment.py --workdir ~/runs/seg --data hc18 \
      --config.sources.hc18.manual_dir=/data/other_hc18 --split train+validation --out /tmp/other
  # The shipped bundle (segmenter on HC18, classifiers on the abnormalities set,
  # FETAL_PLANES_DB and HC18) on data sets laid out as ../shared/data:
  python -m launch.evaluate --workdir models/fbjax_head_v1 --real_data /data/heldout \
      --split test --out /tmp/bundle_test
  # A classifier on another copy of the abnormalities set:
  python -m launch.evaluate --config configs/classify.py:data=real --workdir ~/runs/cls \
      --data fba --config.sources.fba.manual_dir=/data/copy --split test

The model (kind, config, weights) comes from the workdir (`fbjax.evaluation.inference`):
what it reads (`config.input`: kind, size, alignment; stages, label rules,
selection) is what it was trained with. `--config`, when given, only says
where the data are: the blocks of `config.sources` the workdir lacks, and
`--config.sources.<block>.{name,config,manual_dir,data_dir,max_examples}`
overrides of the blocks it has; any other override that differs from the
workdir's value stops with an error naming both. `--data` names the block of
`config.sources` (default: the blocks validated on during training; a shipped
bundle's segmenter: `hc18`). The evaluators are those of
training (`fbjax.jobs.evaluate`), so on the validation split the printed
`val/...` numbers are those logged at the same checkpoint. Writes
`evaluation.json` (and, for a segmenter, per-image CSV, `summary.json` and
overlays) under `--out` (default `<workdir>/eval/<data>_<split>`), and
prints the headline numbers.
"""

import json
import os

from absl import app, flags
from ml_collections import config_flags

from fbjax.core import bundle
from fbjax.jobs import evaluate
from fbjax.runtime import tracking

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:arg]) whose "
                                          "data blocks are read (default: the workdir's).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Trained workdir (its latest checkpoint), or "
                               "a shipped bundle (e.g. models/fbjax_head_v1).")
_REAL = flags.DEFINE_string("real_data", None, "A bundle's data: the folder holding hc18/, "
                            "fetal_planes_db/, fetal_planes_db_640/, fetal_brain_abnormalities/.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "A bundle's tfds data_dir (default: one "
                                "folder per --real_data copy under $FBJAX_DATA_DIR, else the "
                                "user cache).")
_DATA = flags.DEFINE_string("data", None, "The block of config.sources to read (default: "
                            "those validated on during training).")
_SPLIT = flags.DEFINE_string("split", None, "Split (tfds syntax, e.g. train+validation); "
                             "default: the block's validation split.")
_OUT = flags.DEFINE_string("out", None, "Output folder.")
_METHODS = flags.DEFINE_list("methods", None, "Ellipse methods (segmenter; default: all).")
_OVERLAYS = flags.DEFINE_integer("num_overlays", 16, "Overlay PNGs to write (-1: all).")
_LIMIT = flags.DEFINE_integer("limit", None, "Evaluate only the first N examples.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_BATCH = flags.DEFINE_integer("batch_size", None, "Evaluation batch (default: the config's).")
_TTA = flags.DEFINE_bool("tta", None, "Mirror averaging (test-time augmentation) on or off, "
                         "both stages of a two-stage segmenter (default: the workdir's "
                         "eval_flip).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")

  tracking.quiet_library_logs()
  name = f"{_DATA.value or 'default'}_{(_SPLIT.value or 'val_split').replace('+', '_')}"

  found = bundle.resolve(_WORKDIR.value)
  # A bundle stays as shipped (its manifest lists its files): its results go elsewhere.
  default = os.path.join("eval", f"{found.name}_{name}") if found else os.path.join(
      _WORKDIR.value, "eval", name)
  out = _OUT.value or default
  kwargs = dict(data=_DATA.value, split=_SPLIT.value, out_dir=out,
                num_overlays=_OVERLAYS.value, limit=_LIMIT.value, step=_STEP.value,
                batch_size=_BATCH.value, tta=_TTA.value, real_data=_REAL.value,
                data_dir=_DATA_DIR.value,
                # What the model reads comes from its workdir: of --config, only the
                # blocks it lacks and the --config.x overrides of where the data are.
                overrides=config_flags.get_override_values(flags.FLAGS["config"])
                if _CONFIG.value is not None else None, strict=False)
  if _METHODS.value:
    kwargs["methods"] = tuple(_METHODS.value)
  try:
    summary = evaluate.evaluate_workdir(_WORKDIR.value, _CONFIG.value, **kwargs)
  except (KeyError, ValueError, FileNotFoundError) as e:
    raise app.UsageError(str(e)) from e
  print(json.dumps(tracking.jsonable({"out": out, "kind": summary["kind"],
                                      **evaluate.headline(summary)}), indent=1))


if __name__ == "__main__":
  app.run(main)
