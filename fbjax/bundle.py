"""The shipped bundle: trained models in a plain, checked format, loaded without orbax.

    b = bundle.load("fbjax_head_v1")          # a name under models/, or a folder
    seg = b.component("segmenter")             # the two-stage head segmenter (inference.Loaded)
    clf = b.component("classifier")            # plane + abnormal/condition (ClassifierSet)
    inference.load("fbjax_head_v1", kind="segmenter")   # the same, like any workdir

A bundle folder (the layout of a MONAI bundle, without depending on MONAI):

  metadata.json      name, version, changelog, intended use, data licences, and what each
                     network reads and returns (`networks`)
  manifest.json      the release record (fbjax version and commit, recipe, commands, seeds,
                     data fingerprints, split rule, wall time per model, validation metrics
                     beside the shortcut) and `files`: the size and SHA-256 of every other file
  configs/<net>.json the training config of each network (config.json of its workdir; paths
                     of the training machine written as {work}, {real_data}, {data_dir})
  models/<net>.msgpack  its parameters (flax msgpack; float16 where `weights_dtype` says so,
                     read back as float32)
  calibration/<net>.json, decision/<net>.json   a classifier's temperatures and threshold
  anomaly/anomaly.json, anomaly/gaussian.npz    the anomaly model (its autoencoder is the
                     network `anomaly_ae`)
  reference_outputs.json  the bundle's outputs on fixed real images (the regression tests')
  docs/README.md     the model card

Loading checks every file the manifest lists (present, size, SHA-256) and the format
version before anything is read: a damaged or partial bundle stops with an error naming
the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib

import ml_collections
import numpy as np
from flax import serialization

from fbjax import schema

FORMAT = 1
DEFAULT = "fbjax_head_v1"
ROOT = pathlib.Path(__file__).resolve().parents[1] / "models"
MANIFEST, METADATA = "manifest.json", "metadata.json"
SEGMENTER = ("seg_stage1", "seg_stage2")
CLASSIFIERS = ("planes", "abnormal")
ANOMALY_AE = "anomaly_ae"
NETWORKS = (*SEGMENTER, *CLASSIFIERS, ANOMALY_AE)


# The training machine's paths in a bundle's configs, as placeholders (`template_paths`),
# filled again where the bundle is measured (`fill_paths`).
PATH_KEYS = ("data_dir", "work", "real_data")   # data_dir lies inside work: first


def template_paths(obj, values: dict):
  """`obj` (a JSON-like tree, or a string) with the paths of `values` as {key}."""
  return _paths(obj, lambda t: _replace(t, [(str(values[k]), "{" + k + "}")
                                            for k in PATH_KEYS if k in values]))


def fill_paths(obj, values: dict):
  """`obj` (a JSON-like tree, a ConfigDict or a string) with {key} as the paths of `values`."""
  if isinstance(obj, ml_collections.ConfigDict):
    return ml_collections.ConfigDict(fill_paths(obj.to_dict(), values))
  return _paths(obj, lambda t: _replace(t, [("{" + k + "}", str(v)) for k, v in values.items()]))


def _replace(text: str, pairs) -> str:
  for a, b in pairs:
    text = text.replace(a, b)
  return text


def _paths(obj, fn):
  if isinstance(obj, dict):
    return {k: _paths(v, fn) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return type(obj)(_paths(v, fn) for v in obj)
  return fn(obj) if isinstance(obj, str) else obj


class BundleError(ValueError):
  """A bundle that cannot be used as it is (missing, damaged or of another format)."""


def resolve(name_or_path) -> pathlib.Path | None:
  """The bundle folder meant by a folder path or a bundle name under `models/`; None when
  it is neither (e.g. a training workdir)."""
  p = pathlib.Path(os.path.expanduser(os.fspath(name_or_path)))
  for cand in (p, ROOT / p):
    if cand.is_dir() and ((cand / MANIFEST).exists() or (cand / METADATA).exists()):
      return cand.resolve()
  return None


def sha256_file(path: pathlib.Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(1 << 20):
      h.update(chunk)
  return h.hexdigest()


def _read_json(path: pathlib.Path) -> dict:
  if not path.exists():
    raise BundleError(f"{path}: missing (a bundle holds {MANIFEST} and {METADATA}; "
                      "rerun the release recipe, launch.release, to write it)")
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise BundleError(f"{path}: not valid JSON ({e})") from None


def verify(folder: pathlib.Path) -> tuple[dict, dict]:
  """(manifest, metadata) after checking the format, the versions and every listed file."""
  folder = pathlib.Path(folder)
  manifest = _read_json(folder / MANIFEST)
  metadata = _read_json(folder / METADATA)
  if manifest.get("format") != FORMAT:
    raise BundleError(f"{folder / MANIFEST}: bundle format {manifest.get('format')!r}, this "
                      f"fbjax reads format {FORMAT}")
  if metadata.get("version") != manifest.get("version"):
    raise BundleError(f"{folder / METADATA}: version {metadata.get('version')!r} differs from "
                      f"the manifest's {manifest.get('version')!r}")
  files = manifest.get("files")
  if not isinstance(files, dict) or not files:
    raise BundleError(f"{folder / MANIFEST}: no file list")
  for rel, rec in sorted(files.items()):
    path = folder / rel
    if not path.is_file():
      raise BundleError(f"{path}: missing from the bundle (listed in {MANIFEST})")
    if path.stat().st_size != rec["bytes"]:
      raise BundleError(f"{path}: {path.stat().st_size} bytes, the manifest says "
                        f"{rec['bytes']}: the file is damaged or was changed")
    if sha256_file(path) != rec["sha256"]:
      raise BundleError(f"{path}: SHA-256 differs from the manifest's: the file is damaged "
                        "or was changed")
  return manifest, metadata


def identity(folder: pathlib.Path) -> str:
  """name@version:sha256 of the manifest (what a prediction run depends on)."""
  folder = pathlib.Path(folder)
  m = _read_json(folder / MANIFEST)
  return f"{m.get('name')}@{m.get('version')}:{sha256_file(folder / MANIFEST)[:16]}"


# ---------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------


def params_bytes(params, dtype: str = "float16") -> bytes:
  """msgpack of `params` with floating arrays stored as `dtype`."""
  def cast(a):
    a = np.asarray(a)
    return a.astype(dtype) if np.issubdtype(a.dtype, np.floating) else a

  import jax  # noqa: PLC0415

  return serialization.msgpack_serialize(jax.tree.map(cast, params))


def read_params(path: pathlib.Path) -> dict:
  """The parameters of a `models/<net>.msgpack`, floating arrays as float32."""
  import jax  # noqa: PLC0415

  try:
    tree = serialization.msgpack_restore(path.read_bytes())
  except Exception as e:  # noqa: BLE001 (msgpack raises several kinds)
    raise BundleError(f"{path}: not readable parameters ({type(e).__name__}: {e})") from None
  return jax.tree.map(lambda a: np.asarray(a, np.float32)
                      if np.issubdtype(np.asarray(a).dtype, np.floating) else np.asarray(a),
                      tree)


# ---------------------------------------------------------------------------
# The loaded bundle
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Bundle:
  folder: pathlib.Path
  manifest: dict
  metadata: dict
  segmenter: object          # inference.Loaded, two stages
  classifier: object         # inference.ClassifierSet
  anomaly: object = None     # anomaly.AnomalyModel

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


def assemble(folder: pathlib.Path, configs: dict, params: dict, artefacts: dict,
             manifest: dict | None = None, metadata: dict | None = None) -> Bundle:
  """A `Bundle` from its parts: configs and params per network, `artefacts` holding
  "calibration"/"decision" per classifier and "anomaly" (anomaly.json) + "gaussian"."""
  from fbjax import anomaly as anomaly_lib  # noqa: PLC0415
  from fbjax import inference  # noqa: PLC0415

  where = str(folder)
  # Configs of an older schema are read in today's keys (`fbjax.schema.upgrade`).
  cfg = {n: ml_collections.ConfigDict(schema.upgrade(c)) for n, c in configs.items()}
  first = inference.Loaded("segmenter", cfg["seg_stage1"], params["seg_stage1"], where)
  seg = inference.Loaded("segmenter", cfg["seg_stage2"], params["seg_stage2"], where,
                         stage1_model=first)
  if not seg.two_stage:
    raise BundleError(f"{folder}/configs/seg_stage2.json: not a second-stage segmenter")
  a = artefacts["anomaly"]
  ae = anomaly_lib.Autoencoder(model=anomaly_lib._plain(a["ae_model"]),
                               params=params[ANOMALY_AE], enhance=a["ae_enhance"],
                               size=tuple(a["ae_size"]), workdir=where)
  g = artefacts["gaussian"]
  am = anomaly_lib.AnomalyModel(
      ae=ae, gaussian=anomaly_lib.Gaussian(np.asarray(g["mean"]), np.asarray(g["precision"]),
                                           float(a["shrinkage"])),
      thresholds={k: float(v) for k, v in a["thresholds"].items()},
      specificity=float(a["specificity"]), primary=a["primary"], info=a.get("info", {}))
  members = {n: inference.Classifier("classifier", cfg[n], params[n], where,
                                     calibration=artefacts["calibration"].get(n),
                                     decision=artefacts["decision"].get(n),
                                     anomaly=am if n == "abnormal" else None)
             for n in CLASSIFIERS}
  clf = inference.ClassifierSet(members, workdir=where, anomaly=am)
  return Bundle(pathlib.Path(folder), manifest or {}, metadata or {}, seg, clf, am)


def load(name_or_path=DEFAULT) -> Bundle:
  """The bundle `name_or_path` (a folder, or a name under `models/`), checked (`verify`)."""
  folder = resolve(name_or_path)
  if folder is None:
    raise BundleError(f"{name_or_path}: no bundle there (a folder with {MANIFEST}, or a name "
                      f"under {ROOT}: {sorted(p.name for p in ROOT.glob('*') if p.is_dir())})")
  manifest, metadata = verify(folder)
  nets = manifest.get("networks", NETWORKS)
  missing = [n for n in NETWORKS if n not in nets]
  if missing:
    raise BundleError(f"{folder / MANIFEST}: networks {missing} missing")
  configs = {n: _read_json(folder / "configs" / f"{n}.json") for n in NETWORKS}
  params = {n: read_params(folder / "models" / f"{n}.msgpack") for n in NETWORKS}
  artefacts = {"calibration": {}, "decision": {},
               "anomaly": _read_json(folder / "anomaly" / "anomaly.json")}
  for n in CLASSIFIERS:
    for kind in ("calibration", "decision"):
      p = folder / kind / f"{n}.json"
      if p.exists():
        artefacts[kind][n] = _read_json(p)
  try:
    with np.load(folder / "anomaly" / "gaussian.npz") as z:
      artefacts["gaussian"] = {k: z[k] for k in ("mean", "precision")}
  except (OSError, KeyError, ValueError) as e:
    raise BundleError(f"{folder / 'anomaly' / 'gaussian.npz'}: not readable ({e})") from None
  return assemble(folder, configs, params, artefacts, manifest, metadata)
