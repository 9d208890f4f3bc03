"""Checkpoints: orbax CheckpointManager over (train state, data iterator, metadata).

A checkpoint under `<workdir>/checkpoints/<step>/` holds three items:

- `state`: the train state pytree (params, optimizer state, step, RNG), saved
  as arrays; it is restored onto the shardings of the *current* mesh, so a
  run may resume on a different number of devices;
- `data`: each process's grain iterator state (JSON, one file per process),
  so the data order continues exactly where it stopped;
- `meta`: JSON with the state's shapes and dtypes (checked before any array
  is read, so a workdir from another model gives a clear error rather than a
  shape error deep inside orbax), the process count, and whatever host-side
  values the trainer needs to continue (e.g. running epoch sums).

    mngr = checkpoint.manager(workdir, keep=3, every=1000)
    restored = checkpoint.restore(mngr, abstract_state, train_iter)
    ...
    checkpoint.save(mngr, step, state, train_iter, extra={...})
"""

from __future__ import annotations

import json
import logging
import os

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp


class IncompatibleCheckpointError(RuntimeError):
  """The workdir holds a checkpoint that does not fit the configured model."""


def manager(workdir: str | os.PathLike, *, keep: int = 3, every: int = 1000,
            async_save: bool = True) -> ocp.CheckpointManager:
  """A CheckpointManager under `<workdir>/checkpoints` keeping the last `keep`."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, save_interval_steps=every, create=True,
      enable_async_checkpointing=async_save, cleanup_tmp_directories=True)
  return ocp.CheckpointManager(
      os.path.join(os.fspath(workdir), "checkpoints"), options=options,
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "data": grain.checkpoint.CheckpointHandler(),
                     "meta": ocp.JsonCheckpointHandler()})


def fingerprint(tree) -> dict[str, list]:
  """{path: [shape, dtype]} for every leaf: what a checkpoint must match."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {jax.tree_util.keystr(path): [list(np.shape(x)), str(np.dtype(x.dtype))]
          for path, x in leaves}


def compare(saved: dict, expected: dict, *, max_lines: int = 8) -> list[str]:
  """Human-readable differences between two fingerprints (empty if equal)."""
  lines = []
  for k in sorted(set(saved) | set(expected)):
    if k not in expected:
      lines.append(f"{k}: in the checkpoint {saved[k][0]}, not in the configured model")
    elif k not in saved:
      lines.append(f"{k}: in the configured model {expected[k][0]}, not in the checkpoint")
    elif saved[k] != expected[k]:
      lines.append(f"{k}: checkpoint {tuple(saved[k][0])} {saved[k][1]} vs "
                   f"configured {tuple(expected[k][0])} {expected[k][1]}")
  if len(lines) > max_lines:
    lines = lines[:max_lines] + [f"... and {len(lines) - max_lines} more"]
  return lines


class _FrozenIterState:
  """The iterator state captured at save time (the save may finish asynchronously)."""

  def __init__(self, state: dict):
    self._state = json.dumps(state, indent=1).encode()

  def get_state(self) -> bytes:
    return self._state


def save(mngr: ocp.CheckpointManager, step: int, state, data_iter=None, *,
         extra: dict | None = None, force: bool = False) -> bool:
  """Saves if `step` is due (or `force`); returns whether a save started."""
  if not force and not mngr.should_save(step):
    return False
  meta = {"step": int(step), "fingerprint": fingerprint(state),
          "process_count": jax.process_count(), "has_data": data_iter is not None,
          "extra": extra or {}}
  items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
  if data_iter is not None:
    items["data"] = grain.checkpoint.CheckpointSave(_FrozenIterState(data_iter.get_state()))
  return mngr.save(step, args=ocp.args.Composite(**items), force=force)


def restore(mngr: ocp.CheckpointManager, abstract_state, data_iter=None,
            step: int | None = None):
  """Restores the latest (or given) checkpoint onto `abstract_state`'s shardings.

  Args:
    abstract_state: a pytree of `jax.ShapeDtypeStruct` with shardings (e.g.
      `jax.eval_shape` of the init function plus the target shardings).
    data_iter: a grain iterator whose position is set to the saved one (in
      place) when the process count is unchanged.

  Returns:
    None if there is no checkpoint, else `(state, meta)`; `meta["extra"]`
    holds the host-side values given to `save`.

  Raises:
    IncompatibleCheckpointError: the checkpoint's shapes differ from
      `abstract_state`'s.
  """
  step = mngr.latest_step() if step is None else step
  if step is None:
    return None
  where = os.path.join(os.fspath(mngr.directory), str(step))
  meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  diffs = compare(meta["fingerprint"], fingerprint(abstract_state))
  if diffs:
    raise IncompatibleCheckpointError(
        f"the checkpoint at {where} (step {step}) does not fit the configured model:\n  "
        + "\n  ".join(diffs)
        + "\nUse a new --workdir, or the config that wrote this one "
        "(config.json in the workdir).")
  items = {"state": ocp.args.StandardRestore(abstract_state)}
  same_processes = meta["process_count"] == jax.process_count()
  if data_iter is not None and meta.get("has_data"):
    if same_processes:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    else:
      logging.warning("checkpoint written by %d processes, now %d: the data iterator "
                      "starts afresh (the data order is not resumed exactly)",
                      meta["process_count"], jax.process_count())
  restored = mngr.restore(step, args=ocp.args.Composite(**items))
  return restored["state"], meta


def load_state(workdir: str | os.PathLike, step: int | None = None) -> dict:
  """The saved train state of `workdir` as numpy arrays, on any machine.

  For evaluation and for initialising other models from a trained one (e.g.
  classification heads on an autoencoder's encoder): `load_state(w)["params"]`.
  """
  mngr = ocp.CheckpointManager(
      os.path.join(os.fspath(workdir), "checkpoints"),
      options=ocp.CheckpointManagerOptions(create=False),
      item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                     "data": grain.checkpoint.CheckpointHandler(),
                     "meta": ocp.JsonCheckpointHandler()})
  try:
    step = mngr.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint under {workdir}/checkpoints")
    if step not in mngr.all_steps():
      raise FileNotFoundError(f"no checkpoint {step} under {workdir}/checkpoints (it holds "
                              f"{sorted(mngr.all_steps())})")
    meta = mngr.item_metadata(step)["state"]
    tree = getattr(meta, "tree", meta)
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(restore_args=restore_args)))["state"]
  finally:
    mngr.close()
