r"""Predicts planes, anomalies and head biometry for every image of a folder.

  python -m launch.predict --input ~/scans/ --out ~/scans_out --spacing_csv ~/scans/px.csv
  python -m launch.predict --workdir ~/runs/cls --seg_workdir ~/runs/seg \
      --input ~/scans/ --out ~/scans_out --pixel_spacing_mm 0.15
  python -m launch.predict --workdir ~/runs/cls --seg_workdir ~/runs/seg \
      --input ../shared/data/hc18/test_set --out /tmp/hc18_test \
      --spacing_csv ../shared/data/hc18/test_set_pixel_size.csv

With no --workdir and no --seg_workdir it runs the shipped bundle
(models/fbjax_head_v1: the two-stage head segmenter, the aligned-head plane and
abnormal/condition classifiers, calibrated, and the anomaly model; its model
card is models/fbjax_head_v1/docs/README.md). Writes OUT/predictions.csv (one row per
image), OUT/errors.csv (files that
should be images but cannot be read, and why), OUT/skipped.csv (other files),
OUT/overlays/*.png, OUT/report.html and OUT/summary.json (see
fbjax/predict/__init__.py). HC/BPD/OFD are in mm where the pixel spacing is known
(from --spacing_csv or --pixel_spacing_mm), and always in pixels. A classifier
trained on the aligned head (config.json `input.kind: "aligned_head"`) needs
--seg_workdir: it reads the head cut out around the segmenter's ellipse
(OUT/crops/). An image in which the segmenter's head shows no evidence of a
fetal head (fbjax/geometry/head_gate.py) gets seg_quality "no_head", the reason in
no_head_reason, and no plane, condition, abnormal or biometry.

Speed: --segmenter_tta off runs the segmenter once per image instead of on the
image and its mirror image (the workdir's eval_flip), about 1.4x the images
per second on 2 CPU cores; HC18 validation error 2.08 -> 2.13 mm (README).

Resuming: rows are appended batch by batch; the same command again (same
--input and --out) predicts only the files without a row or an error row.

Sharding: --num_shards N --shard_index I predicts the files whose relative
path hashes to I (defaults: jax.process_count() / jax.process_index(), i.e.
one shard per process under jax.distributed). Each shard writes under
OUT/shards/; the last one to finish merges them, or run

  python -m launch.predict --merge OUT

(launch/slurm/predict_array.sh runs the shards as a SLURM job array.)
"""

import jax
from absl import app, flags

from fbjax import predict
from fbjax.core import bundle
from fbjax.runtime import parallel

_WORKDIR = flags.DEFINE_string("workdir", None, "Trained classification workdir "
                               "(configs/classify.py), with its anomaly model, or a bundle "
                               "(default, with --seg_workdir unset too: the shipped bundle "
                               "models/fbjax_head_v1).")
_SEG = flags.DEFINE_string("seg_workdir", None, "Trained segmentation workdir or bundle "
                           "(optional when --workdir is given).")
_INPUT = flags.DEFINE_string("input", None, "A folder (every image below it), a glob or a file.")
_OUT = flags.DEFINE_string("out", None, "Output folder.")
_SPACING_CSV = flags.DEFINE_string("spacing_csv", None, "CSV with a file column and a pixel "
                                   "spacing (mm) column.")
_SPACING_COLUMN = flags.DEFINE_string("spacing_column", None, "The pixel spacing column of "
                                      "--spacing_csv (default: the one column named like a "
                                      "pixel size / spacing; an error when ambiguous).")
_SPACING = flags.DEFINE_float("pixel_spacing_mm", None, "Pixel spacing of every image (mm).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Images per device batch.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Threads reading images and post-processing.")
_OVERLAYS = flags.DEFINE_integer("num_overlays", -1, "Overlay PNGs to write (-1: all); the "
                                 "images the report shows always get theirs.")
_THRESHOLD = flags.DEFINE_float("abnormal_threshold", None, "Decision threshold of the "
                                "abnormal probability before calibration, the scale of "
                                "decision.json and launch.evaluate (default: the workdir's "
                                "decision.json; an error if it has none).")
_REPORT = flags.DEFINE_bool("report", True, "Write report.html.")
_SEG_TTA = flags.DEFINE_enum("segmenter_tta", "workdir", ["workdir", "on", "off"],
                             "The segmenter's mirror averaging: as its workdir's eval_flip says, "
                             "or on / off (off: the segmenter runs once per image, not twice).")
_SEG_STAGES = flags.DEFINE_enum("segmenter_stages", "all", ["all", "1"],
                                "all: every stage of the segmenter (the bundle's two); 1: only "
                                "the first stage of a two-stage one (faster, less accurate).")
_OTHER_SEG = flags.DEFINE_bool("other_segmenter", False, "Let an aligned-head classifier read "
                                "the crops of a segmenter other than the one its training "
                                "crops came from (by default an error names both).")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", None, "Shards of the input (default: "
                                   "jax.process_count()).")
_SHARD = flags.DEFINE_integer("shard_index", None, "This process's shard (default: "
                              "jax.process_index()).")
_MERGE = flags.DEFINE_string("merge", None, "Only merge the complete shards under this output "
                             "folder into one CSV, errors file, summary and report.")
_DISTRIBUTED = flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                                 "Initialise jax.distributed (auto: when the environment "
                                 "describes several processes).")
_WANDB = flags.DEFINE_enum("wandb", None, ["online", "offline", "disabled"],
                           "Also log the summary and figures to wandb in this mode.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")

  if _MERGE.value:
    predict.merge(_MERGE.value, wandb_mode=_WANDB.value)
    return
  if not _INPUT.value or not _OUT.value:
    raise app.UsageError("give --input and --out (or --merge OUT)")
  workdir, seg_workdir = _WORKDIR.value, _SEG.value
  if not workdir and not seg_workdir:

    workdir = seg_workdir = bundle.DEFAULT
    print(f"no model given: the shipped bundle {bundle.resolve(bundle.DEFAULT)}")
  if _SPACING_CSV.value and _SPACING.value:
    raise app.UsageError("give --spacing_csv or --pixel_spacing_mm, not both")
  if _SPACING_COLUMN.value and not _SPACING_CSV.value:
    raise app.UsageError("--spacing_column needs --spacing_csv")
  num_shards, shard_index = _NUM_SHARDS.value, _SHARD.value
  if num_shards is None or shard_index is None:


    parallel.initialize(_DISTRIBUTED.value)
    num_shards = jax.process_count() if num_shards is None else num_shards
    shard_index = jax.process_index() if shard_index is None else shard_index
  try:
    predict.run(workdir, seg_workdir, _INPUT.value, _OUT.value,
                spacing_csv=_SPACING_CSV.value, spacing_column=_SPACING_COLUMN.value,
                pixel_spacing_mm=_SPACING.value, batch_size=_BATCH.value,
                workers=_WORKERS.value, num_overlays=_OVERLAYS.value, report=_REPORT.value,
                abnormal_threshold=_THRESHOLD.value, num_shards=num_shards,
                shard_index=shard_index, wandb_mode=_WANDB.value,
                seg_tta=predict.SEG_TTA[_SEG_TTA.value],
                seg_stages=None if _SEG_STAGES.value == "all" else int(_SEG_STAGES.value),
                other_segmenter=_OTHER_SEG.value)
  except (FileNotFoundError, ValueError) as e:   # a workdir or flag that cannot be used
    raise app.UsageError(str(e)) from e


if __name__ == "__main__":
  app.run(main)
