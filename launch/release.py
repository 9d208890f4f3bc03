r"""Trains every model of the shipped bundle from the public data and packs the bundle.

  python -m launch.release --real_data ../shared/data --work ~/runs/release \
      --out models/fbjax_head_v1

One command, resumable: run it again after an interruption and it continues
(finished trainings are kept, a killed one resumes from its last checkpoint).
The recipe (models, configs, steps, seeds) is `configs/release.py`; the steps
are described in `fbjax/jobs/release.py`. `--only train` stops after the trainings.
"""

import tensorflow_datasets as tfds
from absl import app, flags

from fbjax.jobs import release
from fbjax.runtime import tracking

_CONFIG = flags.DEFINE_string("config", "configs/release.py", "The recipe (path[:arg]).")
_REAL = flags.DEFINE_string("real_data", None, "Folder holding hc18/, fetal_planes_db/, "
                            "fetal_planes_db_640/ and fetal_brain_abnormalities/.")
_WORK = flags.DEFINE_string("work", None, "Folder for the data sets, the training workdirs "
                            "and the logs.")
_OUT = flags.DEFINE_string("out", None, "The bundle folder to write (e.g. models/fbjax_head_v1).")
_ONLY = flags.DEFINE_enum("only", "all", ["all", "data", "train"],
                          "Stop after this step.")
flags.mark_flags_as_required(["real_data", "work"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")


  tracking.quiet_library_logs()
  tfds.disable_progress_bar()

  if _ONLY.value == "all" and not _OUT.value:
    raise app.UsageError("give --out (the bundle folder), or --only data|train")
  release.run(_CONFIG.value, _REAL.value, _WORK.value, _OUT.value, only=_ONLY.value)


if __name__ == "__main__":
  app.run(main)
