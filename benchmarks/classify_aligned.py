r"""Classification of the aligned head on real images: planes, normal vs abnormal, condition.

  python -m benchmarks.classify_aligned --seg_workdir /tmp/seg --workdir /tmp/cls_aligned \
      --real_data ../shared/data --data_dir /tmp/tfds --steps 600

Also `python -m benchmarks.classify --stages=aligned` (which runs this one). The runs are
the named configs of `configs/classify_aligned.py` (`run=...`; `--dry_run` prints them and
trains nothing). Every split is by group
(`fbjax.data.splits`); the test split is only predicted. Runs (`--runs`):

  planes       plane head on FETAL_PLANES_DB (`brain_combined`) + the abnormalities
               set's normal images (their planes), aligned heads;
  planes_hc18  the same plus HC18 training images labelled trans-thalamic (HC18's
               standard plane): does HC18 help as TT examples?
  planes_phantom  the planes run plus the phantom's planes (`--phantom_share` of the
               training mixture; crops from its head masks): does the phantom's
               anatomy (cerebellum, thalami, ventricles where each plane shows them)
               help the real planes? Scored on the same real test images
  abnormal     abnormal + condition heads on the abnormalities set, HC18 as
               further normals, aligned heads
  phantom      plane, abnormal and condition heads on the phantom's aligned heads
               (`configs/classify.py:data=phantom`; training ellipses from the head
               masks); the test split is scored twice: crops from the ground-truth
               mask's ellipse, and crops from the segmenter's ellipse (`--seg_workdir`,
               masks hidden: what `launch.predict` does)
  RUN+pretrained  RUN with the encoder initialised from `pretrain`: the autoencoder
               of `configs/classify.py:variant=pretrain` on the aligned heads of every
               real image and the phantom (`--pretrain_steps`), trained once

Per run on the test split: macro-F1 (planes: over TT/TC/TV/other and over TT/TC/TV),
per-class F1, confusion matrix PNG, ECE before and after the temperature fitted on
validation (`calibration.json`) with a reliability diagram PNG; normal vs abnormal:
AUROC, sensitivity / specificity at the validation threshold of `decision.json` (normals
of the abnormalities set and FETAL_PLANES_DB: `decision_sources`; also at the
abnormalities set's own, `per_source`), occlusion evidence inside the brain (the aligned
crop's ellipse shrunk by the skull, 0.85 of each semi-axis) against the brain's share
of the crop. Beside each number the shortcut baseline: 16x16 thumbnail + 32-bin
histogram of the whole image, logistic regression, trained on the same training
images. Images without a usable head ellipse are counted (`no_head`), not scored.
"""

from __future__ import annotations

import json
import os
import pathlib
import time

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from configs import classify as classify_config
from configs import classify_aligned as experiments
from fbjax.core import metrics, plots
from fbjax.core import workdir as workdir_lib
from fbjax.data import aligned, sources
from fbjax.evaluation import (
  baselines,
  evaluators,
  head_tables,
  inference,
  networks,
  saliency,
)
from fbjax.evaluation import source_images as by_image
from fbjax.geometry import align
from fbjax.runtime import tracking
from fbjax.trainers import classify

_REAL = flags.DEFINE_string("real_data", os.environ.get("FBJAX_REAL_DATA", "../shared/data"),
                            "Folder holding fetal_brain_abnormalities/, fetal_planes_db/, hc18/.")
_SEG = flags.DEFINE_string("seg_workdir", None, "Segmentation workdir: the head ellipses of "
                           "images without a head mask.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "tfds data_dir (default: fbjax's cache).")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/fbjax_classify_aligned", "Output folder.")
_STEPS = flags.DEFINE_integer("steps", 600, "Training steps of every run.")
_RUNS = flags.DEFINE_list("runs", list(experiments.RUNS),
                          f"Runs, of {experiments.RUNS + experiments.EXTRA_RUNS} "
                          "(RUN+pretrained too).")
_OCCLUSION = flags.DEFINE_integer("num_occlusion", 12, "Abnormal test images whose occlusion "
                                  "maps are measured.")
_PRETRAIN_STEPS = flags.DEFINE_integer("pretrain_steps", 300, "Steps of the pretraining.")
_NO_SHEET = flags.DEFINE_bool("no_sheet", False, "No contact sheet of the training crops.")
_ENSEMBLE = flags.DEFINE_list("ensemble", [], "Plane-run workdirs: score each and the mean of "
                              "their probabilities (nothing is trained).")
_SIZE = flags.DEFINE_list("size", ["96", "128"], "Network input H,W.")
_CLASS_WEIGHTING = flags.DEFINE_enum("class_weighting", "", ["", "none", "inverse_sqrt",
                                                             "inverse"],
                                     "Class weights of the heads (default: the config's, "
                                     "inverse_sqrt).")
_SEED = flags.DEFINE_integer("seed", 0, "Training seed (initialisation, batches, augmentation).")
_PHANTOM_SHARE = flags.DEFINE_float("phantom_share", None, "planes_phantom: the phantom's "
                                    "share of the training mixture (default: "
                                    "configs/classify.py PHANTOM_PLANES).")
_TRAIN_GROUPS = flags.DEFINE_float("train_groups", 1.0, "Share of the real training splits' "
                                   "groups (patients, source images) kept, by a stable hash "
                                   "of the group: a learning curve.")
_INPUT = flags.DEFINE_enum("input", "aligned_head", ["aligned_head", "image"],
                           "image: the whole-image arm of the ablation (same images, same "
                           "steps).")
_OUT = flags.DEFINE_string("out", "", "JSON output path (default: <workdir>/aligned_<runs>.json, "
                           "with --ensemble <workdir>/ensemble_planes.json).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the configs of the trainings (JSON, by "
                             "run) and stop.")
flags.mark_flag_as_required("seg_workdir")

BRAIN_FRACTION = 0.85   # the brain inside the skull: 0.85 of the head ellipse's semi-axes


# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------


def reliability_png(probs_before, probs_after, y, path) -> dict:
  size, m = 300, 30
  img = np.full((size, size, 3), 255, np.uint8)
  cv2.rectangle(img, (m, m), (size - m, size - m), (0, 0, 0), 1)
  cv2.line(img, (m, size - m), (size - m, m), (160, 160, 160), 1)
  out = {}
  for (name, p), colour in zip((("before", probs_before), ("after", probs_after)),
                               ((0, 0, 220), (0, 160, 0)), strict=True):
    r = metrics.reliability(p, y, num_bins=10)
    out[name] = r
    pts = [(int(m + c * (size - 2 * m)), int(size - m - a * (size - 2 * m)))
           for c, a in zip(r["confidence"], r["accuracy"], strict=True) if np.isfinite(a)]
    for a, b in zip(pts, pts[1:], strict=False):
      cv2.line(img, a, b, colour, 2)
    for pt in pts:
      cv2.circle(img, pt, 3, colour, -1)
  cv2.putText(img, "x: confidence, y: accuracy; red: raw, green: T-scaled", (4, 16),
              cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1)
  cv2.imwrite(str(path), img)
  return out


def calibrated(workdir, task, p):
  cal = workdir_lib.read_json(workdir, workdir_lib.CALIBRATION)
  t = cal["tasks"][task]["temperature"]
  return t, metrics.apply_temperature(p, t)


def task_report(clf, workdir, res, task, out_dir, tag, base_probs) -> dict:
  y, p = res[f"label_{task}"], res[task]
  names = clf.class_names(task)
  s = metrics.classification_summary(y, p, names)
  t, q = calibrated(workdir, task, p)
  yb = y
  out = {"n": s["n"], "accuracy": s["accuracy"], "macro_f1": s["macro_f1"],
         "per_class_f1": {n: round(r["f1"], 4) for n, r in s["per_class"].items()},
         "support": {n: r["support"] for n, r in s["per_class"].items()},
         "confusion_matrix": s["confusion_matrix"],
         "temperature": t, "ece": s["ece"], "ece_calibrated":
             metrics.expected_calibration_error(q, y),
         "baseline_macro_f1": metrics.macro_f1(yb, base_probs.argmax(1), len(names)),
         "baseline_accuracy": metrics.accuracy(yb, base_probs.argmax(1))}
  if task == "plane":
    three = [0, 1, 2]
    out["macro_f1_tt_tc_tv"] = metrics.macro_f1(y, p.argmax(1), classes=three)
    out["baseline_macro_f1_tt_tc_tv"] = metrics.macro_f1(yb, base_probs.argmax(1),
                                                         classes=three)
  cm_png = out_dir / f"{tag}_{task}_confusion.png"
  cv2.imwrite(str(cm_png), plots.confusion_image(np.asarray(s["confusion_matrix"]),
                                                 names)[..., ::-1])
  out["confusion_png"] = cm_png.name
  rel = out_dir / f"{tag}_{task}_reliability.png"
  out["reliability"] = reliability_png(p, q, y, rel)
  out["reliability_png"] = rel.name
  return out


def occlusion(clf, src, probs, y, num: int) -> dict:
  """Share of the abnormal logit's occlusion evidence inside the brain of the aligned crop."""

  idx = [int(i) for i in np.argsort(-probs) if y[i] == 1][:num]
  if not idx:
    return {}
  imgs = np.concatenate([b["image"][b["_mask"] > 0] for b in evaluators.host_batches(
      [src[i] for i in idx], clf.size, 16, keys=("image",))])
  logit = clf.logit_fn("abnormal", 1)
  params = jax.tree.map(jnp.asarray, clf.params)
  fn = jax.jit(lambda x: logit(params, x))

  def score(batch):
    out = []
    for i in range(0, len(batch), 64):
      chunk = batch[i:i + 64]
      pad = np.zeros((64, *batch.shape[1:]), np.float32)
      pad[: len(chunk)] = chunk
      out.append(np.asarray(fn(jnp.asarray(pad)))[: len(chunk)])
    return np.concatenate(out)

  h, w = clf.size
  cfg = clf.config.input   # the aligned head's grid and crop
  al = align.alignment(align.Ellipse(100.0, 100.0, 50.0, 40.0, 0.0), (200, 200),
                       size=(h, w), head_fraction=float(cfg.head_fraction))
  brain = align.head_region(al, BRAIN_FRACTION - 1.0)
  patch = max(4, h // 8)
  shares = [saliency.inside_fraction(saliency.occlusion_map(score, img, patch=patch,
                                                            stride=max(2, patch // 2)), brain)
            for img in imgs]
  return {"n": len(imgs), "evidence_in_brain_mean": float(np.nanmean(shares)),
          "brain_area_fraction": float(brain.mean()),
          "ratio": float(np.nanmean(shares) / brain.mean())}


def evaluate_run(run: str, workdir: str, config, out_dir: pathlib.Path, num_occlusion: int):
  clf = inference.load(workdir, kind="classifier")
  blocks = clf.config.sources
  trained = [n for n, b in blocks.items() if b.weight > 0]
  out: dict = {"run": run, "steps": int(config.total_steps), "no_head": {}}

  def src(name, split):
    s = sources.block_source(blocks[name], split, model_input=clf.config.input,
                             head_table=head_tables.table)
    out["no_head"][f"{name}/{split}"] = getattr(s, "head_counts", None)   # whole images: none
    return s

  train_srcs = [src(n, blocks[n].train_split) for n in trained]
  if run == "phantom":
    return evaluate_phantom(clf, workdir, out, src, train_srcs, out_dir)
  if run.startswith("planes"):
    tests = [src("fpdb", "test"), src("fba", "test")]
    res = [evaluators.predict_source(clf, s, 64) for s in tests]
    merged = {k: np.concatenate([r[k] for r in res]) for k in ("plane", "label_plane")}
    base = np.concatenate([baselines.fit_and_predict(train_srcs, s, "plane", 4) for s in tests])
    out["plane"] = task_report(clf, workdir, merged, "plane", out_dir, run, base)
    ids = [i for s in tests for i in by_image.ids_of(s)]
    y_plane = merged["label_plane"]
    out["plane"]["by_source_image"] = by_image.by_source_image(y_plane, merged["plane"], ids, 4)
    out["plane"]["baseline_by_source_image"] = by_image.by_source_image(y_plane, base, ids, 4)
    return out
  test = src("fba", "test")
  res = evaluators.predict_source(clf, test, 64)

  decision = workdir_lib.read_json(workdir, workdir_lib.DECISION)
  thr = decision["abnormal_threshold"]   # pooled over `decision_sources` (what predict uses)
  y, p = res["label_abnormal"], res["abnormal"][:, 1]
  sens, spec = metrics.sensitivity_specificity(y, p, thr)
  own = decision.get("per_source", {}).get("fba")
  # The shortcut, trained on the abnormalities set's training split; its threshold at 95 %
  # specificity on the set's validation normals.
  x_tr, y_tr = baselines.thumbnail_features(train_srcs[0])
  x_te, _ = baselines.thumbnail_features(test)
  x_va, y_va = baselines.thumbnail_features(src("fba", "validation"))
  m_ab, b_thr = baselines.fit_calibrated(x_tr, y_tr["abnormal"], x_va, y_va["abnormal"], 0.95)
  b_ab = baselines.probs(m_ab, x_te, 2)
  b_sens, b_spec = metrics.sensitivity_specificity(y, b_ab[:, 1], b_thr)
  out["abnormal"] = {"n": int(np.sum(y >= 0)), "normals": int(np.sum(y == 0)),
                     "auroc": metrics.auroc(y, p), "threshold": thr,
                     "threshold_from": decision.get("sources"),
                     "validation_normals": decision.get("validation_normals"),
                     "fba_own_threshold": own,
                     "fba_own_sensitivity_specificity": (
                         metrics.sensitivity_specificity(y, p, own["abnormal_threshold"])
                         if own else None),
                     "sensitivity": sens, "specificity": spec,
                     "baseline_auroc": metrics.auroc(y, b_ab[:, 1]),
                     "baseline_sensitivity": b_sens, "baseline_specificity": b_spec}
  lookup = networks.condition_lookup(clf.config.condition_classes)
  b_c = baselines.probs(baselines.fit(x_tr, y_tr["condition"]), x_te, len(lookup))
  b_c = b_c[:, [i for i in range(len(lookup)) if lookup[i] >= 0]]
  out["condition"] = task_report(clf, workdir, res, "condition", out_dir, run, b_c)
  ids, n_cond = by_image.ids_of(test), len(clf.class_names("condition"))
  y_cond = res["label_condition"]
  out["condition"]["by_source_image"] = by_image.by_source_image(y_cond, res["condition"], ids,
                                                                 n_cond)
  out["condition"]["baseline_by_source_image"] = by_image.by_source_image(y_cond, b_c, ids,
                                                                          n_cond)
  out["abnormal"]["by_source_image"] = by_image.binary_by_source_image(y, p, ids, thr)
  if clf.config.input.kind == "aligned_head":   # the brain's place is known
    out["occlusion"] = occlusion(clf, test, p, y, num_occlusion)
  return out


class _MasksHidden:
  """`source` with its head masks hidden: the ellipse has to come from the segmenter."""

  def __init__(self, source):
    self._source = source

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, i):
    return {**self._source[i], "has_head_mask": False}


def evaluate_phantom(clf, workdir, out: dict, src, train_srcs, out_dir: pathlib.Path) -> dict:
  """Phantom test split: crops from the mask's ellipse and from the segmenter's."""

  test = src("phantom", "test")
  res = evaluators.predict_source(clf, test, 64)
  base = baselines.fit_and_predict(train_srcs, test, "plane", 4)
  out["plane"] = task_report(clf, workdir, res, "plane", out_dir, "phantom", base)
  out["abnormal_auroc"] = metrics.auroc(res["label_abnormal"], res["abnormal"][:, 1])
  cond = metrics.classification_summary(res["label_condition"], res["condition"],
                                        clf.class_names("condition"))
  out["condition"] = {"accuracy": cond["accuracy"], "macro_f1": cond["macro_f1"]}
  seg = clf.config.input.get("seg_workdir", "")
  if not seg:
    return out
  raw = sources.block_source(clf.config.sources.phantom, "test", masked=False)
  ell, kinds = head_tables.compute_table(_MasksHidden(raw), seg)
  seg_src, counts = aligned.aligned_source(raw, ell, clf.config.input, kinds=kinds,
                                           name="fetal_brain_synth test (segmenter)")
  r = evaluators.predict_source(clf, seg_src, 64)
  y, p = r["label_plane"], r["plane"]
  # Images the segmenter finds no head in count as wrong.
  out["plane_segmenter_ellipse"] = {
      "segmenter": seg, "head_counts": counts,
      "accuracy_of_all_test_images": float(np.sum(p.argmax(1) == y) / counts["total"]),
      "accuracy": metrics.accuracy(y, p.argmax(1)),
      "macro_f1": metrics.macro_f1(y, p.argmax(1), 4),
      "abnormal_auroc": metrics.auroc(r["label_abnormal"], r["abnormal"][:, 1])}
  return out


def plane_predictions(workdir: str, splits) -> dict:
  """Per split, a plane run's probabilities and labels on FETAL_PLANES_DB and the
  abnormalities set's normals (the images of `evaluate_run`), with their ids."""

  clf = inference.load(workdir, kind="classifier")
  out = {}
  for split in splits:
    p, y, ids = [], [], []
    for name in ("fpdb", "fba"):
      s = sources.block_source(clf.config.sources[name], split, model_input=clf.config.input,
                               head_table=head_tables.table)
      r = evaluators.predict_source(clf, s, 64)
      p.append(r["plane"])
      y.append(r["label_plane"])
      ids += by_image.ids_of(s)
    out[split] = {"plane": np.concatenate(p), "label_plane": np.concatenate(y), "ids": ids}
  return out


def ensemble_planes(workdirs: list[str]) -> dict:
  """Each plane run and the mean of their probabilities, on validation and test.

  Whether to average is read from validation (macro-F1 over the four planes); the
  test numbers of every member and of the mean are reported beside it.
  """

  splits = ("validation", "test")
  out: dict = {"members": workdirs, **{s: {} for s in splits}}
  per_run = [plane_predictions(w, splits) for w in workdirs]
  for split in splits:
    preds = [r[split] for r in per_run]
    for q in preds[1:]:
      if q["ids"] != preds[0]["ids"] or not np.array_equal(q["label_plane"],
                                                             preds[0]["label_plane"]):
        raise ValueError(f"{split}: the runs did not predict the same images")
    y = preds[0]["label_plane"]
    named = {w: q["plane"] for w, q in zip(workdirs, preds, strict=True)}
    named["mean"] = np.mean([q["plane"] for q in preds], axis=0)
    for name, prob in named.items():
      pred = prob.argmax(1)
      out[split][name] = {"n": int(np.sum(y >= 0)), "accuracy": metrics.accuracy(y, pred),
                          "macro_f1": metrics.macro_f1(y, pred, 4),
                          "macro_f1_tt_tc_tv": metrics.macro_f1(y, pred, classes=[0, 1, 2]),
                          "per_class_f1": [round(float(v), 4) for v in
                                           metrics.per_class_scores(
                                               metrics.confusion_matrix(y, pred, 4))["f1"]]}
  best = max(out["validation"], key=lambda k: out["validation"][k]["macro_f1"])
  out["chosen_on_validation"] = best
  out["test_of_chosen"] = out["test"][best]
  return out


def contact_sheet(config, out_png: pathlib.Path, per_source: int = 16) -> dict:
  """The first aligned crops of each real source's training split, with their ids."""

  tiles, texts, counts = [], [], {}
  for name in ("fpdb", "fba", "hc18"):
    block = config.sources[name]
    src = sources.block_source(block, block.train_split, model_input=config.input,
                               masked=False, head_table=head_tables.table)
    counts[name] = src.head_counts
    step = max(1, len(src) // per_source)
    for i in range(0, min(len(src), step * per_source), step):
      ex = src[i]
      tiles.append(ex["image"][..., 0])
      texts.append(f"{name} {head_tables.example_id(ex)[-18:]}")
  grid = plots.label_grid(tiles, texts, columns=8, thumb=128)
  cv2.imwrite(str(out_png), grid[..., ::-1])
  return counts


def run_arg(run: str, **kw) -> str:
  """The argument of `configs/classify_aligned.py` naming `run` and the keys `kw` given."""
  if "size" in kw:
    kw["size"] = "x".join(str(int(v)) for v in kw["size"])
  values = {"run": run, **kw}
  bad = [k for k, v in values.items() if "," in str(v)]
  if bad:
    raise ValueError(f"{bad}: a value of a config argument holds no comma")
  return ",".join(f"{k}={v}" for k, v in values.items())


def run_configs(*, real: str, seg: str, data_dir: str, workdir: str, steps: int,
                runs=experiments.RUNS, pretrain_steps: int = 300, size=experiments.SIZE,
                input_kind: str = "aligned_head", class_weighting: str = "", seed: int = 0,
                phantom_share: float | None = None, train_groups: float = 1.0) -> dict:
  """{name: the named config} of the contact sheet ("sheet"), the pretraining ("pretrain"),
  and every run, all from `configs/classify_aligned.py`."""
  if phantom_share is None:
    phantom_share = classify_config.PHANTOM_PLANES
  pre = str(pathlib.Path(workdir) / "pretrain")
  data = dict(real=real, seg=seg, data_dir=data_dir)
  out = {"sheet": experiments.get_config(run_arg("abnormal", **data, steps=steps)),
         "pretrain": experiments.get_config(run_arg(
             "pretrain", **data, steps=pretrain_steps, size=size, input=input_kind))}
  for run in runs:
    out[run] = experiments.get_config(run_arg(
        run, **data, steps=steps, size=size,
        init_from=pre if run.endswith("+pretrained") else "", input=input_kind,
        class_weighting=class_weighting, seed=seed, phantom_share=phantom_share,
        train_groups=train_groups))
  return out


def main_run(*, real: str, seg: str, data_dir: str, workdir: str, steps: int,
             runs=experiments.RUNS, num_occlusion: int = 12, pretrain_steps: int = 300,
             sheet: bool = True, size=experiments.SIZE, input_kind: str = "aligned_head",
             class_weighting: str = "", seed: int = 0, phantom_share: float | None = None,
             train_groups: float = 1.0, out: str = "") -> dict:
  if phantom_share is None:
    phantom_share = classify_config.PHANTOM_PLANES
  configs = run_configs(real=real, seg=seg, data_dir=data_dir, workdir=workdir, steps=steps,
                        runs=runs, pretrain_steps=pretrain_steps, size=size,
                        input_kind=input_kind, class_weighting=class_weighting, seed=seed,
                        phantom_share=phantom_share, train_groups=train_groups)
  out_dir = pathlib.Path(workdir)
  out_dir.mkdir(parents=True, exist_ok=True)
  tag = "_".join(r.replace("+", "_") for r in runs)
  out_path = pathlib.Path(out or out_dir / f"aligned_{tag}.json")
  result = {"setup": {"input": input_kind, "size": list(size), "encoder": "resnet 16/32/64",
                      "steps": steps, "class_weighting": class_weighting or "inverse_sqrt",
                      "seed": seed, "phantom_share": phantom_share,
                      "train_groups": train_groups,
                      "batch": 32, "segmenter": seg, "tta": "mean over both 180-degree "
                      "orientations" if input_kind == "aligned_head" else "none"}}
  if sheet:
    result["contact_sheet_counts"] = contact_sheet(configs["sheet"],
                                                   out_dir / "aligned_crops_train.png")
  pre = str(out_dir / "pretrain")
  if any(r.endswith("+pretrained") for r in runs) and not (pathlib.Path(pre) /
                                                            "complete.json").exists():
    t = time.time()
    classify.train_and_evaluate(configs["pretrain"], pre)
    result["pretrain"] = {"steps": pretrain_steps, "seconds": time.time() - t}
  for run in runs:
    c = configs[run]
    w = str(out_dir / run)
    t = time.time()
    if (out_dir / run / "complete.json").exists():   # trained before: measured again only
      result.setdefault("evaluated_again", []).append(run)
    else:
      classify.train_and_evaluate(c, w)
    result[run] = evaluate_run(run, w, c, out_dir, num_occlusion)
    result[run]["train_eval_seconds"] = time.time() - t
    out_path.write_text(json.dumps(result, indent=1, default=float) + "\n")
  return result


def main(argv):
  del argv
  tracking.quiet_library_logs()   # orbax's and grain's INFO chatter
  if _ENSEMBLE.value:
    r = ensemble_planes([os.path.abspath(w) for w in _ENSEMBLE.value])
    pathlib.Path(_WORKDIR.value).mkdir(parents=True, exist_ok=True)
    pathlib.Path(_OUT.value or pathlib.Path(_WORKDIR.value) / "ensemble_planes.json").write_text(
        json.dumps(r, indent=1))
    print(json.dumps(r, indent=1))
    return
  kw = dict(real=os.path.abspath(_REAL.value), seg=os.path.abspath(_SEG.value),
            data_dir=_DATA_DIR.value, workdir=_WORKDIR.value, steps=_STEPS.value,
            runs=_RUNS.value, pretrain_steps=_PRETRAIN_STEPS.value,
            size=tuple(int(v) for v in _SIZE.value), input_kind=_INPUT.value,
            class_weighting=_CLASS_WEIGHTING.value, seed=_SEED.value,
            phantom_share=_PHANTOM_SHARE.value, train_groups=_TRAIN_GROUPS.value)
  if _DRY_RUN.value:
    print(json.dumps({n: c.to_dict() for n, c in run_configs(**kw).items()}, indent=1))
    return
  r = main_run(**kw, num_occlusion=_OCCLUSION.value, sheet=not _NO_SHEET.value, out=_OUT.value)
  print(json.dumps(r, indent=1, default=float))


if __name__ == "__main__":
  app.run(main)
