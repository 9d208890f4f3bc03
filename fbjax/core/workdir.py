"""The workdir contract: the path, writer and reader of every file a trained workdir holds.

  <workdir>/
    config.json        the training config, with the model `kind` (`evaluation.inference.load`)
    checkpoints/<step> orbax checkpoints (`fbjax.core.checkpoint`)
    metrics.jsonl      one row per logged step (`fbjax.runtime.tracking`)
    complete.json      {"step": N}: the artefacts below belong to checkpoint N
    decision.json      a classifier's abnormal threshold (uncalibrated probability)
    calibration.json   a classifier's temperature per head
    anomaly/           the anomaly model (`fbjax.evaluation.anomaly.save`)
    stage1.json        a second-stage segmenter's first stage: {"workdir", "step"}

One rule for a missing file: a reader that needs it raises `MissingArtefact`, which names
the file and the command that makes it; a reader of an optional file gets None. A file
that exists but cannot be read raises ValueError naming it.

A workdir's config is its record: training again in a workdir that holds checkpoints with
a config that differs (beyond the steps to train and how the run is logged) stops with
the differing keys and both values (`check_config`), instead of overwriting the record
that the checkpoints, thresholds and calibration belong to.
"""

from __future__ import annotations

import json
import os
import pathlib

import ml_collections

from fbjax.core import schema

CONFIG = "config.json"
COMPLETE = "complete.json"
METRICS = "metrics.jsonl"
DECISION = "decision.json"
CALIBRATION = "calibration.json"
ANOMALY = "anomaly"
STAGE1 = "stage1.json"
CHECKPOINTS = "checkpoints"

# The command that writes each file (shown when it is missing).
MADE_BY = {
    CONFIG: "python -m launch.train --config CONFIG --workdir {workdir}",
    COMPLETE: "python -m launch.train --config CONFIG --workdir {workdir} (its final step)",
    DECISION: "python -m launch.calibrate --workdir {workdir}",
    CALIBRATION: "python -m launch.calibrate --workdir {workdir}",
}

# Keys a rerun may change without making the record another run's: how long to train
# (training continues from the last checkpoint; the final step's artefacts are made again)
# and how the run is logged, checkpointed and fed.
RERUN_FREE = ("total_steps", "num_epochs", "wandb", "log_every", "eval_every",
              "checkpoint_every", "keep_checkpoints", "async_checkpoint", "num_devices",
              "read_threads", "data_workers")


class MissingArtefact(FileNotFoundError):
  """A file a workdir should hold is not there (the message names it and its command)."""

  def __init__(self, workdir: str | os.PathLike, name: str, why: str = ""):
    self.path = pathlib.Path(workdir) / name
    command = MADE_BY.get(name, "").format(workdir=workdir)
    super().__init__(f"{self.path} is missing{f' ({why})' if why else ''}"
                     + (f"; it is written by: {command}" if command else ""))


def path(workdir: str | os.PathLike, name: str) -> pathlib.Path:
  return pathlib.Path(os.path.expanduser(os.fspath(workdir))) / name


def read_json(workdir: str | os.PathLike, name: str, *, required: bool = True,
              why: str = "") -> dict | None:
  """`<workdir>/<name>` parsed; missing: `MissingArtefact` (required) or None."""
  p = path(workdir, name)
  if not p.exists():
    if required:
      raise MissingArtefact(workdir, name, why)
    return None
  try:
    return json.loads(p.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{p} is not valid JSON ({e}); it is written by: "
                     f"{MADE_BY.get(name, 'fbjax').format(workdir=workdir)}") from e


def _write_text(workdir: str | os.PathLike, name: str, text: str) -> pathlib.Path:
  """Writes `<workdir>/<name>` atomically (a reader never sees half a file)."""
  p = path(workdir, name)
  p.parent.mkdir(parents=True, exist_ok=True)
  tmp = p.with_name(f".{p.name}.tmp")
  tmp.write_text(text)
  os.replace(tmp, p)
  return p


def write_json(workdir: str | os.PathLike, name: str, obj) -> pathlib.Path:
  return _write_text(workdir, name, json.dumps(obj, indent=1, default=_plain) + "\n")


def _plain(v):
  if hasattr(v, "item"):
    return v.item()
  if isinstance(v, (tuple, set)) or hasattr(v, "tolist"):
    return list(v.tolist() if hasattr(v, "tolist") else v)
  raise TypeError(f"{type(v).__name__} is not JSON")


def read_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
  """The training config a workdir records (`MissingArtefact`: not a trained workdir), in
  the current schema (`fbjax.core.schema.upgrade`: a record of an older one is read as the
  same model in today's keys; the file is left as it is)."""
  cfg = read_json(workdir, CONFIG, why=f"{workdir} is not a trained fbjax workdir")
  return ml_collections.ConfigDict(schema.upgrade(cfg))


def config_json(config) -> str:
  return config.to_json_best_effort(indent=2, sort_keys=True) + "\n"


def write_config(workdir: str | os.PathLike, config) -> None:
  _write_text(workdir, CONFIG, config_json(config))


def _flat(d, prefix="") -> dict:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict) and v:
      out.update(_flat(v, key + "."))
    else:
      out[key] = v
  return out


def _free(key: str) -> bool:
  return any(key == f or key.startswith(f + ".") for f in RERUN_FREE)


def config_differences(recorded: dict, config) -> list[tuple[str, object, object]]:
  """(key, recorded value, new value) where `config` differs from a recorded config,
  beyond `RERUN_FREE` (values compared as JSON, so a tuple equals its recorded list)."""
  new = _flat(json.loads(config_json(config)))
  old = _flat(json.loads(json.dumps(schema.upgrade(recorded))))
  missing = object()
  return [(k, old.get(k, missing), new.get(k, missing)) for k in sorted(set(old) | set(new))
          if not _free(k) and old.get(k, missing) != new.get(k, missing)
          and not (old.get(k, missing) is missing and new.get(k) in (None, "", (), []))]


def checkpoint_steps(workdir: str | os.PathLike) -> list[int]:
  """The steps of the checkpoints under `<workdir>/checkpoints`, ascending."""
  root = path(workdir, CHECKPOINTS)
  return sorted(int(d) for d in os.listdir(root) if d.isdigit()) if root.is_dir() else []


class ConfigMismatch(ValueError):
  """A workdir holds a run trained with another config (the message names both values)."""


def check_config(workdir: str | os.PathLike, config) -> None:
  """Raises ConfigMismatch (a ValueError) when `workdir` holds a trained run whose recorded
  config differs from `config` (the keys and both values); returns when there is none or
  they agree."""
  if not (checkpoint_steps(workdir) or path(workdir, COMPLETE).exists()):
    return
  recorded = read_json(workdir, CONFIG, required=False)
  if recorded is None:
    return
  diffs = config_differences(recorded, config)
  if diffs:
    shown = "; ".join(f"{k}: recorded {_show(a)}, now {_show(b)}" for k, a, b in diffs[:12])
    more = f" (and {len(diffs) - 12} more)" if len(diffs) > 12 else ""
    raise ConfigMismatch(f"{path(workdir, CONFIG)}: {workdir} holds a run trained with another "
                     f"config: {shown}{more}. Train in a new workdir, or delete {workdir} "
                     "to start again.")


def _show(v) -> str:
  return "(absent)" if v.__class__ is object else repr(v)


def completed_step(workdir: str | os.PathLike) -> int | None:
  """The step `complete.json` says the artefacts belong to (None: not complete)."""
  d = read_json(workdir, COMPLETE, required=False)
  return None if d is None else int(d["step"])
