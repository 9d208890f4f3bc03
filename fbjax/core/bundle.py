"""The shipped bundle: trained models in a plain, checked format, loaded without orbax.

    parts = bundle.read("fbjax_head_v1")      # checked files: configs, params, artefacts
    b = inference.load_bundle("fbjax_head_v1")           # the models (`evaluation.inference`)
    inference.load("fbjax_head_v1", kind="segmenter")   # its segmenter, like any workdir

This module is the format only (files, hashes, parameters); the models are built from
its parts by `fbjax.evaluation.inference`.

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

import hashlib
import json
import os
import pathlib

import jax
import ml_collections
import numpy as np
from flax import serialization

FORMAT = 1
DEFAULT = "fbjax_head_v1"
ROOT = pathlib.Path(__file__).resolve().parents[2] / "models"
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


  return serialization.msgpack_serialize(jax.tree.map(cast, params))


def read_params(path: pathlib.Path) -> dict:
  """The parameters of a `models/<net>.msgpack`, floating arrays as float32."""

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


def read(name_or_path=DEFAULT) -> dict:
  """The parts of the bundle `name_or_path` (a folder, or a name under `models/`), checked
  (`verify`): {folder, configs, params, artefacts, manifest, metadata}, as
  `evaluation.inference.assemble` takes them."""
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
  return {"folder": folder, "configs": configs, "params": params, "artefacts": artefacts,
          "manifest": manifest, "metadata": metadata}
