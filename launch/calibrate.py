r"""Refits a trained classifier's decision threshold, temperatures and anomaly model.

  python -m launch.calibrate --workdir ~/runs/cls
  python -m launch.calibrate --workdir ~/runs/cls --step 2000

Runs the final evaluation of the workdir's checkpoint (default: the latest) on the
validation sources its config records, then writes what training writes after its last
step: `decision.json` (the abnormal threshold at `decision_specificity` on the normal
validation images), `calibration.json` (a temperature per head), the anomaly model
(when the config names an autoencoder) and `complete.json`. No training; on the
checkpoint training ended with, the files are those training wrote.
"""

import json
import os

from absl import app, flags

from fbjax.runtime import tracking
from fbjax.trainers import classify

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained classification workdir.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_BATCH = flags.DEFINE_integer("batch_size", None, "Evaluation batch (default: the config's).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")

  tracking.quiet_library_logs()
  workdir = os.path.expanduser(_WORKDIR.value)
  try:
    row = classify.calibrate(workdir, _STEP.value, _BATCH.value)
  except (KeyError, ValueError, FileNotFoundError) as e:
    raise app.UsageError(str(e)) from e
  print(json.dumps({k: v for k, v in row.items() if isinstance(v, (int, float))}, indent=1))


if __name__ == "__main__":
  app.run(main)
