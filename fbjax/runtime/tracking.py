"""Run tracking: `metrics.jsonl` + `config.json` in the workdir, and wandb.

Only process 0 writes. The wandb run id is kept in `<workdir>/wandb_run_id`,
so a resumed run continues the same wandb run. wandb's mode comes from
`WANDB_MODE` if set, else from the config (default "offline": no network).
On resume the trainer calls `truncate(step)`, which drops the lines that the
interrupted run wrote after its last checkpoint, so `metrics.jsonl` has every
step exactly once.

    writer = tracking.Writer(workdir, config)
    writer.scalars(step, {"train/loss": 0.1})
    writer.images(step, {"val/reconstructions": grid})   # (H, W) or (H, W, 3) in [0, 1]
    writer.confusion_matrix(step, "val/plane_confusion", cm, class_names)
    writer.roc_curves(step, "val/abnormal_roc", {"model": (fpr, tpr)})
    log_line = tracking.Progress(total_steps, global_batch, num_devices)
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import time

import cv2
import jax
import numpy as np
from absl import logging as absl_logging

from fbjax.core import plots
from fbjax.core import workdir as workdir_lib

METRICS = "metrics.jsonl"
CONFIG = "config.json"
RUN_ID = "wandb_run_id"


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or infinite."""


def check_finite(steps_and_losses) -> None:
  """Raises `NonFiniteLossError` naming the first step whose loss is not finite."""
  for step, loss in steps_and_losses:
    if not math.isfinite(float(loss)):
      raise NonFiniteLossError(
          f"training loss is {float(loss)} at step {int(step)}; stopping. Lower the "
          "learning rate, check the input data, or add gradient clipping.")


def jsonable(v):
  """Plain JSON values: NaN and inf -> None (strict JSON has neither), numpy and jax
  scalars -> Python, arrays -> lists, recursively through dicts, lists and tuples."""
  if isinstance(v, dict):
    return {str(k): jsonable(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [jsonable(x) for x in v]
  if isinstance(v, (np.ndarray, jax.Array)):
    return jsonable(v.item() if np.ndim(v) == 0 else np.asarray(v).tolist())
  if isinstance(v, (np.floating, np.integer, np.bool_)):
    return jsonable(v.item())
  if isinstance(v, float) and not math.isfinite(v):
    return None
  return v


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
  """The JSON lines of `metrics.jsonl` (a torn last line is skipped)."""
  path = os.path.join(os.fspath(workdir), METRICS)
  if not os.path.exists(path):
    return []
  out = []
  with open(path) as f:
    for line in f:
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return out


class Writer:
  """Writes metrics, images and histograms (process 0 only; others do nothing)."""

  def __init__(self, workdir: str | os.PathLike, config, *, enabled: bool | None = None):
    self.workdir = os.fspath(workdir)
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._wandb = None
    if not self.enabled:
      return
    os.makedirs(self.workdir, exist_ok=True)

    workdir_lib.write_config(self.workdir, config)
    wcfg = config.get("wandb", {})
    mode = os.environ.get("WANDB_MODE") or wcfg.get("mode", "offline")
    if mode != "disabled":
      self._init_wandb(config, wcfg, mode)

  def _init_wandb(self, config, wcfg, mode: str) -> None:
    import wandb  # lazy: wandb is slow to import and unused when tracking is off

    id_path = os.path.join(self.workdir, RUN_ID)
    if os.path.exists(id_path):
      with open(id_path) as f:
        run_id = f.read().strip()
    else:
      run_id = secrets.token_hex(4)
      with open(id_path, "w") as f:
        f.write(run_id + "\n")
    self._wandb = wandb.init(
        project=wcfg.get("project", "fbjax"), entity=wcfg.get("entity") or None,
        group=wcfg.get("group") or None, name=wcfg.get("name") or None,
        tags=list(wcfg.get("tags", ())), notes=wcfg.get("notes") or None,
        id=run_id, resume="allow", mode=mode, dir=self.workdir,
        config=config.to_dict())

  @property
  def run_id(self) -> str | None:
    return None if self._wandb is None else self._wandb.id

  def truncate(self, step: int) -> None:
    """Drops metric lines with step > `step` (written after the last checkpoint)."""
    if not self.enabled:
      return
    path = os.path.join(self.workdir, METRICS)
    if not os.path.exists(path):
      return
    kept = [r for r in read_metrics(self.workdir) if r.get("step", 0) <= step]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      for r in kept:
        f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)

  def scalars(self, step: int, values: dict) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), **{k: jsonable(v) for k, v in values.items()}}
    with open(os.path.join(self.workdir, METRICS), "a") as f:
      f.write(json.dumps(row) + "\n")
      f.flush()
    if self._wandb is not None:
      self._wandb.log({k: v for k, v in row.items() if k != "step"}, step=int(step))

  def images(self, step: int, images: dict) -> None:
    """Images in [0, 1], (H, W) or (H, W, 3); also written as PNG under `images/`."""
    if not self.enabled:
      return

    folder = os.path.join(self.workdir, "images")
    os.makedirs(folder, exist_ok=True)
    for name, img in images.items():
      arr = np.clip(np.asarray(img, np.float32), 0, 1)
      u8 = np.round(arr * 255).astype(np.uint8)
      fname = f"{name.replace('/', '_')}_{int(step):08d}.png"
      cv2.imwrite(os.path.join(folder, fname), u8[..., ::-1] if u8.ndim == 3 else u8)
    if self._wandb is not None:
      import wandb  # lazy: wandb is slow to import and unused when tracking is off
      self._wandb.log({k: wandb.Image(np.clip(np.asarray(v), 0, 1)) for k, v in images.items()},
                      step=int(step))

  def histograms(self, step: int, values: dict) -> None:
    if not self.enabled or self._wandb is None:
      return
    import wandb  # lazy: wandb is slow to import and unused when tracking is off
    self._wandb.log({k: wandb.Histogram(np.asarray(v).ravel()) for k, v in values.items()},
                    step=int(step))

  def confusion_matrix(self, step: int, name: str, cm, class_names) -> None:
    """A confusion matrix (rows true, columns predicted): JSON + PNG, and a wandb chart."""
    if not self.enabled:
      return

    cm = np.asarray(cm, np.int64)
    self._plot_json(step, name, {"confusion_matrix": cm.tolist(),
                                 "class_names": list(class_names)})
    self.images(step, {name: plots.confusion_image(cm, class_names) / 255.0})
    if self._wandb is not None:
      import wandb  # lazy: wandb is slow to import and unused when tracking is off
      y_true = np.repeat(np.arange(cm.shape[0]), cm.sum(axis=1))
      preds = np.concatenate([np.repeat(np.arange(cm.shape[1]), r) for r in cm])
      self._wandb.log({f"{name}_chart": wandb.plot.confusion_matrix(
          y_true=y_true.tolist(), preds=preds.tolist(), class_names=list(class_names),
          title=name)}, step=int(step))

  def roc_curves(self, step: int, name: str, curves: dict) -> None:
    """ROC curves {label: (fpr, tpr)}: JSON + PNG, and a wandb line chart."""
    if not self.enabled:
      return

    curves = {k: (np.asarray(f, float), np.asarray(t, float)) for k, (f, t) in curves.items()}
    self._plot_json(step, name, {k: {"fpr": f.tolist(), "tpr": t.tolist()}
                                 for k, (f, t) in curves.items()})
    self.images(step, {name: plots.roc_image(curves) / 255.0})
    if self._wandb is not None:
      import wandb  # lazy: wandb is slow to import and unused when tracking is off
      self._wandb.log({f"{name}_chart": wandb.plot.line_series(
          xs=[f.tolist() for f, _ in curves.values()],
          ys=[t.tolist() for _, t in curves.values()], keys=list(curves), title=name,
          xname="false positive rate")}, step=int(step))

  def _plot_json(self, step: int, name: str, payload: dict) -> None:
    folder = os.path.join(self.workdir, "plots")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{name.replace('/', '_')}_{int(step):08d}.json"), "w") as f:
      json.dump(payload, f)

  def close(self) -> None:
    if self._wandb is not None:
      self._wandb.finish()
      self._wandb = None


def _hms(seconds: float) -> str:
  seconds = max(0, int(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
  """Step time, images/s (total and per device) and ETA between two calls.

  Call `start()` once the first (compiling) step is done, then `log(step)` at
  log points after the step's results are ready; it returns the log line and
  a dict of the timing scalars.
  """

  def __init__(self, total_steps: int, global_batch: int, num_devices: int):
    self.total_steps = total_steps
    self.global_batch = global_batch
    self.num_devices = num_devices
    self._t0 = self._last_t = None
    self._last_step = 0

  def start(self, step: int) -> None:
    self._t0 = self._last_t = time.perf_counter()
    self._last_step = step

  def log(self, step: int, extra: str = "") -> tuple[str, dict]:
    now = time.perf_counter()
    if self._last_t is None:
      self.start(step)
      return f"step {step}/{self.total_steps} {extra}".rstrip(), {}
    dsteps = max(1, step - self._last_step)
    dt = now - self._last_t
    step_s = dt / dsteps
    ips = self.global_batch / step_s if step_s > 0 else float("inf")
    eta = step_s * (self.total_steps - step)
    self._last_t, self._last_step = now, step
    line = (f"step {step}/{self.total_steps} ({100 * step / self.total_steps:.1f}%) {extra} | "
            f"{step_s * 1e3:.0f} ms/step | {ips:.1f} img/s ({ips / self.num_devices:.1f}/device)"
            f" | ETA {_hms(eta)} | elapsed {_hms(now - self._t0)}")
    timing = {"perf/step_s": step_s, "perf/images_per_s": ips,
              "perf/images_per_s_per_device": ips / self.num_devices}
    return line, timing


def log(line: str) -> None:
  if jax.process_index() == 0:
    logging.info(line)


class _QuietLibraries(logging.Filter):
  """Drops INFO lines from orbax and grain (their per-save chatter buries the log line)."""

  def filter(self, record):
    return record.levelno >= logging.WARNING or not any(
        f"/{lib}/" in record.pathname for lib in ("orbax", "grain"))


def quiet_library_logs() -> None:
  """Installs the filter on absl's log handler (call after absl has parsed flags)."""

  absl_logging.get_absl_handler().addFilter(_QuietLibraries())
