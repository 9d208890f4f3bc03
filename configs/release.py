r"""The shipped bundle's recipe: every model of `models/fbjax_head_v1`, from the public data.

  python -m launch.release --real_data ../shared/data --work ~/runs/release \
      --out models/fbjax_head_v1
  python -m launch.release --config configs/release.py:smoke --real_data ../shared/data \
      --work /tmp/release_smoke --out /tmp/release_smoke/bundle      # the test suite's

Arguments (after the colon): `smoke` (toy-sized networks, a few steps and the
first `SMOKE_EXAMPLES` images of every split: the whole recipe in a few
minutes, for the tests; nothing it makes is meant to be used).

`models` lists the trainings, each a `launch.train` command: a config file
with its argument and `--config.key=value` overrides, in which `{real_data}`,
`{data_dir}` and `{work}` (the training workdirs' parent) are filled in at run
time, and `after`: the models that must be trained first ("name" or
"name:started", whose config.json must only exist: stage 2 trains on crops
around the reference ellipse and needs stage 1 only at inference). The
settings are the project's best measured ones:

  seg_stage1  the coarse U-Net (HC18 + phantom, 128x192, 1,500 steps: the CPU budget of
              docs/segment_coarse_fine.md)
  seg_stage2  the crop U-Net behind it (160x160, boundary-weighted loss, 1,200 steps)
  anomaly_ae  the autoencoder of the unsupervised anomaly score: normal images of the
              three real sets, 64 px, the small encoder, 600 steps (docs/classify_benchmark.md)
  planes      the plane head on aligned heads cut around the two-stage segmenter's
              ellipse (`heads=planes`, 5,000 steps; docs/classify_segmenter_crops_cpu.json)
  abnormal    the abnormal and condition heads on the same crops (`heads=abnormal`, 3,000
              steps), decision threshold on the pooled validation normals of the
              abnormalities set and FETAL_PLANES_DB

Every training runs on one CPU core (`max_jobs` at once); on 2 cores the
recipe takes about two hours (manifest: `wall_time_s` per model).
"""

from __future__ import annotations

import ml_collections

from configs import common

NAME = "fbjax_head_v1"
VERSION = "1.2.0"
# The smoke recipe reads the first N images of every split of every source.
SMOKE_EXAMPLES = 24
ORDER = ("seg_stage1", "seg_stage2", "anomaly_ae", "planes", "abnormal")


def _model(config: str, overrides=(), after=()) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(config=config, overrides=tuple(overrides),
                                        after=tuple(after)))


def _data(*blocks: str) -> list[str]:
  out = []
  for b in blocks:
    out.append(f"{b}.data_dir={{data_dir}}")
  return out


def _real(*blocks: str) -> list[str]:
  return [f"sources.{b}.manual_dir={{real_data}}" for b in blocks]


def get_config(arg=None):
  arg = common.parse_arg(arg, smoke=False)
  c = ml_collections.ConfigDict()
  c.name = NAME
  c.version = VERSION
  c.smoke = bool(arg.smoke)
  c.seed = 0
  c.order = ORDER         # the training order (each starts once its `after` is met)
  c.max_jobs = 2          # trainings at once, each pinned to one CPU core
  c.wandb_mode = "disabled"
  # Data sets the recipe reads (builder, config, the folder under --real_data it comes
  # from, for the fingerprint).
  c.data = ml_collections.ConfigDict(dict(
      hc18=dict(builder="hc18", config="", folder="hc18"),
      fetal_planes_db=dict(builder="fetal_planes_db", config="brain_combined",
                           folder="fetal_planes_db,fetal_planes_db_640"),
      fetal_brain_abnormalities=dict(builder="fetal_brain_abnormalities", config="",
                                     folder="fetal_brain_abnormalities"),
      phantom=dict(builder="fetal_brain_synth", config="small", folder="")))
  seg_data = ["sources.hc18.manual_dir={real_data}/hc18",
              *_data("sources.hc18", "sources.phantom"),
              "wandb.mode={wandb_mode}", "seed={seed}"]
  cls_data = ["real_data={real_data}", *_real("fba", "fpdb", "hc18"),
              *_data("sources.fba", "sources.fpdb", "sources.hc18", "sources.phantom"),
              "wandb.mode={wandb_mode}", "seed={seed}"]
  c.models = ml_collections.ConfigDict()
  c.models.seg_stage1 = _model("configs/segment.py:data=mix", [
      *seg_data, "total_steps=1500", "eval_every=1500", "checkpoint_every=250"])
  c.models.seg_stage2 = _model("configs/segment.py:data=mix,stage=2", [
      *seg_data, "stage1_workdir={work}/seg_stage1", "total_steps=1200", "eval_every=1200",
      "checkpoint_every=200"], after=["seg_stage1:started"])
  c.models.anomaly_ae = _model(
      "configs/classify.py:data=real,variant=autoencoder,size=64,encoder=small",
      [*cls_data, "total_steps=600", "eval_every=150", "checkpoint_every=150"])
  aligned = "configs/classify.py:data=real,input=aligned_head,seg_workdir={work}/seg_stage2"
  c.models.planes = _model(f"{aligned},heads=planes", [*cls_data, "checkpoint_every=500"],
                           after=["seg_stage1", "seg_stage2"])
  c.models.abnormal = _model(f"{aligned},heads=abnormal", [*cls_data, "checkpoint_every=500"],
                             after=["seg_stage1", "seg_stage2"])
  # The unsupervised anomaly score: the autoencoder's features of the normal training
  # images (a Ledoit-Wolf Gaussian) and its threshold at `specificity` on the validation
  # normals of `calibration_sources` (the abnormalities set's and FETAL_PLANES_DB's,
  # as the abnormal head's decision threshold).
  c.anomaly = ml_collections.ConfigDict(dict(
      autoencoder="anomaly_ae", specificity=0.95, calibration_sources=("fba", "fpdb"),
      max_fit_images=2000))
  # Storage of the shipped weights: float16 (half the size); the reference-output tests
  # bound how far the predictions move (`bundle.TOLERANCES`).
  c.weights_dtype = "float16"

  if arg.smoke:
    tiny_seg = ["model.width=4", "model.depth=3", "model.max_width=16", "model.groups=2",
                "sources.phantom.config=tiny", "batch_size=8", "eval_batch_size=8"]
    for name, steps, size in (("seg_stage1", 150, "(48, 72)"), ("seg_stage2", 100, "(48, 48)")):
      m = c.models[name]
      m.overrides = tuple(o for o in m.overrides if not o.startswith(
          ("total_steps", "eval_every", "checkpoint_every"))) + (
              f"total_steps={steps}", f"eval_every={steps}", f"checkpoint_every={steps}",
              f"input.size={size}", *tiny_seg,
              f"sources.hc18.max_examples={SMOKE_EXAMPLES}",
              f"sources.phantom.max_examples={SMOKE_EXAMPLES}")
    c.models.seg_stage2.overrides += ("crop.copies=1",)
    for name in ("anomaly_ae", "planes", "abnormal"):
      m = c.models[name]
      m.overrides = tuple(o for o in m.overrides if not o.startswith(
          ("total_steps", "eval_every", "checkpoint_every"))) + (
              "total_steps=3", "eval_every=3", "checkpoint_every=3", "batch_size=8",
              "eval_batch_size=16", "sources.phantom.config=tiny", "model.ae.widths=(4, 8)",
              "model.ae.latent_channels=4", "model.ae.latent_dim=8", "model.ae.groups=2",
              "model.hidden=8", *(f"sources.{b}.max_examples={SMOKE_EXAMPLES}"
                                  for b in ("fba", "fpdb", "hc18", "phantom")))
    c.anomaly.max_fit_images = 64
    c.data.phantom.config = "tiny"
  return c
