r"""Trains a model described by an ml-collections config.

  python -m launch.train --config configs/autoencoder.py:runlocal --workdir /tmp/ae
  python -m launch.train --config configs/autoencoder.py:variant=seed --workdir DIR \
      --config.batch_size=64 --config.optimizer.lr=3e-4

The config's `trainer` field names the module in fbjax.trainers that runs it.
Re-running with the same workdir resumes from its latest checkpoint. On
several hosts (SLURM, TPU pods; see launch/README.md) the same command runs on
every host and `jax.distributed` is initialised from the environment.
"""

import importlib
import os

from absl import app, flags, logging
from ml_collections import config_flags

from fbjax.core import workdir as workdir_lib
from fbjax.runtime import parallel, tracking

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
_DISTRIBUTED = flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                                 "Initialise jax.distributed (auto: when the environment "
                                 "describes several processes).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")

  tracking.quiet_library_logs()

  parallel.initialize(_DISTRIBUTED.value)
  config = _CONFIG.value
  trainer = importlib.import_module(f"fbjax.trainers.{config.trainer}")
  logging.info("config:\n%s", config)

  try:
    trainer.train_and_evaluate(config, os.path.expanduser(_WORKDIR.value))
  except workdir_lib.ConfigMismatch as e:   # the user's command, not a bug: no traceback
    raise app.UsageError(str(e)) from None


if __name__ == "__main__":
  app.run(main)
