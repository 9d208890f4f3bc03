"""A trained workdir measured on any data block and split, without retraining.

    summary = evaluate.evaluate_workdir(workdir, data_config, split="test", out_dir=OUT)

The model comes from the workdir (`fbjax.evaluation.inference.load`: its recorded kind,
config and latest checkpoint: what it reads, `config.input`, is the workdir's);
the data from `data_config` and overrides of the blocks of `config.sources`,
which may only say where the data are, so the same model can be measured on
another copy of a data set (`--config.sources.hc18.manual_dir=...`,
`--config.sources.fba.manual_dir=...`). By default every block the model was
validated on during training (`eval`) is measured; `data` picks one.

Per kind, with the evaluators validation runs during training (same
prediction function, same test-time averaging), so on the validation split
the numbers equal the ones logged at that checkpoint:

  segmenter    `evaluators.segmentation` on the network grid, and
               `segment_eval` in the original resolution (per-image CSV,
               overlays, HC/BPD/OFD per ellipse method); a two-stage
               segmenter (`fbjax.evaluation.coarse_fine`) in the original resolution only;
  classifier   `evaluators.classification` per task, the abnormal head at the
               workdir's decision threshold, the anomaly score's AUROC;
  autoencoder  `evaluators.reconstruction` (MSE);
  despeckler   `evaluators.denoising` (blind-spot loss; PSNR, SSIM vs clean).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import jax
import ml_collections
import numpy as np

from fbjax.core import bundle as bundle_lib
from fbjax.core import metrics, schema
from fbjax.data import sources
from fbjax.data.mix import Subset
from fbjax.evaluation import (
  anomaly,
  anomaly_fit,
  baselines,
  evaluators,
  head_tables,
  inference,
  networks,
  segment_eval,
)
from fbjax.geometry import segment_post
from fbjax.runtime import tracking, train_lib

# The block a shipped bundle's segmenter is measured on by default (its real data).
SEGMENTER_BLOCK = "hc18"


# What a config given to `launch.evaluate` may change in a data block the workdir was
# trained with: which data set, where its files are, and how many of a split's first
# examples to read (a quick look). Everything else (size, labels, selection,
# augmentation, tasks) is what the model was trained to read.
WHERE_KEYS = ("name", "config", "manual_dir", "data_dir", "max_examples")
PATH_KEYS = ("manual_dir", "data_dir")
# How a block took part in training (its share of an epoch, validated on or not): another
# config's value is neither compared nor taken.
TRAINING_KEYS = ("weight", "eval")


def _blocks(config) -> dict:
  """{dotted name: block} of the data blocks of `config` (`sources.hc18`, ...)."""
  return {f"sources.{n}": b for n, b in (config.get("sources") or {}).items()}


def _where(key: str, value):
  return os.path.expanduser(value) if key in PATH_KEYS and isinstance(value, str) else value


def _same(a, b) -> bool:
  norm = (lambda v: tuple(v) if isinstance(v, (list, tuple)) else
          v.to_dict() if isinstance(v, ml_collections.ConfigDict) else v)
  return norm(a) == norm(b)


_ABSENT = object()


def _lookup(config, path: str):
  """The value at dotted `path` of `config` (`_ABSENT`: none)."""
  node = config
  for part in path.split("."):
    if not hasattr(node, "keys") or part not in node:
      return _ABSENT
    node = node[part]
  return node


def _shown(v):
  return v.to_dict() if isinstance(v, ml_collections.ConfigDict) else \
      tuple(v) if isinstance(v, list) else v


def _owner(config, path: str) -> str | None:
  """The data block of `config` that dotted `path` lies in (None: none)."""
  return next((b for b in sorted(_blocks(config), key=len, reverse=True)
               if path.startswith(b + ".")), None)


def merged_config(trained, data_config=None, overrides: dict | None = None, *,
                  origin: str = "the workdir", strict: bool = True):
  """The trained config, told where the data are by `data_config` and `overrides`.

  A data block the trained config lacks is added from `data_config` whole (read as the
  model's `input`, like every block; measured only when named: `eval` False). In a block
  the model was trained with, only `WHERE_KEYS` (which data set, where its files are) may
  change: `overrides` (dotted paths, e.g. the command line's
  `{"sources.hc18.manual_dir": "~/hc18"}`) set them; any other override, and any other
  key of `data_config`'s block, must equal the trained value, else a ValueError names both.
  `strict=False` (the command line): `data_config`'s blocks that the model was trained
  with are left as recorded, neither compared nor taken (a config file's own defaults
  never replace what the workdir recorded); only `overrides` change them.
  """
  config = trained.copy_and_resolve_references()
  if data_config is None and not overrides:
    return config
  have = _blocks(config)
  with config.unlocked():
    if data_config is not None:
      given = ml_collections.ConfigDict(schema.upgrade(json.loads(
          data_config.copy_and_resolve_references().to_json_best_effort())))
      for name, block in _blocks(given).items():
        if name not in have:
          # Measured when asked for (`data`): the default is what the model was validated on.
          config.sources[name.split(".", 1)[1]] = ml_collections.ConfigDict(
              dict(block.to_dict(), eval=False))
          continue
        if not strict:
          continue
        for key, value in block.items():
          if key in WHERE_KEYS:
            have[name][key] = _where(key, value)
          elif key in have[name] and key not in TRAINING_KEYS \
              and not _same(value, have[name][key]):
            raise ValueError(f"{name}.{key}: {origin} was trained with "
                             f"{have[name][key]!r}, the config gives {value!r}; a config "
                             f"given for evaluation only says where the data are "
                             f"({', '.join(WHERE_KEYS)})")
    blocks = _blocks(config)
    for path, value in (overrides or {}).items():
      name = _owner(config, path)
      if name is None:
        recorded = _lookup(config, path)
        if recorded is _ABSENT:
          old = (" (config.data / config.phantom are config.sources.<name> now)"
                 if path.split(".")[0] in ("data", "phantom") else "")
          raise ValueError(f"--config.{path}: {origin} has no such data block{old} (its "
                           f"blocks: {', '.join(sorted(blocks))}); a config given for "
                           "evaluation only says where the data are")
        if not _same(value, recorded):
          raise ValueError(f"--config.{path}={value!r}: {origin} was trained with "
                           f"{path}={_shown(recorded)}; what a model reads (its input, "
                           "stages, settings) comes from its record, a config given for "
                           f"evaluation only says where the data are ({', '.join(WHERE_KEYS)}"
                           " of a block of config.sources)")
        continue
      key = path[len(name) + 1:]
      if key in WHERE_KEYS:
        blocks[name][key] = _where(key, value)
      elif key == "size" and key not in blocks[name]:
        raise ValueError(f"--config.{path}: a data block has no size; what the model reads "
                         f"is its recorded input.size {_shown(config.input.size)}, which a "
                         "config given for evaluation does not change")
      elif key not in blocks[name] or not _same(value, blocks[name][key]):
        raise ValueError(f"--config.{path}={value!r}: {origin} was trained with "
                         f"{name}.{key}={blocks[name].get(key)!r}; a config given for "
                         f"evaluation only says where the data are ({', '.join(WHERE_KEYS)} "
                         "of a block of config.sources)")
  return config


def classifier_summary(model, source, name: str, *, batch_size=None, tta=None) -> dict:
  """Per task the `classification_summary`; the abnormal head at the workdir's threshold;
  the anomaly score's AUROC (when the workdir has an anomaly model)."""
  res = evaluators.predict_source(model, source, batch_size, tta=tta)
  names = {t: model.class_names(t) for t in model.tasks}
  row, summaries = evaluators.classification(res, names, name)
  out: dict = {"n": len(source), "metrics": row,
               "tasks": {t: {k: s[k] for k in ("accuracy", "macro_f1", "ece", "auroc",
                                               "confusion_matrix") if k in s}
                         for t, s in summaries.items()}}
  y = res["label_abnormal"]
  decision = getattr(model, "decision", None)
  threshold = None if decision is None else float(decision["abnormal_threshold"])
  if "abnormal" in names and threshold is not None and np.any(y >= 0):
    sens, spec = metrics.sensitivity_specificity(y, res["abnormal"][:, 1], threshold)
    out["abnormal_decision"] = {"threshold": threshold, "sensitivity": sens,
                                "specificity": spec}
  am = getattr(model, "anomaly", None)
  if am is not None and len(np.unique(y[y >= 0])) == 2:
    # The score reads the whole image (`anomaly_fit.fit_from_config`), not the aligned head.
    source = baselines.whole_images(source)
    outputs, labels = anomaly_fit.scores_over(am.ae, source, batch_size or 64,
                                          anomaly.make_score_fn(am.ae))
    out["anomaly_score"] = {"kind": am.primary,
                            "auroc": metrics.auroc(labels, am.scores(outputs)[am.primary])}
  return out


def evaluate_workdir(workdir: str, data_config=None, *, data: str | None = None,
                     split: str | None = None, out_dir: str | None = None,
                     methods=segment_post.METHODS, num_overlays: int = 16,
                     limit: int | None = None, batch_size: int | None = None,
                     step: int | None = None, tta: bool | None = None,
                     real_data: str | None = None, data_dir: str | None = None,
                     overrides: dict | None = None, strict: bool = True) -> dict:
  """Measures `workdir` on block `data` of its `config.sources` (default: every block it
  was validated on during training, `eval`) at `split`
  (default: the block's validation split). Writes `evaluation.json` to `out_dir`
  (all but a segmenter's per-image `rows`, which `segment_eval` writes as CSV).
  `tta`: mirror averaging on or off (both stages of a two-stage segmenter) instead
  of the workdir's `eval_flip`; recorded in the summary. `data_config`, `overrides` and
  `strict` say where the data are (`merged_config`): the model reads them as trained."""

  if bundle_lib.resolve(workdir) is not None:
    return evaluate_bundle(workdir, data_config, real_data=real_data, data=data, split=split,
                           out_dir=out_dir, methods=methods, num_overlays=num_overlays,
                           limit=limit, batch_size=batch_size, tta=tta, step=step,
                           data_dir=data_dir, overrides=overrides, strict=strict)
  if data_dir is not None:
    raise ValueError(f"{workdir}: data_dir is for a bundle's data sets; a workdir's data "
                     "blocks name their own (--config.sources.NAME.data_dir=...)")
  workdir = os.path.abspath(workdir)
  model = inference.load(workdir, step)
  config = merged_config(model.config, data_config, overrides, origin=workdir, strict=strict)
  if tta is not None:
    with config.unlocked():
      config.eval_flip = bool(tta)
  model.config = config
  if data is not None and data not in config.sources:
    raise ValueError(f"{workdir}: no data block {data!r}; it reads "
                     f"{', '.join(config.sources)} (config.sources)")
  blocks = {data: config.sources[data]} if data else sources.eval_blocks(config)
  if not blocks:
    raise ValueError(f"{workdir}: no block of config.sources was validated on in training "
                     f"(eval); name one with data= (it reads {', '.join(config.sources)})")
  summary: dict = {"workdir": workdir, "kind": model.kind, "step": step,
                   "eval_flip": bool(config.get("eval_flip", False)), "sources": {}}
  _measure(model, config, blocks, summary, split=split, out_dir=out_dir, methods=methods,
           num_overlays=num_overlays, limit=limit, batch_size=batch_size, tta=tta)
  _write(summary, out_dir)
  return summary


def _write(summary: dict, out_dir: str | None) -> None:
  if out_dir is not None:
    os.makedirs(out_dir, exist_ok=True)
    kept = {**summary, "sources": {n: {k: v for k, v in e.items() if k != "rows"}
                                   for n, e in summary["sources"].items()}}
    with open(os.path.join(out_dir, "evaluation.json"), "w") as f:
      json.dump(tracking.jsonable(kept), f, indent=1, default=str)


def bundle_data_dir(real_data: str) -> str:
  """Where a bundle's evaluation builds the data sets of `real_data` by default: one
  folder per copy of the data (`<default data_dir>/bundle/<name>-<hash of its path>`), so
  two copies never meet in one build."""
  path = os.path.abspath(os.path.expanduser(real_data))
  tag = hashlib.sha256(path.encode()).hexdigest()[:10]
  return os.path.join(sources.default_data_dir(), "bundle",
                      f"{os.path.basename(path.rstrip(os.sep)) or 'root'}-{tag}")


def evaluate_bundle(folder: str, data_config=None, *, real_data: str | None = None,
                    data: str | None = None, split: str | None = None,
                    out_dir: str | None = None, methods=segment_post.METHODS,
                    num_overlays: int = 16, limit: int | None = None,
                    batch_size: int | None = None, tta: bool | None = None,
                    step: int | None = None, data_dir: str | None = None,
                    overrides: dict | None = None, strict: bool = True) -> dict:
  """A shipped bundle measured like a workdir: its two-stage segmenter on the HC18 block
  (`data`), each of its classifiers on the sources it was validated on (planes: `fpdb`,
  `fba`'s normals; abnormal: `fba`, `fpdb`, `hc18`), aligned heads cut around the bundle's
  own ellipses. `real_data` is the
  folder of the public data sets' layouts (the bundle's configs name it `{real_data}`);
  `data_config` may replace data blocks as for a workdir. `data` picks one block.
  `data_dir`: where the data sets are built (default: `bundle_data_dir(real_data)`)."""

  if step is not None:
    raise ValueError(f"{folder} is a shipped bundle: one version of each model, no --step")
  b = inference.load_bundle(folder)
  if not real_data and data_config is None:
    raise ValueError(f"{b.folder}: give the folder of the data sets (--real_data DIR, holding "
                     "hc18/, fetal_planes_db/, fetal_brain_abnormalities/) or --config with "
                     "the data blocks")
  real_data = os.path.abspath(os.path.expanduser(real_data or ""))
  values = {"real_data": real_data, "data_dir": data_dir or bundle_data_dir(real_data),
            "work": ""}
  summary: dict = {"workdir": str(b.folder), "kind": "bundle", "bundle": b.name,
                   "identity": bundle_lib.identity(b.folder), "sources": {}}
  seg = b.segmenter
  # An override goes to every member that reads its block (and must reach one).
  configs = {"segmenter": bundle_lib.fill_paths(seg.config, values),
             **{n: bundle_lib.fill_paths(m.config, values)
                for n, m in b.classifier.members.items()}}
  for path in overrides or {}:
    if not any(_owner(c, path) or _lookup(c, path) is not _ABSENT
               for c in configs.values()):
      blocks = sorted({n for c in configs.values() for n in _blocks(c)})
      raise ValueError(f"--config.{path}: no model of {b.folder} reads that data block "
                       f"(blocks: {', '.join(blocks)})")

  def merged(name):
    c = configs[name]
    mine = {p: v for p, v in (overrides or {}).items()
            if _owner(c, p) or _lookup(c, p) is not _ABSENT}
    return merged_config(c, data_config, mine, origin=f"{b.name}/{name}", strict=strict)

  seg_cfg = merged("segmenter")
  members = {}
  for mname, m in b.classifier.members.items():
    cfg = merged(mname)
    with cfg.unlocked():
      cfg.input.seg_workdir = str(b.folder)
    members[mname] = (m, cfg)
  known = sorted({*seg_cfg.sources, *(n for _, c in members.values() for n in c.sources)})
  if data is not None and data not in known:
    raise ValueError(f"{b.folder}: no data block {data!r}; the bundle reads {known}")
  # The segmenter on HC18 by default (the phantom it was also trained on is measured only
  # when asked for, `data="phantom"`), or on the block asked for.
  seg_pick = [n for n in seg_cfg.sources if n == (data or SEGMENTER_BLOCK)]
  if seg_pick:
    if tta is not None:
      with seg_cfg.unlocked():
        seg_cfg.eval_flip = bool(tta)
    seg = dataclasses.replace(seg, config=seg_cfg)   # the loaded bundle stays as it is
    _measure(seg, seg_cfg, {n: seg_cfg.sources[n] for n in seg_pick}, summary, split=split,
             out_dir=out_dir, methods=methods, num_overlays=num_overlays, limit=limit,
             batch_size=batch_size, tta=tta, tag="segmenter")
  # Each classifier on the sources it was validated on (its own tasks and label rules).
  for mname, (m, cfg) in members.items():
    pick = [n for n, blk in cfg.sources.items() if (blk.get("eval") if data is None
                                                    else n == data)]
    m = dataclasses.replace(m, config=cfg)
    _measure(m, cfg, {n: cfg.sources[n] for n in pick}, summary,
             split=split, out_dir=out_dir, methods=methods, num_overlays=num_overlays,
             limit=limit, batch_size=batch_size, tta=tta, tag=mname)
  _write(summary, out_dir)
  return summary


def _measure(model, config, blocks: dict, summary: dict, *, split, out_dir, methods,
             num_overlays, limit, batch_size, tta, tag: str = "") -> None:
  """Fills `summary["sources"]` with the measurement of `model` on each block."""
  workdir = model.workdir
  run = train_lib.eval_run(config, workdir, batch_size)
  for name, block in blocks.items():
    sp = split or block.val_split
    # Labels masked to the block's tasks and heads found by fbjax.evaluation.heads, as in training.
    src = sources.block_source(block, sp, model_input=config.input, head_table=head_tables.table)
    counts = getattr(src, "head_counts", None)   # aligned heads: images without one
    src = Subset(src, np.arange(min(limit, len(src)))) if limit else src
    tracking.log(f"evaluating {workdir} ({model.kind}) on {name} ({block.name}) {sp}: "
                 f"{len(src)} examples")
    entry = {"data": {"name": block.name, "config": block.get("config", ""), "split": sp,
                      "manual_dir": block.get("manual_dir", "")}}
    if model.kind == "segmenter":
      if model.two_stage:
        # The second stage sees crops, not the letterboxed image: its network-grid
        # numbers are those of training validation (crops around the reference
        # head); both stages are measured in the original resolution below.
        entry["grid"] = {}
      else:
        probs_fn = networks.segmenter_probs_fn(config)
        fn = run.jit(lambda p, b, f=probs_fn: evaluators.segmentation_batch(f(p, b["image"]),
                                                                            b))
        entry["grid"] = evaluators.segmentation(run, fn, model.params, src, name,
                                                config.eval_method)[0]
      predict = model.make_predict(flip=tta)
      sub = os.path.join(out_dir, name) if out_dir and len(blocks) > 1 else out_dir
      rows, seg = segment_eval.evaluate(
          src, lambda x, f=predict: np.asarray(f(x)), size=model.size, methods=methods,
          batch_size=batch_size or config.eval_batch_size, out_dir=sub,
          num_overlays=num_overlays, overlay_method=config.eval_method, log=tracking.log)
      seg["data"] = {**entry["data"], "workdir": workdir}
      if sub is not None:
        segment_eval.write(rows, seg, sub)
      entry["original_resolution"], entry["rows"] = seg, rows
    elif model.kind == "classifier":
      entry.update(classifier_summary(model, src, name, batch_size=batch_size, tta=tta))
      if counts is not None:
        entry["head_counts"] = dict(counts)
    elif model.kind == "autoencoder":
      fn = run.jit(evaluators.reconstruction_fn(config))
      keys = ("image",) if config.target == "image" else ("image", config.target)
      # Named as in training (`val/mse`) for the block trained and validated on.
      entry["metrics"] = evaluators.reconstruction(run, fn, model.params, src, keys,
                                                   "" if len(blocks) == 1 else name)[0]
    else:
      fn = run.jit(evaluators.denoising_fn(config))
      entry["metrics"] = evaluators.denoising(run, fn, model.params, src,
                                              "" if len(blocks) == 1 else name)[0]
    summary["sources"][f"{tag}_{name}" if tag else name] = entry


def headline(summary: dict) -> dict:
  """The scalars worth printing: `val/...` metrics and the summary means, per source."""
  out = {}
  for name, e in summary["sources"].items():
    out.update(e.get("metrics", {}))
    out.update(e.get("grid", {}))
    seg = e.get("original_resolution", {})
    out.update({f"{name}/{k}": v["mean"] if isinstance(v, dict) else v for k, v in seg.items()
                if isinstance(v, (dict, float, int)) and ("dice" in k or "hc_abs" in k
                                                          or "fail" in k)
                and (not isinstance(v, dict) or "mean" in v)})
    for k in ("abnormal_decision", "anomaly_score"):
      if k in e:
        out.update({f"{name}/{k}/{m}": v for m, v in e[k].items() if m != "kind"})
  return {k: float(v) if isinstance(v, (np.floating, float)) else v for k, v in out.items()
          if not isinstance(v, jax.Array)}
