r"""Predicts planes, anomalies and head biometry for every image of a folder.

  python -m launch.predict --workdir ~/runs/cls --seg_workdir ~/runs/seg \
      --input ~/scans/ --out ~/scans_out --pixel_spacing_mm 0.15
  python -m launch.predict --workdir ~/runs/cls --seg_workdir ~/runs/seg \
      --input "../shared/data/hc18/test_set/*.png" --out /tmp/hc18_test \
      --spacing_csv ../shared/data/hc18/test_set_pixel_size.csv

Writes OUT/predictions.csv (one row per image), OUT/errors.csv (unreadable
files and why), OUT/overlays/*.png, OUT/report.html and OUT/summary.json
(see fbjax/predict.py). HC/BPD/OFD are in mm where the pixel spacing is known
(from --spacing_csv or --pixel_spacing_mm), and always in pixels.
"""

from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", None, "Trained classification workdir "
                               "(configs/classify.py), with its anomaly model.")
_SEG = flags.DEFINE_string("seg_workdir", None, "Trained segmentation workdir (optional).")
_INPUT = flags.DEFINE_string("input", None, "A folder (every file below it), a glob or a file.")
_OUT = flags.DEFINE_string("out", None, "Output folder.")
_SPACING_CSV = flags.DEFINE_string("spacing_csv", None, "CSV with a file column and a pixel "
                                   "spacing (mm) column.")
_SPACING = flags.DEFINE_float("pixel_spacing_mm", None, "Pixel spacing of every image (mm).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Images per device batch.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Threads reading images and post-processing.")
_OVERLAYS = flags.DEFINE_integer("num_overlays", -1, "Overlay PNGs to write (-1: all).")
_THRESHOLD = flags.DEFINE_float("abnormal_threshold", None, "Decision threshold of the "
                                "abnormal probability (default: the workdir's calibrated one).")
_REPORT = flags.DEFINE_bool("report", True, "Write report.html.")
_WANDB = flags.DEFINE_enum("wandb", None, ["online", "offline", "disabled"],
                           "Also log the summary and figures to wandb in this mode.")
flags.mark_flags_as_required(["input", "out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _WORKDIR.value and not _SEG.value:
    raise app.UsageError("give --workdir and/or --seg_workdir")
  if _SPACING_CSV.value and _SPACING.value:
    raise app.UsageError("give --spacing_csv or --pixel_spacing_mm, not both")
  from fbjax import predict  # noqa: PLC0415

  predict.run(_WORKDIR.value, _SEG.value, _INPUT.value, _OUT.value,
              spacing_csv=_SPACING_CSV.value, pixel_spacing_mm=_SPACING.value,
              batch_size=_BATCH.value, workers=_WORKERS.value, num_overlays=_OVERLAYS.value,
              report=_REPORT.value, abnormal_threshold=_THRESHOLD.value,
              wandb_mode=_WANDB.value)


if __name__ == "__main__":
  app.run(main)
