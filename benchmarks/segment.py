r"""Segmentation + biometry benchmark: train, measure on HC18 and the phantom, speed.

  # CPU (2 cores): the default config (128x192), HC18 + phantom mixed; as many
  # steps as fit in 30 minutes (10 for the phantom-only model) at the speed
  # measured just before training
  python -m benchmarks.segment --hc18 ../shared/data/hc18 --workdir /tmp/segbench
  # Accelerator: HC18's aspect at 256x384, bigger U-Net (variant=device),
  # fixed 1500 steps, no transfer stage, no prototype (a CPU-only baseline)
  python -m benchmarks.segment --device --hc18 ../shared/data/hc18 --workdir /tmp/segbench_dev

Stages (`--stages`, comma separated; default all):
  train     train the mixed model (config data=mix), timed
  hc18      evaluate it on HC18's validation split (split by group), all ellipse
            methods side by side, plus the prototype baseline (no network)
  stage2    train the second stage of coarse-to-fine segmentation (config
            stage=2: head crops around the reference ellipse, jittered) behind
            the mixed model, timed (`--stage2_steps`, default as many steps as
            fit in --stage2_train_minutes)
  hc18_two_stage  both stages on HC18's validation split (`fbjax.evaluation.coarse_fine`)
  phantom_two_stage  both stages on the phantom's test split
  phantom   evaluate it on the phantom's test split
  transfer  train a phantom-only model (data=phantom) and evaluate it on HC18 validation;
            `--transfer_augment` randomize (default: configs/segment.py augment=randomize,
            domain randomisation) or default (the mixed model's mild augmentation)
  speed     inference images/s at the training resolution: batch-1 latency and
            batch-32 throughput, each including the biometry post-processing;
            with a second stage, the same for both stages (from the original
            image) and the ratio to the single stage

Every HC18 evaluation reports the error by tercile of the reference HC
(small / middle / large heads) and the number of images above 10 % error.
`--data hc18` trains both stages on HC18 alone (no phantom in the mix).

Prints one JSON object (also written to `--out`, default `<workdir>/benchmark.json`)
and a markdown results table (`<workdir>/benchmark.md`). Targets: HC18 validation
Dice(head) >= 0.975, mean |HC error| <= 2.0 mm and no image above 10 %
relative HC error (published learned methods: 1.77-1.95 mm on HC18's test
set); phantom test Dice >= 0.98 (head, brain) and HC error <= 1 %.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from configs import segment as segment_config
from fbjax.core import schema
from fbjax.data import pipeline, sources
from fbjax.evaluation import inference, segment_eval
from fbjax.geometry import biometry, segment_post
from fbjax.jobs import evaluate
from fbjax.models import losses
from fbjax.runtime import tracking
from fbjax.runtime.optim import make_optimizer
from fbjax.trainers import segment

_HC18 = flags.DEFINE_string(
    "hc18", os.path.join(os.environ.get("FBJAX_REAL_DATA", "../shared/data"), "hc18"),
    "HC18 manual folder (training_set/, CSVs).")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/fbjax_segment_benchmark", "Output folder.")
_OUT = flags.DEFINE_string("out", "", "JSON path, read first (stages of an earlier run are "
                           "kept) and written (default: <workdir>/benchmark.json).")
_DEVICE = flags.DEFINE_bool("device", False, "Accelerator-sized run (variant=device).")
_STEPS = flags.DEFINE_integer("steps", None, "Training steps of the main model "
                              "(default: as many as fit in --train_minutes on CPU).")
_PHANTOM_STEPS = flags.DEFINE_integer("phantom_steps", None, "Steps of the phantom-only model "
                                      "(default: as many as fit in --phantom_train_minutes).")
_MINUTES = flags.DEFINE_float("train_minutes", 30.0, "CPU: wall-clock budget of the main "
                              "training (setup, compilation and its final validation included).")
_PHANTOM_MINUTES = flags.DEFINE_float("phantom_train_minutes", 10.0,
                                      "CPU: budget of the phantom-only training.")
_STAGES = flags.DEFINE_list("stages", None, "Stages to run (default: all on CPU; "
                            "train,hc18,phantom,speed with --device).")
_PHANTOM_CONFIG = flags.DEFINE_string("phantom_config", "small",
                                      "fetal_brain_synth builder config (small: 128 px, "
                                      "built in about a minute).")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "tfds data_dir (default: fbjax's cache).")
_OVERLAYS = flags.DEFINE_integer("num_overlays", 16, "Overlays written per evaluation.")
_SPEED_REPEATS = flags.DEFINE_integer("speed_repeats", 20, "Timed repeats per speed case.")
_STAGE2_STEPS = flags.DEFINE_integer("stage2_steps", None, "Steps of the second stage "
                                     "(default: as many as fit in --stage2_train_minutes).")
_STAGE2_MINUTES = flags.DEFINE_float("stage2_train_minutes", 30.0,
                                     "CPU: budget of the second stage's training.")
_DATA = flags.DEFINE_enum("data", "mix", ["mix", "hc18"], "Training data of both stages.")
_TRANSFER_AUGMENT = flags.DEFINE_enum("transfer_augment", "randomize", ["default", "randomize"],
                                      "Training augmentation of the phantom-only model "
                                      "(configs/segment.py augment=...).")
_AUGMENT = flags.DEFINE_enum("augment", "default", ["default", "randomize"],
                             "Training augmentation of the main model and the second stage "
                             "(configs/segment.py augment=...).")

# Device: fixed step counts (< 4 minutes on one H100). CPU: the step count that fits
# the time budget at the speed measured just before training (see `_fit_steps`).
DEVICE_STEPS = (1500, 600)
# Seconds of a training run that are not update steps: setup, compilation, the
# final validation of both data sets, the checkpoint.
OVERHEAD_S = 150.0


def _fit_steps(c, minutes: float, safety: float = 0.85) -> tuple[int, float]:
  """Steps of `c`'s update that fit in `minutes`, timed on a synthetic batch now."""

  model = segment.make_model(c)
  size, b = schema.size_of(c), c.batch_size
  x = jnp.full((b, *size), 0.5)
  t = jnp.zeros((b, *size, 3))
  present = jnp.ones((b, 3), bool)
  params = model.init(jax.random.key(0), x[:1])["params"]
  tx = make_optimizer(c.optimizer, c.optimizer.lr)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt):
    loss, g = jax.value_and_grad(lambda p: losses.segmentation_loss(
        model.apply({"params": p}, x)[0], t, present, **c.loss)[0])(params)
    u, opt = tx.update(g, opt, params)
    return jax.tree.map(lambda a, d: a + d, params, u), opt, loss

  params, opt, loss = step(params, opt)
  loss.block_until_ready()
  t0 = time.perf_counter()
  n = 8
  for _ in range(n):
    params, opt, loss = step(params, opt)
  loss.block_until_ready()
  step_s = (time.perf_counter() - t0) / n
  return max(10, int(safety * (60.0 * minutes - OVERHEAD_S) / step_s)), step_s


def _config(data: str, steps: int, stage: int = 1, augment: str = "default"):
  arg = (f"data={data}" + (",variant=device" if _DEVICE.value else "") + f",stage={stage}"
         + f",augment={augment}")
  c = segment_config.get_config(arg)
  c.sources.hc18.manual_dir = os.path.abspath(_HC18.value)
  c.sources.phantom.config = _PHANTOM_CONFIG.value
  if _DATA_DIR.value:
    c.sources.hc18.data_dir = c.sources.phantom.data_dir = _DATA_DIR.value
  c.total_steps = steps
  c.eval_every = steps            # validate once, at the end
  c.checkpoint_every = steps
  c.wandb.mode = os.environ.get("WANDB_MODE", "disabled")
  return c


def _stage2_config(steps: int, work: pathlib.Path):
  c = _config(_DATA.value, steps, stage=2, augment=_AUGMENT.value)
  c.stage1_workdir = str(work / "mix")
  return c


def _train(c, workdir):
  t0 = time.perf_counter()
  segment.train_and_evaluate(c, workdir)
  return time.perf_counter() - t0


def _evaluate(c, workdir: str, *, data: str, **kwargs) -> dict:
  """The original-resolution summary of `fbjax.jobs.evaluate` (the `launch.evaluate` one)."""

  full = evaluate.evaluate_workdir(workdir, c, data=data, **kwargs)
  entry = full["sources"][data]
  return {**entry["original_resolution"], "grid": entry["grid"]}


def _headline(summary: dict) -> dict:
  out = {"num_images": summary["num_images"]}
  for k, v in summary.items():
    if isinstance(v, dict) and "mean" in v and ("dice" in k or "hc_" in k or "hd95" in k):
      out[k] = {"mean": v["mean"], "median": v["median"], "p95": v["p95"],
                "n_finite": v["n_finite"]}
    elif k.endswith(("_fail_rate", "_n_over_10pct", "_hc_terciles")):
      out[k] = v
  return out


def _speed(c, workdir, repeats: int) -> dict:
  """Per-image time of letterbox + network(s) + head ellipse + mm, on decoded images
  (a two-stage workdir: both stages, from the fine grid)."""

  model = inference.load(workdir, kind="segmenter")
  predict = model.make_predict()
  size = tuple(model.size)
  source = sources.block_source(c.sources.hc18, c.sources.hc18.val_split)
  exs = [source[i] for i in range(32)]
  originals = [{"image": pipeline.grey(ex["image"])[..., None]} for ex in exs]
  spacings = [float(ex["pixel_spacing_mm"]) for ex in exs]

  def run(idx):
    grid = [segment_eval.grid_input(originals[i], size) for i in idx]
    t0 = time.perf_counter()
    probs = np.asarray(predict(np.stack([x for x, _ in grid])))
    t1 = time.perf_counter()
    hc = [biometry.biometry_from_ellipse(segment_post.head_ellipse(
        c.eval_method, prob=p[..., 0], geometry=g), spacings[i]).hc_mm
        for p, (_, g), i in zip(probs, grid, idx, strict=True)]
    return t1 - t0, hc

  out = {"size": list(size), "method": c.eval_method, "backend": jax.default_backend(),
         "devices": [str(d) for d in jax.devices()], "cpu_count": os.cpu_count()}
  for bs in (1, 32):
    run(list(range(bs)))          # compile
    times, net = [], []
    for r in range(repeats if bs == 1 else max(3, repeats // 4)):
      idx = [(r * bs + k) % 32 for k in range(bs)]
      t0 = time.perf_counter()
      t_net, _ = run(idx)
      times.append(time.perf_counter() - t0)
      net.append(t_net)
    med = float(np.median(times))
    out[f"batch{bs}"] = {"seconds_median": med, "images_per_s": bs / med,
                         "network_seconds_median": float(np.median(net)),
                         "repeats": len(times)}
  out["batch1_latency_ms"] = out["batch1"]["seconds_median"] * 1e3
  out["batch32_images_per_s"] = out["batch32"]["images_per_s"]
  return out


def _table(res: dict) -> str:
  lines = []
  methods = ("prototype", "plain", "direct", "robust")
  for key, title in (("hc18_validation", "HC18 validation (by group)"),
                     ("hc18_validation_two_stage", "HC18 validation (by group), two stages"),
                     ("phantom_test", "Phantom test"),
                     ("phantom_test_two_stage", "Phantom test, two stages"),
                     ("transfer_hc18_validation", "Phantom-only model on HC18 validation")):
    s = res.get(key)
    if not s:
      continue
    lines += [f"### {title} ({s['num_images']} images)", "",
              "| method | Dice head (mask) | Dice head (ellipse) | mean abs HC error (mm) | "
              "median (mm) | mean rel HC error (%) | fit failures |",
              "|---|---|---|---|---|---|---|"]
    for m in methods:
      if f"{m}_hc_abs_mm" not in s:
        continue
      mask_dice = s.get("prototype_dice_head" if m == "prototype" else "seg_dice_head", {})
      lines.append(
          f"| {m} | {mask_dice.get('mean', float('nan')):.4f} | "
          f"{s[f'{m}_dice_ellipse']['mean']:.4f} | {s[f'{m}_hc_abs_mm']['mean']:.2f} | "
          f"{s[f'{m}_hc_abs_mm']['median']:.2f} | {100 * s[f'{m}_hc_rel']['mean']:.2f} | "
          f"{s[f'{m}_fail_rate']:.3f} |")
    if s.get("robust_hc_terciles"):
      lines += ["", "| robust fit, by reference HC | HC range (mm) | images | mean abs HC "
                "error (mm) | median (mm) | ellipse Dice | > 10 % error |",
                "|---|---|---|---|---|---|---|"]
      for name, t in s["robust_hc_terciles"].items():
        lo, hi = t["ref_hc_mm_range"]
        lines.append(f"| {name} | {lo:.0f}-{hi:.0f} | {t['n']} | {t['hc_abs_mm_mean']:.2f} | "
                     f"{t['hc_abs_mm_median']:.2f} | {t['dice_ellipse_mean']:.4f} | "
                     f"{t['n_over_10pct']} |")
    extra = [f"{c} {s[f'seg_dice_{c}']['mean']:.4f}" for c in ("skull", "brain")
             if s.get(f"seg_dice_{c}", {}).get("n_finite")]
    if extra:
      lines += ["", "Network Dice: " + ", ".join(extra)]
    lines.append("")
  return "\n".join(lines)


def main(argv):
  del argv
  os.environ.setdefault("WANDB_MODE", "disabled")

  work = pathlib.Path(_WORKDIR.value).resolve()  # orbax needs absolute paths
  work.mkdir(parents=True, exist_ok=True)
  steps, phantom_steps = DEVICE_STEPS if _DEVICE.value else (None, None)
  steps = _STEPS.value or steps
  phantom_steps = _PHANTOM_STEPS.value or phantom_steps
  main_c = _config(_DATA.value, steps or 1, augment=_AUGMENT.value)
  res_path = pathlib.Path(_OUT.value) if _OUT.value else work / "benchmark.json"
  res = json.loads(res_path.read_text()) if res_path.exists() else {}
  res["command"] = " ".join(sys.argv)
  res["device"] = _DEVICE.value

  res["jax_devices"] = [f"{d.platform}:{getattr(d, 'device_kind', '')}" for d in jax.devices()]
  res["cpu_count"] = os.cpu_count()
  stages = set(_STAGES.value or (
      ["train", "hc18", "phantom", "stage2", "hc18_two_stage", "phantom_two_stage",
       "speed"] if _DEVICE.value else
      ["train", "hc18", "phantom", "transfer", "stage2", "hc18_two_stage",
       "phantom_two_stage", "speed"]))
  methods = ("plain", "direct", "robust") if _DEVICE.value else segment_post.METHODS

  def save():
    res_path.write_text(json.dumps(tracking.jsonable(res), indent=1, default=str))

  if "train" in stages:
    if not steps:
      steps, step_s = _fit_steps(main_c, _MINUTES.value)
      res["train_budget"] = {"minutes": _MINUTES.value, "measured_step_s": step_s}
      main_c = _config(_DATA.value, steps, augment=_AUGMENT.value)
    res["train_seconds"] = _train(main_c, str(work / "mix"))
    res["train_steps"] = steps
    res["augment"] = _AUGMENT.value
    res["train_config"] = {"size": list(schema.size_of(main_c)), "model": dict(main_c.model),
                           "batch_size": main_c.batch_size,
                           "weights": {n: float(b.weight)
                                       for n, b in main_c.sources.items()}}
    save()
  if "hc18" in stages:
    s = _evaluate(main_c, str(work / "mix"), data="hc18", split="validation",
                                    out_dir=str(work / "eval_hc18_validation"),
                                    methods=methods, num_overlays=_OVERLAYS.value)
    res["hc18_validation"] = _headline(s)
    save()
  if "phantom" in stages:
    s = _evaluate(main_c, str(work / "mix"), data="phantom", split="test",
                                    out_dir=str(work / "eval_phantom_test"),
                                    methods=("plain", "direct", "robust"),
                                    num_overlays=_OVERLAYS.value)
    res["phantom_test"] = _headline(s)
    save()
  if "transfer" in stages:
    aug = _TRANSFER_AUGMENT.value
    pc = _config("phantom", phantom_steps or 1, augment=aug)
    if not phantom_steps:
      phantom_steps, step_s = _fit_steps(pc, _PHANTOM_MINUTES.value)
      res["transfer_budget"] = {"minutes": _PHANTOM_MINUTES.value, "measured_step_s": step_s}
      pc = _config("phantom", phantom_steps, augment=aug)
    res["transfer_augment"] = aug
    res["transfer_train_seconds"] = _train(pc, str(work / "phantom_only"))
    res["transfer_train_steps"] = phantom_steps
    s = _evaluate(pc, str(work / "phantom_only"), data="hc18",
                                    split="validation", out_dir=str(work / "eval_transfer"),
                                    methods=("plain", "direct", "robust"),
                                    num_overlays=_OVERLAYS.value)
    res["transfer_hc18_validation"] = _headline(s)
    save()
  if "stage2" in stages:
    s2 = _STAGE2_STEPS.value or (DEVICE_STEPS[0] if _DEVICE.value else None)
    c2 = _stage2_config(s2 or 1, work)
    if not s2:
      s2, step_s = _fit_steps(c2, _STAGE2_MINUTES.value)
      res["stage2_budget"] = {"minutes": _STAGE2_MINUTES.value, "measured_step_s": step_s}
      c2 = _stage2_config(s2, work)
    res["stage2_train_seconds"] = _train(c2, str(work / "stage2"))
    res["stage2_train_steps"] = s2
    res["stage2_config"] = {"crop_size": list(schema.size_of(c2)), "crop": dict(c2.crop),
                            "fine_size": list(c2.fine_size), "model": dict(c2.model),
                            "loss": dict(c2.loss)}
    save()
  for stage, data, split, key in (("hc18_two_stage", "hc18", "validation", "hc18_validation"),
                                  ("phantom_two_stage", "phantom", "test", "phantom_test")):
    if stage in stages:
      s = _evaluate(_stage2_config(1, work), str(work / "stage2"), data=data, split=split,
                    out_dir=str(work / f"eval_{key}_two_stage"),
                    methods=("plain", "direct", "robust"), num_overlays=_OVERLAYS.value)
      res[f"{key}_two_stage"] = _headline(s)
      save()
  if "speed" in stages:
    res["speed"] = _speed(main_c, str(work / "mix"), _SPEED_REPEATS.value)
    if (work / "stage2" / "config.json").exists():
      two = _speed(main_c, str(work / "stage2"), _SPEED_REPEATS.value)
      res["speed_two_stage"] = {
          **two, "latency_ratio_to_single": two["batch1_latency_ms"]
          / res["speed"]["batch1_latency_ms"],
          "throughput_ratio_to_single": two["batch32_images_per_s"]
          / res["speed"]["batch32_images_per_s"]}
    save()
  table = _table(res)
  (work / "benchmark.md").write_text(table)
  print(table)
  print(json.dumps(tracking.jsonable(res), indent=1, default=str))


if __name__ == "__main__":
  app.run(main)
