"""Ablation sweeps: a config module's `sweep()` expanded into `launch.train` runs.

`sweep()` returns a list of dicts; each dict is one run: the optional key
"arg" is the config argument (what follows the colon in `--config`), every
other key is a dotted config field and its value:

    def sweep():
      return [{"arg": "variant=seed", "optimizer.lr": 1e-3},
              {"arg": "variant=default", "optimizer.lr": 1e-3, "model.latent_channels": 16}]

Every run is checked against its config (unknown fields are errors) before
anything starts. Runs share a wandb group (the sweep name) and get one
workdir each under the sweep's workdir. They are run one after another here,
or written as a SLURM array script (one array task per run).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
import re
import shlex
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  arg: str
  overrides: tuple[tuple[str, object], ...]

  def command(self, config_path: str, workdir: str, group: str, python: str = "python",
              extra: tuple[str, ...] = ()) -> list[str]:
    spec = f"{config_path}:{self.arg}" if self.arg else config_path
    cmd = [python, "-m", "launch.train", "--config", spec,
           "--workdir", os.path.join(workdir, self.name)]
    cmd += [f"--config.{k}={_literal(v)}" for k, v in self.overrides]
    cmd += [f"--config.wandb.group={group}", f"--config.wandb.name={self.name}", *extra]
    return cmd


def _literal(v) -> str:
  return repr(v).replace(" ", "") if isinstance(v, (tuple, list)) else str(v)


def load_config_module(path: str):
  """Imports a config file by path (its own imports resolve from the repository root, the
  working directory of `python -m launch.sweep`)."""
  spec = importlib.util.spec_from_file_location(f"_sweep_config_{abs(hash(path))}", path)
  if spec is None or not os.path.exists(path):
    raise FileNotFoundError(f"no config file {path}")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _run_name(arg: str, overrides) -> str:
  parts = [arg.replace("=", "-").replace(",", "_")] if arg else []
  parts += [f"{k.rsplit('.', 1)[-1]}-{_literal(v)}" for k, v in overrides]
  name = "_".join(parts) or "base"
  return re.sub(r"[^A-Za-z0-9._+-]", "", name.replace(",", "x"))


def expand(config_path: str) -> list[Run]:
  """The runs of `config_path`'s `sweep()`, each validated against its config."""
  module = load_config_module(config_path)
  if not hasattr(module, "sweep"):
    raise AttributeError(f"{config_path} has no sweep()")
  runs = []
  for i, entry in enumerate(module.sweep()):
    entry = dict(entry)
    arg = entry.pop("arg", "")
    overrides = tuple(entry.items())
    config = module.get_config(arg or None)
    for key, value in overrides:
      node = config
      *parents, leaf = key.split(".")
      try:
        for p in parents:
          node = node[p]
        if leaf not in node:
          raise KeyError(leaf)
        node[leaf] = value
      except (KeyError, AttributeError, TypeError) as e:
        raise KeyError(f"sweep entry {i} of {config_path}: cannot set {key}={value!r} "
                       f"({e!r})") from None
    runs.append(Run(_run_name(arg, overrides), arg, overrides))
  names = [r.name for r in runs]
  dupes = {n for n in names if names.count(n) > 1}
  if dupes:
    raise ValueError(f"sweep of {config_path} has runs with the same settings: {sorted(dupes)}")
  return runs


def run_local(runs: list[Run], config_path: str, workdir: str, group: str, *,
              keep_going: bool = False, extra: tuple[str, ...] = ()) -> list[int]:
  """Runs each training in turn; returns their exit codes."""
  codes = []
  for i, r in enumerate(runs):
    cmd = r.command(config_path, workdir, group, python=sys.executable, extra=extra)
    print(f"[{i + 1}/{len(runs)}] {shlex.join(cmd)}", flush=True)
    code = subprocess.call(cmd, cwd=REPO)
    codes.append(code)
    if code and not keep_going:
      raise SystemExit(f"run {r.name} failed with exit code {code}")
  return codes


def slurm_script(runs: list[Run], config_path: str, workdir: str, group: str, *,
                 sbatch: tuple[str, ...] = (), max_parallel: int = 0, python: str = "python",
                 extra: tuple[str, ...] = ()) -> str:
  """A SLURM array script: task i runs `runs[i]` (submit with `sbatch FILE`)."""
  limit = f"%{max_parallel}" if max_parallel else ""
  lines = ["#!/bin/bash",
           f"#SBATCH --job-name={group}",
           f"#SBATCH --array=0-{len(runs) - 1}{limit}",
           f"#SBATCH --output={os.path.join(workdir, 'slurm-%A_%a.out')}",
           *(f"#SBATCH {s}" for s in sbatch),
           "set -euo pipefail",
           f"cd {shlex.quote(str(REPO))}",
           "RUNS=("]
  lines += [f"  {shlex.quote(shlex.join(r.command(config_path, workdir, group, python, extra)))}"
            for r in runs]
  lines += [")", 'echo "${RUNS[$SLURM_ARRAY_TASK_ID]}"', 'eval "${RUNS[$SLURM_ARRAY_TASK_ID]}"',
            ""]
  return "\n".join(lines)
