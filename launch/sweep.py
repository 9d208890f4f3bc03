r"""Runs a config's `sweep()`: one after another here, or as a SLURM array.

  python -m launch.sweep --config configs/autoencoder.py --workdir ~/runs/ae_sweep
  python -m launch.sweep --config configs/autoencoder.py --workdir /shared/runs/ae_sweep \
      --mode slurm --sbatch=--partition=gpu --sbatch=--gres=gpu:1 --sbatch=--time=04:00:00
  sbatch /shared/runs/ae_sweep/sweep.sbatch

Each run gets `<workdir>/<run name>` and the wandb group `--group` (default:
the config file's name + "_sweep"). `--mode print` lists the commands only.
Arguments after `--` are passed to every run (e.g. `-- --config.num_epochs=5`).
"""

import os
import pathlib
import shlex

from absl import app, flags

from fbjax.runtime import sweep

_CONFIG = flags.DEFINE_string("config", None, "Config file with get_config() and sweep().")
_WORKDIR = flags.DEFINE_string("workdir", None, "Parent directory of the runs' workdirs.")
_MODE = flags.DEFINE_enum("mode", "local", ["local", "slurm", "print"], "How to run.")
_GROUP = flags.DEFINE_string("group", None, "wandb group (default: <config name>_sweep).")
_SBATCH = flags.DEFINE_multi_string("sbatch", [], "Extra #SBATCH options (slurm mode).")
_MAX_PARALLEL = flags.DEFINE_integer("max_parallel", 0, "SLURM array throttle (0: none).")
_KEEP_GOING = flags.DEFINE_bool("keep_going", False, "Local mode: continue after a failure.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  extra = tuple(argv[1:])
  runs = sweep.expand(_CONFIG.value)
  group = _GROUP.value or pathlib.Path(_CONFIG.value).stem + "_sweep"
  workdir = os.path.abspath(os.path.expanduser(_WORKDIR.value))
  if _MODE.value == "print":
    for r in runs:
      print(shlex.join(r.command(_CONFIG.value, workdir, group, extra=extra)))
  elif _MODE.value == "slurm":
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "sweep.sbatch")
    with open(path, "w") as f:
      f.write(sweep.slurm_script(runs, _CONFIG.value, workdir, group, sbatch=tuple(_SBATCH.value),
                                 max_parallel=_MAX_PARALLEL.value, extra=extra))
    print(f"{len(runs)} runs written to {path}; submit with: sbatch {path}")
  else:
    sweep.run_local(runs, _CONFIG.value, workdir, group, keep_going=_KEEP_GOING.value,
                    extra=extra)


if __name__ == "__main__":
  app.run(main)
