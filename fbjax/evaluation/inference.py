"""Trained workdirs -> prediction functions, from what each workdir records.

    model = inference.load(workdir)       # any trained fbjax workdir
    out = model.predict(images)           # (B, H, W) in [0, 1] on model.size

A workdir's `config.json` records its `kind` (written at training time by
`fbjax.runtime.train_lib`; older workdirs: derived from the recorded trainer name):

  "autoencoder"  -> {"features": (B, F), "recon": (B,) error, "recon_image": (B, H, W)}
  "segmenter"    -> (B, H, W, 3) head / skull / brain probabilities
                    (with `eval_flip`: averaged with the mirrored image);
                    a second-stage workdir (`stage` 2; its config
                    records `stage1_workdir`) runs both stages
                    (`fbjax.evaluation.coarse_fine.TwoStage`): `size` is then the fine
                    grid (`config.fine_size`), the prediction function a
                    host-side composition of two jitted networks
  "classifier"   -> {task: (B, C) probabilities, "features": (B, F)}
  "despeckler"   -> (B, H, W) despeckled image

The networks are built from the recorded config (`fbjax.evaluation.networks`, whose
functions the trainers build theirs with), so prediction needs no trainer. A shipped
bundle (`fbjax.core.bundle`: its files) loads into the same objects (`load_bundle`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fbjax.core import bundle as bundle_lib
from fbjax.core import checkpoint as ckpt_lib
from fbjax.core import schema
from fbjax.core import workdir as workdir_lib
from fbjax.core.schema import kind_of
from fbjax.enhance import despeckle
from fbjax.enhance import modules as enhance_lib
from fbjax.evaluation import anomaly, coarse_fine, networks
from fbjax.evaluation import anomaly as anomaly_lib
from fbjax.models import autoencoder as ae_lib

# ---------------------------------------------------------------------------
# Loaded workdirs
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Loaded:
  """A trained workdir: its kind, config, parameters and input grid size."""

  kind: str
  config: ml_collections.ConfigDict
  params: dict
  workdir: str = ""
  # A second stage's first stage when it is not a workdir of its own (a shipped bundle).
  stage1_model: Loaded | None = None

  @property
  def two_stage(self) -> bool:
    """A second-stage segmenter: it runs behind the stage-1 workdir its config records."""
    return self.kind == "segmenter" and int(self.config.get("stage", 1)) == 2

  @property
  def size(self) -> tuple[int, int]:
    """The grid the prediction function takes (a two-stage segmenter: the fine grid)."""
    if self.two_stage:
      return tuple(self.config.fine_size)
    return schema.size_of(self.config)

  def stage1(self) -> Loaded:
    """The stage-1 segmenter a second-stage workdir was trained behind."""
    if self.stage1_model is not None:
      return self.stage1_model
    path = os.path.expanduser(self.config.stage1_workdir)
    if not os.path.isabs(path) and self.workdir:
      path = os.path.join(self.workdir, path)
    # The stage-1 checkpoint stage 2 was paired with (`stage1.json`, written when both had
    # finished), else stage 1's final, evaluated one (`complete.json`), else its latest.
    paired = workdir_lib.read_json(self.workdir, workdir_lib.STAGE1, required=False) \
        if self.workdir else None
    if paired:
      step = int(paired["step"])
    else:
      step = workdir_lib.completed_step(path) if os.path.isdir(path) else None
    try:
      first = load(path, step, kind="segmenter")
    except FileNotFoundError as e:
      at = f" at step {step} ({workdir_lib.STAGE1 if paired else workdir_lib.COMPLETE})" \
          if step is not None else ""
      raise FileNotFoundError(f"{self.workdir}: its stage-1 segmenter {path}{at} cannot be "
                              f"loaded ({e})") from e
    if first.two_stage:
      raise ValueError(f"{self.workdir}: stage-1 workdir {path} is itself a second stage")
    return first

  def two_stage_predict(self, *, jit: bool = True, flip: bool | None = None) -> Callable:
    """(B, H, W) fine-grid images -> (B, H, W, 3) probabilities of both stages.

    `flip` sets the mirror averaging of both stages (None: each workdir's
    `eval_flip`)."""

    first = self.stage1()
    c = self.config
    return coarse_fine.TwoStage(
        first.make_predict(jit=jit, flip=flip), self._own_predict(jit=jit, flip=flip),
        first.size,
        schema.size_of(c), head_fraction=float(c.crop.head_fraction),
        method=first.config.get("eval_method", "robust"),
        refine=int(c.crop.get("refine", 0)))

  def predict_fn(self) -> Callable:
    """(params, images) -> outputs (see the module docstring), not jitted.

    A two-stage segmenter's is its second stage alone (on crops): use
    `make_predict` for both stages.
    """
    c = self.config
    if self.kind == "segmenter":
      return networks.segmenter_probs_fn(c)
    if self.kind == "classifier":
      return networks.classifier_probs_fn(c)
    if self.kind == "despeckler":

      model = despeckle.Model(**c.model)
      return lambda params, images: jnp.clip(model.apply({"params": params}, images), 0, 1)

    # The parameters loaded here (this checkpoint), not a second read of the latest one.
    score = anomaly.make_score_fn(anomaly.autoencoder_of(c, self.params, self.workdir),
                                  jit=False)
    return lambda params, images: score(images)

  def make_predict(self, *, jit: bool = True, flip: bool | None = None) -> Callable:
    """images on `size` -> outputs with the loaded parameters (both stages of a
    two-stage segmenter). `flip`: a segmenter's mirror averaging (test-time
    augmentation) instead of the config's `eval_flip`."""
    if self.two_stage:
      return self.two_stage_predict(jit=jit, flip=flip)
    return self._own_predict(jit=jit, flip=flip)

  def _own_predict(self, *, jit: bool = True, flip: bool | None = None) -> Callable:
    if flip is not None and self.kind == "segmenter":
      fn = networks.segmenter_probs_fn(networks._with(self.config, eval_flip=bool(flip)))
    else:
      fn = self.predict_fn()
    params = jax.tree.map(jnp.asarray, self.params)
    out = lambda images: fn(params, images)  # noqa: E731
    return jax.jit(out) if jit else out


@dataclasses.dataclass
class Classifier(Loaded):
  """A classification workdir: the heads' tasks and class names on top of `Loaded`, and what
  its training fitted for prediction: `calibration` (calibration.json: a temperature per
  head), `decision` (decision.json: the abnormal threshold), `anomaly` (the unsupervised
  anomaly model of `<workdir>/anomaly/`); None where the workdir has none."""

  calibration: dict | None = None
  decision: dict | None = None
  anomaly: object = None

  @property
  def tasks(self) -> tuple[str, ...]:
    return tuple(self.config.tasks)

  def class_names(self, task: str) -> tuple[str, ...]:
    return networks.class_names(self.config, task)

  def logit_fn(self, task: str, cls: int):
    """(params, images (B, H, W)) -> (B,) logit of class `cls` of `task` (saliency maps)."""

    model = networks.classifier_model(self.config)
    enhance = enhance_lib.make_enhance_fn(self.config.enhance, self.size)

    def fn(params, images):
      logits, _ = model.apply({"params": params}, ae_lib.to_channels(enhance(images),
                                                                     model.channels))
      lg = logits[task].astype(jnp.float32)
      others = jnp.where(jnp.arange(lg.shape[1]) == cls, -jnp.inf, lg)
      return lg[:, cls] - jax.nn.logsumexp(others, axis=1)

    return fn


class ClassifierSet:
  """Classifiers that read the same input, used as one classifier: each task comes from
  the member that has it (the shipped bundle's plane model and abnormal model).

  It answers what prediction and evaluation ask of a `Classifier`: `tasks`, `size`,
  `config` (the members' shared `input`, all tasks),
  `class_names`, `params` ({member: params}), `predict_fn` / `make_predict` (the
  members' outputs merged), `logit_fn`, `calibration`, `decision`, `anomaly`.
  """

  kind = "classifier"

  def __init__(self, members: dict, *, workdir: str = "", anomaly=None):
    self.members = dict(members)
    self.workdir, self.anomaly = workdir, anomaly
    first = next(iter(self.members.values()))
    self._owner = {}
    for name, m in self.members.items():
      for t in m.tasks:
        if t in self._owner:
          raise ValueError(f"{workdir}: task {t!r} in both {self._owner[t]} and {name}")
        self._owner[t] = name
      if _reads(m.config) != _reads(first.config):
        raise ValueError(f"{workdir}: {name} reads {_reads(m.config)}, another member "
                         f"{_reads(first.config)}")
    abnormal = self.members[self._owner["abnormal"]] if "abnormal" in self._owner else first
    self.config = abnormal.config.copy_and_resolve_references()
    with self.config.unlocked():
      self.config.tasks = self.tasks

  @property
  def tasks(self) -> tuple[str, ...]:
    return tuple(t for t in networks.TASKS if t in self._owner)

  @property
  def size(self) -> tuple[int, int]:
    return next(iter(self.members.values())).size

  @property
  def params(self) -> dict:
    return {n: m.params for n, m in self.members.items()}

  def member(self, task: str) -> Classifier:
    return self.members[self._owner[task]]

  def class_names(self, task: str) -> tuple[str, ...]:
    return self.member(task).class_names(task)

  @property
  def calibration(self) -> dict | None:
    tasks = {}
    for m in self.members.values():
      tasks.update({t: v for t, v in ((m.calibration or {}).get("tasks") or {}).items()
                    if t in m.tasks})
    return {"tasks": tasks} if tasks else None

  @property
  def decision(self) -> dict | None:
    return self.member("abnormal").decision if "abnormal" in self._owner else None

  def predict_fn(self) -> Callable:
    fns = {n: m.predict_fn() for n, m in self.members.items()}

    def fn(params, images):
      out = {}
      for n, f in fns.items():
        o = f(params[n], images)
        out.update({t: o[t] for t in self.members[n].tasks})
        out.setdefault("features", o["features"])
      return out

    return fn

  def make_predict(self, *, jit: bool = True, flip=None) -> Callable:
    del flip
    fn, params = self.predict_fn(), jax.tree.map(jnp.asarray, self.params)
    out = lambda images: fn(params, images)  # noqa: E731
    return jax.jit(out) if jit else out

  def logit_fn(self, task: str, cls: int):
    name = self._owner[task]
    fn = self.members[name].logit_fn(task, cls)
    return lambda params, images: fn(params[name], images)


# ---------------------------------------------------------------------------
# Shipped bundles (`fbjax.core.bundle` is their format)
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Bundle:
  folder: pathlib.Path
  manifest: dict
  metadata: dict
  segmenter: Loaded          # two stages
  classifier: ClassifierSet
  anomaly: anomaly_lib.AnomalyModel | None = None

  @property
  def name(self) -> str:
    return f"{self.manifest['name']} {self.manifest['version']}"

  def component(self, kind: str):
    if kind == "segmenter":
      return self.segmenter
    if kind == "classifier":
      return self.classifier
    raise ValueError(f"{self.folder} is a bundle of a segmenter and a classifier, not a "
                     f"{kind}")


def assemble(folder: os.PathLike, configs: dict, params: dict, artefacts: dict,
             manifest: dict | None = None, metadata: dict | None = None) -> Bundle:
  """A `Bundle` from its parts: configs and params per network, `artefacts` holding
  "calibration"/"decision" per classifier and "anomaly" (anomaly.json) + "gaussian"."""
  where = str(folder)
  # Configs of an older schema are read in today's keys (`fbjax.core.schema.upgrade`).
  cfg = {n: ml_collections.ConfigDict(schema.upgrade(c)) for n, c in configs.items()}
  first = Loaded("segmenter", cfg["seg_stage1"], params["seg_stage1"], where)
  seg = Loaded("segmenter", cfg["seg_stage2"], params["seg_stage2"], where,
                         stage1_model=first)
  if not seg.two_stage:
    raise bundle_lib.BundleError(f"{folder}/configs/seg_stage2.json: not a second-stage segmenter")
  a = artefacts["anomaly"]
  ae = anomaly_lib.Autoencoder(model=anomaly_lib._plain(a["ae_model"]),
                               params=params[bundle_lib.ANOMALY_AE], enhance=a["ae_enhance"],
                               size=tuple(a["ae_size"]), workdir=where)
  g = artefacts["gaussian"]
  am = anomaly_lib.AnomalyModel(
      ae=ae, gaussian=anomaly_lib.Gaussian(np.asarray(g["mean"]), np.asarray(g["precision"]),
                                           float(a["shrinkage"])),
      thresholds={k: float(v) for k, v in a["thresholds"].items()},
      specificity=float(a["specificity"]), primary=a["primary"], info=a.get("info", {}))
  members = {n: Classifier("classifier", cfg[n], params[n], where,
                                     calibration=artefacts["calibration"].get(n),
                                     decision=artefacts["decision"].get(n),
                                     anomaly=am if n == "abnormal" else None)
             for n in bundle_lib.CLASSIFIERS}
  clf = ClassifierSet(members, workdir=where, anomaly=am)
  return Bundle(pathlib.Path(folder), manifest or {}, metadata or {}, seg, clf, am)


def load_bundle(name_or_path=bundle_lib.DEFAULT) -> Bundle:
  """The shipped bundle `name_or_path` (a folder, or a name under `models/`), its files
  checked first (`core.bundle.read`)."""
  return assemble(**bundle_lib.read(name_or_path))


def _reads(config) -> str:
  """What a classifier reads (`config.input`: kind, grid, alignment), comparable across
  members; the segmenter its crops were trained behind (`seg_workdir`) is a record only."""

  inp = {k: v for k, v in schema.input_of(config).to_dict().items() if k != "seg_workdir"}
  return json.dumps(inp, sort_keys=True, default=list)


def load(workdir: str | os.PathLike, step: int | None = None, *,
         kind: str | None = None):
  """The trained model of `workdir` (latest checkpoint, or `step`).

  `workdir` may also be a shipped bundle (`fbjax.core.bundle`: its folder, or its name under
  `models/`): with `kind` the bundle's model of that kind (the two-stage segmenter, the
  classifier set), without it the `Bundle`.
  `kind`: the kind expected (an error names the workdir if it is another).
  """
  # fbjax.core.bundle builds on this module (it imports it): imported here, when needed.

  found = bundle_lib.resolve(workdir)
  if found is not None:
    if step is not None:
      raise ValueError(f"{found} is a shipped bundle: it holds one version of each model "
                       f"(no --step {step})")
    b = load_bundle(found)
    return b if kind is None else b.component(kind)
  workdir = os.path.expanduser(os.fspath(workdir))
  config = workdir_lib.read_config(workdir)
  got = kind_of(config, f"{workdir}/config.json")
  if kind is not None and got != kind:
    raise ValueError(f"{workdir} holds a {got} (trainer {config.get('trainer')!r}), "
                     f"not a {kind}")
  params = ckpt_lib.load_state(workdir, step)["params"]
  if got != "classifier":
    return Loaded(got, config, params, workdir)

  return Classifier(
      got, config, params, workdir,
      calibration=workdir_lib.read_json(workdir, workdir_lib.CALIBRATION, required=False),
      decision=workdir_lib.read_json(workdir, workdir_lib.DECISION, required=False),
      anomaly=anomaly_lib.load(workdir) if anomaly_lib.exists(workdir) else None)
