"""The release's last steps: the trained workdirs packed into the bundle (weights, configs,
thresholds, calibration, the anomaly model), measured as shipped, its reference outputs,
the model card and the manifest.
"""

from __future__ import annotations

import json
import pathlib
import subprocess

import numpy as np
from flax import serialization

import fbjax
from fbjax import predict
from fbjax.core import bundle
from fbjax.core import checkpoint as ckpt_lib
from fbjax.core import workdir as workdir_lib
from fbjax.core.bundle import template_paths as template
from fbjax.data import builders, splits

REPO = pathlib.Path(__file__).resolve().parents[2]


def _write_json(path: pathlib.Path, obj) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(obj, indent=1, sort_keys=True, default=_plain) + "\n")


def _plain(v):

  if isinstance(v, (np.floating, np.integer)):
    return v.item()
  if isinstance(v, np.ndarray):
    return v.tolist()
  return str(v)


def work_parts(recipe, values: dict) -> tuple[dict, dict, dict]:
  """(configs, float32 params, artefacts) of every network from the work folder."""


  work = pathlib.Path(values["work"])
  configs, params = {}, {}
  for net in bundle.NETWORKS:
    w = work / (recipe.anomaly.autoencoder if net == bundle.ANOMALY_AE else net)
    configs[net] = workdir_lib.read_config(w).to_dict()
    if net != bundle.ANOMALY_AE:
      params[net] = ckpt_lib.load_state(w)["params"]
  folder = work / "anomaly"
  params[bundle.ANOMALY_AE] = serialization.msgpack_restore(
      (folder / "ae_params.msgpack").read_bytes())
  artefacts = {"calibration": {}, "decision": {},
               "anomaly": json.loads((folder / "anomaly.json").read_text())}
  for net in bundle.CLASSIFIERS:
    for kind in ("calibration", "decision"):
      p = work / net / f"{kind}.json"
      if p.exists():
        artefacts[kind][net] = json.loads(p.read_text())
  with np.load(folder / "gaussian.npz") as z:
    artefacts["gaussian"] = {k: z[k] for k in ("mean", "precision")}
  return configs, params, artefacts


def pack_files(recipe, values: dict, out: pathlib.Path) -> None:
  """Writes the bundle's networks, configs, thresholds and anomaly model under `out`."""


  configs, params, artefacts = work_parts(recipe, values)
  for net in bundle.NETWORKS:
    cfg = template(configs[net], values)
    if net == "seg_stage2":
      cfg["trained_behind"] = cfg["stage1_workdir"]
      cfg["stage1_workdir"] = "seg_stage1"   # the bundle's network
    _write_json(out / "configs" / f"{net}.json", cfg)
    (out / "models").mkdir(parents=True, exist_ok=True)
    (out / "models" / f"{net}.msgpack").write_bytes(
        bundle.params_bytes(params[net], recipe.weights_dtype))
  for kind in ("calibration", "decision"):
    for net, v in artefacts[kind].items():
      _write_json(out / kind / f"{net}.json", template(v, values))
  _write_json(out / "anomaly" / "anomaly.json", template(artefacts["anomaly"], values))
  np.savez(out / "anomaly" / "gaussian.npz", **artefacts["gaussian"])


def file_table(out: pathlib.Path) -> dict:

  return {p.relative_to(out).as_posix(): {"bytes": p.stat().st_size,
                                          "sha256": bundle.sha256_file(p)}
          for p in sorted(out.rglob("*")) if p.is_file() and p.name != bundle.MANIFEST}


def git_commit(out: pathlib.Path | None = None) -> dict:
  """The repository's commit, and whether its tracked files differ from it (the bundle
  being written, `out`, left out: it is what the recipe makes)."""
  def git(*args):
    try:
      return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                            timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
      return ""

  spec = ["--", "."]
  if out is not None and pathlib.Path(out).resolve().is_relative_to(REPO):
    spec.append(f":(exclude){pathlib.Path(out).resolve().relative_to(REPO).as_posix()}")
  return {"commit": git("rev-parse", "HEAD"),
          "dirty": bool(git("status", "--porcelain", "--untracked-files=no", *spec))}


def write_manifest(recipe, values: dict, state: object, out: pathlib.Path, **extra) -> dict:

  train = state.get("train", {})
  manifest = {
      "format": bundle.FORMAT, "name": recipe.name, "version": recipe.version,
      "fbjax": {"version": fbjax.__version__, **git_commit(out)},
      "recipe": template(recipe.to_dict(), values),
      "command": "python -m launch.release --real_data DIR --work WORK --out "
                 f"models/{recipe.name}" + ("" if not recipe.smoke else
                                            " --config configs/release.py:smoke"),
      "networks": list(bundle.NETWORKS), "seed": int(recipe.seed),
      "weights_dtype": recipe.weights_dtype,
      "data": state.get("data"),
      "split_rule": " ".join(" ".join((splits.__doc__ or "").split("\n\n")[:2]).split()),
      "trainings": {n: {"command": " ".join(template(r["command"], values)),
                        "wall_time_s": r.get("wall_time_s")} for n, r in train.items()},
      "anomaly_fit_s": (state.get("anomaly") or {}).get("seconds"),
      **extra}
  manifest["files"] = file_table(out)
  _write_json(out / bundle.MANIFEST, manifest)
  return manifest


def reference_images(real_data: pathlib.Path, data_dir: pathlib.Path) -> list[dict]:
  """Fixed validation images for the reference-output tests: four HC18 heads at the
  quantiles 0, 1/3, 2/3, 1 of their HC, two FETAL_PLANES_DB images (one per layout), a
  normal and an abnormal image of the abnormalities set (the first by id)."""

  def src(name, config=None):
    return builders.data_source(name, "validation", data_dir=data_dir, config=config,
                                manual_dir=real_data, decode_images=False)

  def ident(ex):
    v = ex["id"]
    return v.decode() if isinstance(v, bytes) else str(v)

  out = []
  h = src("hc18")
  exs = sorted((float(h[i]["hc_mm"]), ident(h[i]), float(h[i]["pixel_spacing_mm"]))
               for i in range(len(h)))
  for q in (0.0, 1 / 3, 2 / 3, 1.0):
    hc, i, sp = exs[round(q * (len(exs) - 1))]
    out.append({"file": f"hc18/{i}", "pixel_spacing_mm": sp, "ref_hc_mm": hc})
  f = src("fetal_planes_db", "brain_combined")
  ids = sorted(ident(f[i]) for i in range(len(f)))
  for layout in ("fetal_planes_db/", "fetal_planes_db_640/"):
    first = next(i for i in ids if i.startswith(layout))
    out.append({"file": first, "pixel_spacing_mm": None})
  a = src("fetal_brain_abnormalities")
  rows = sorted((ident(a[i]), int(a[i]["abnormal"])) for i in range(len(a)))
  for want in (0, 1):
    i = next(i for i, y in rows if y == want)
    out.append({"file": f"fetal_brain_abnormalities/{i}", "pixel_spacing_mm": None,
                "abnormal": want})
  for r in out:
    if not (real_data / r["file"]).is_file():
      raise FileNotFoundError(f"reference image {real_data / r['file']} not found")
  return out


REFERENCE_KEYS = ("seg_quality", "no_head_reason", "hc_px", "hc_mm", "abnormal_prob",
                  "anomaly_score")


def reference_outputs(predictor, real_data: pathlib.Path, images: list[dict]) -> list[dict]:
  """The predictions of `predictor` on the reference images (`predict.predict_images`)."""

  rows = predict.predict_images([real_data / r["file"] for r in images],
                                pixel_spacing_mm=[r["pixel_spacing_mm"] for r in images],
                                predictor=predictor)
  out = []
  for r, row in zip(images, rows, strict=True):
    out.append({**r, **{k: row[k] for k in REFERENCE_KEYS},
                "ellipse": row["ellipse"], "probabilities": row["probabilities"]})
  return out
