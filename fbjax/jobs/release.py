"""The release recipe: train every model of the shipped bundle from the public data, then pack it.

    python -m launch.release --real_data ../shared/data --work ~/runs/release \
        --out models/fbjax_head_v1

Steps, each resumable (a killed release continues where it stopped when the
same command is run again):

  data       builds the tfds data sets into `<work>/tfds` and fingerprints the raw
             folders they come from (file names, sizes, SHA-256 of the contents);
  train      every model of `configs/release.py` as a `launch.train` subprocess, at
             most `max_jobs` at once, each pinned to its own CPU core, in the order
             their dependencies allow; a finished training (`complete.json`) is
             not run again, a killed one resumes from its last checkpoint;
  anomaly    the unsupervised anomaly model (`fbjax.evaluation.anomaly`) from the trained
             autoencoder;
  pack       the bundle (`release_pack.pack_files`, in `fbjax.core.bundle`'s format):
             weights, configs, thresholds, calibration, the anomaly model;
  evaluate   the bundle as shipped on every validation split (`fbjax.evaluation.bundle_eval`),
             with the thumbnail shortcut beside each number;
  card       the manifest's metrics into the model card (`docs/README.md` of the bundle).

`<work>/release.json` records each step's state, commands and wall time; the
manifest of the bundle carries them.

The release process itself trains nothing (the trainings are subprocesses); the last
steps (pack, evaluate, card) are `fbjax.jobs.release_pack`'s.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import ml_collections

from fbjax import predict
from fbjax.core import bundle
from fbjax.core import workdir as workdir_lib
from fbjax.core.bundle import fill_paths as fill
from fbjax.data import builders, fingerprint
from fbjax.evaluation import anomaly, anomaly_fit, bundle_eval, inference
from fbjax.jobs import model_card, release_pack

REPO = release_pack.REPO
STATE = "release.json"


def log(line: str) -> None:
  print(f"[release {time.strftime('%H:%M:%S')}] {line}", flush=True)


# ---------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------


class State:
  """`<work>/release.json`: what each step did (written atomically after each change)."""

  def __init__(self, work: pathlib.Path):
    self.path = work / STATE
    self.data = json.loads(self.path.read_text()) if self.path.exists() else {}

  def get(self, key, default=None):
    return self.data.get(key, default)

  def set(self, key, value) -> None:
    self.data[key] = value
    tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(self.data, indent=1, default=str) + "\n")
    os.replace(tmp, self.path)


# ---------------------------------------------------------------------------
# Data: builds and fingerprints
# ---------------------------------------------------------------------------


def data_step(recipe, real_data: pathlib.Path, data_dir: pathlib.Path, state: State) -> dict:
  """Builds each data set of `recipe.data` (tfds, into `data_dir`) and fingerprints its
  raw folders; returns {name: {version, folders: [fingerprint]}}."""

  done = state.get("data")
  if done:
    return done
  out = {}
  for name, d in recipe.data.items():
    t0 = time.perf_counter()
    folders = [f for f in str(d.folder).split(",") if f]
    b = builders.prepare(d.builder, config=d.config or None, data_dir=str(data_dir),
                         manual_dir=str(real_data) if folders else None)
    out[name] = {"builder": d.builder, "config": d.config, "version": str(b.version),
                 "splits": {s: int(v.num_examples) for s, v in b.info.splits.items()},
                 "folders": [fingerprint.folder_fingerprint(real_data / f) for f in folders],
                 "seconds": round(time.perf_counter() - t0, 1)}
    log(f"data {name}: {out[name]['splits']} ({out[name]['seconds']} s)")
  state.set("data", out)
  return out


# ---------------------------------------------------------------------------
# Training: launch.train subprocesses, one CPU core each
# ---------------------------------------------------------------------------


def train_command(recipe, name: str, values: dict) -> list[str]:
  """The `launch.train` command line of model `name` (config path relative to the repo)."""
  m = recipe.models[name]
  path, _, arg = fill(m.config, values).partition(":")
  cmd = ["python", "-m", "launch.train", "--config", path + (f":{arg}" if arg else "")]
  cmd += [f"--config.{fill(o, values)}" for o in m.overrides]
  return cmd + ["--workdir", str(pathlib.Path(values["work"]) / name)]


def _dependencies_met(recipe, name: str, work: pathlib.Path) -> bool:
  for dep in recipe.models[name].after:
    dep_name, _, when = dep.partition(":")
    w = work / dep_name
    if when == "started":
      if not (w / "config.json").exists():
        return False
    elif not (w / "complete.json").exists():
      return False
  return True


def _pinned(core: int | None):
  """preexec_fn: pin the child to `core` and end it when the release process dies."""

  def fn():
    if core is not None and hasattr(os, "sched_setaffinity"):
      os.sched_setaffinity(0, {core})
    try:  # PR_SET_PDEATHSIG: a killed release leaves no orphan training behind
      ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
      pass

  return fn


def _tail(path: pathlib.Path, n: int = 3) -> str:
  try:
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
  except FileNotFoundError:
    return ""
  return "\n".join(lines[-n:])


def train_step(recipe, values: dict, state: State, *, poll_s: float = 5.0,
               progress_s: float = 60.0) -> dict:
  """Trains every model of the recipe (resuming), at most `recipe.max_jobs` at once.

  Returns {model: {"command", "wall_time_s", "workdir"}}; a training that fails stops
  the release with its log's last lines.
  """
  work = pathlib.Path(values["work"])
  logs = work / "logs"
  logs.mkdir(parents=True, exist_ok=True)
  record = dict(state.get("train", {}))
  pending = list(recipe.order)
  running: dict[str, tuple[subprocess.Popen, int | None, float, object]] = {}
  cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
  env = dict(os.environ, WANDB_MODE=str(values.get("wandb_mode", "disabled")))
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
  last_progress = time.monotonic()
  try:
    while pending or running:
      for name in list(pending):
        if (work / name / "complete.json").exists():
          pending.remove(name)
          record.setdefault(name, {"command": train_command(recipe, name, values),
                                   "wall_time_s": None})
          log(f"{name}: trained before ({work / name})")
          continue
        if len(running) >= recipe.max_jobs or not _dependencies_met(recipe, name, work):
          continue
        used = {c for _, c, _, _ in running.values()}
        core = next((c for c in cores if c not in used), None) if len(cores) > 1 else None
        cmd = train_command(recipe, name, values)
        f = open(logs / f"{name}.log", "a")  # noqa: SIM115 (closed when the job ends)
        f.write(f"\n# {' '.join(cmd)}\n")
        f.flush()
        p = subprocess.Popen([sys.executable, *cmd[1:]], cwd=REPO, env=env, stdout=f,
                             stderr=subprocess.STDOUT, preexec_fn=_pinned(core))
        running[name] = (p, core, time.monotonic(), f)
        pending.remove(name)
        log(f"{name}: training on core {core} (log {logs / (name + '.log')})")
      for name, (p, core, t0, f) in list(running.items()):
        rc = p.poll()
        if rc is None:
          continue
        f.close()
        del running[name]
        if rc != 0 or not (work / name / "complete.json").exists():
          raise RuntimeError(f"training {name} failed (exit {rc}); the end of "
                             f"{logs / (name + '.log')}:\n{_tail(logs / (name + '.log'), 15)}")
        prev = (record.get(name) or {}).get("wall_time_s") or 0.0
        record[name] = {"command": train_command(recipe, name, values),
                        "wall_time_s": round(prev + time.monotonic() - t0, 1),
                        "core": core}
        state.set("train", record)
        log(f"{name}: done in {record[name]['wall_time_s']:.0f} s")
      if pending and not running and not any(
          _dependencies_met(recipe, n, work) for n in pending):
        raise RuntimeError(f"cannot start {pending}: their dependencies are not trained")
      if running and time.monotonic() - last_progress > progress_s:
        last_progress = time.monotonic()
        for name in running:
          log(f"{name}: {_tail(logs / (name + '.log'), 1)[:160]}")
      if pending or running:
        time.sleep(poll_s)
  except BaseException:
    for name, (p, _, t0, _f) in running.items():
      # Keep the time spent: a resumed release adds to it.
      prev = (record.get(name) or {}).get("wall_time_s") or 0.0
      record[name] = {"command": train_command(recipe, name, values),
                      "wall_time_s": round(prev + time.monotonic() - t0, 1), "partial": True}
      p.terminate()
    for p, _, _, f in running.values():
      try:
        p.wait(timeout=30)
      except subprocess.TimeoutExpired:
        p.kill()
      f.close()
    state.set("train", record)
    raise
  state.set("train", record)
  return record


def values_of(recipe, real_data, work, data_dir) -> dict:
  return {"real_data": os.path.abspath(real_data), "work": os.path.abspath(work),
          "data_dir": os.path.abspath(data_dir), "seed": int(recipe.seed),
          "wandb_mode": recipe.wandb_mode}


def load_recipe(path_arg: str) -> ml_collections.ConfigDict:
  """A recipe config from "configs/release.py[:arg]"."""

  path, _, arg = path_arg.partition(":")
  spec = importlib.util.spec_from_file_location("fbjax_release_recipe", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg or None)


# ---------------------------------------------------------------------------
# The anomaly model, the bundle's files, its evaluation and its record
# ---------------------------------------------------------------------------


def anomaly_step(recipe, values: dict, state: State) -> pathlib.Path:
  """Fits the anomaly model (`anomaly_fit.fit_from_config`) from the trained autoencoder:
  the Gaussian on the normal training images of its sources, the threshold on the
  validation normals of `recipe.anomaly.calibration_sources`. Saved under <work>/anomaly."""

  work = pathlib.Path(values["work"])
  if state.get("anomaly") and anomaly.exists(work):
    return work / anomaly.FOLDER
  ae_dir = work / recipe.anomaly.autoencoder
  cfg = workdir_lib.read_config(ae_dir)
  blocks = {}
  for name, b in cfg.sources.items():
    if b.weight > 0:
      b = ml_collections.ConfigDict(b.to_dict())
      b.where = ""     # normal and abnormal images: the validation AUROC needs both
      blocks[name] = b
  config = ml_collections.ConfigDict(dict(
      eval_batch_size=64, anomaly=dict(ae_workdir=str(ae_dir), specificity=float(
          recipe.anomaly.specificity), score="mahalanobis", shrinkage=-1.0,
          max_fit_images=int(recipe.anomaly.max_fit_images))))
  t0 = time.perf_counter()
  am = anomaly_fit.fit_from_config(config, blocks, blocks, log=log,
                               calibrate_on=tuple(recipe.anomaly.calibration_sources))
  anomaly.save(am, work)
  state.set("anomaly", {"seconds": round(time.perf_counter() - t0, 1), "info": am.info})
  return work / anomaly.FOLDER
























def release_rest(recipe, values: dict, state: State, out: pathlib.Path) -> dict:
  """anomaly -> pack -> evaluate -> reference outputs -> card -> manifest."""

  anomaly_step(recipe, values, state)
  out = out.resolve()
  if out.exists():
    for p in sorted(out.rglob("*"), reverse=True):   # a bundle is rewritten whole
      p.unlink() if p.is_file() else p.rmdir()
  out.mkdir(parents=True, exist_ok=True)
  release_pack.pack_files(recipe, values, out)
  meta = model_card.metadata(recipe, {n: json.loads((out / "configs" / f"{n}.json").read_text())
                                      for n in bundle.NETWORKS})
  release_pack._write_json(out / bundle.METADATA, meta)
  release_pack.write_manifest(recipe, values, state, out)
  b = inference.load_bundle(out)
  size = sum(p.stat().st_size for p in out.rglob('*') if p.is_file())
  log(f"packed {out} ({size / 1e6:.2f} MB)"
      "; measuring it on the validation splits")
  t0 = time.perf_counter()
  evaluation = state.get("evaluation")
  if not evaluation or evaluation.get("bundle") != bundle.identity(out):
    metrics = bundle_eval.validation(b, real_data=values["real_data"],
                                     data_dir=values["data_dir"], work=values["work"])
    tta_off = bundle_eval.segmentation(
        b.segmenter, bundle.fill_paths(b.segmenter.config, values).sources.hc18, tta=False)
    metrics["segmentation_tta_off"] = tta_off
    evaluation = {"bundle": bundle.identity(out), "metrics": metrics,
                  "seconds": round(time.perf_counter() - t0, 1)}
    state.set("evaluation", evaluation)
  log(f"evaluated in {evaluation['seconds']} s")
  images = release_pack.reference_images(pathlib.Path(values["real_data"]),
                                         pathlib.Path(values["data_dir"]))
  configs, params, artefacts = release_pack.work_parts(recipe, values)
  f32 = inference.assemble(out, configs, params, artefacts)
  kw = dict(batch_size=8)
  ref16 = release_pack.reference_outputs(predict.Predictor(str(out), str(out), **kw),
                            pathlib.Path(values["real_data"]), images)
  p32 = predict.Predictor(f32.classifier, None, segmenter=predict.Segmenter(
      f32.segmenter.size, f32.segmenter.make_predict(), jittable=False), **kw)
  ref32 = release_pack.reference_outputs(p32, pathlib.Path(values["real_data"]), images)
  release_pack._write_json(out / "reference_outputs.json",
              {"images": ref16, "float32": ref32,
               "note": "outputs of this bundle (float16 weights) and of the same networks "
                       "with their float32 training weights, on fixed validation images"})
  calibration = {net: {t: {k: v[k] for k in ("temperature", "n", "ece", "ece_calibrated")}
                        for t, v in cal["tasks"].items()}
                 for net, cal in artefacts["calibration"].items()}
  thresholds = {"abnormal": {k: artefacts["decision"]["abnormal"].get(k) for k in (
      "abnormal_threshold", "specificity_target", "validation_normals",
      "validation_abnormals", "sources")},
      "anomaly": {k: artefacts["anomaly"]["info"].get(k) for k in (
          "n_fit", "n_calibrate", "calibrated_on")}}
  extra = dict(validation=evaluation["metrics"], calibration=calibration,
               thresholds=thresholds, float16=model_card.float16_deltas(ref16, ref32))
  manifest = release_pack.write_manifest(recipe, values, state, out, **extra)
  (out / "docs").mkdir(exist_ok=True)
  (out / "docs" / "README.md").write_text(model_card.render(manifest, meta))
  manifest = release_pack.write_manifest(recipe, values, state, out, **extra)
  inference.load_bundle(out)
  log(f"wrote {out}: {sum(r['bytes'] for r in manifest['files'].values()) / 1e6:.2f} MB")
  return manifest


def run(config: str, real_data: str, work: str, out: str | None, *, only: str = "all") -> dict:
  """The whole recipe (see the module docstring); returns the release state."""
  recipe = load_recipe(config)
  work_p = pathlib.Path(os.path.expanduser(work)).resolve()
  real_p = pathlib.Path(os.path.expanduser(real_data)).resolve()
  work_p.mkdir(parents=True, exist_ok=True)
  state = State(work_p)
  as_json = json.loads(json.dumps(recipe.to_dict()))
  # The version labels the package: a new version of the same recipe (e.g. a fix of what
  # the packed models' outputs are read into) reuses its trainings.
  unversioned = (lambda r: {k: v for k, v in (r or {}).items() if k != "version"})
  if state.get("recipe") is not None and unversioned(state.get("recipe")) != unversioned(as_json):
    raise ValueError(f"{work_p} holds a release of another recipe ({state.path}); give "
                     "another --work, or remove it to start over")
  state.set("recipe", as_json)
  data_dir = work_p / "tfds"
  values = values_of(recipe, real_p, work_p, data_dir)
  t0 = time.perf_counter()
  data_step(recipe, real_p, data_dir, state)
  if only == "data":
    return state.data
  train_step(recipe, values, state)
  log(f"trainings done ({time.perf_counter() - t0:.0f} s in this call)")
  if only == "train":
    return state.data
  return release_rest(recipe, values, state, pathlib.Path(os.path.expanduser(out)))
