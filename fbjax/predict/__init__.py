"""Prediction over a folder of images: one CSV row per image, overlays and an HTML report.

    from fbjax import predict
    summary = predict.run("runs/cls", "runs/seg", "images/", "out/", pixel_spacing_mm=0.15)
    summary = predict.run("fbjax_head_v1", "fbjax_head_v1", "images/", "out/")  # the bundle
    rows = predict.predict_images(["scan.png", array])     # no files written (the bundle)

Per image: the image is read (`fbjax.data.io`: PNG/JPEG, 8/16-bit, grey/RGB/
RGBA) and letterboxed onto each model's grid; the classifier
(`fbjax.evaluation.inference.load`, with its enhancement chain) gives the plane,
abnormal and condition probabilities; the autoencoder of `<workdir>/anomaly/`
gives the anomaly score; the segmentation model (`seg_workdir`, optional)
gives head / skull / brain probabilities, from which the head ellipse is
fitted and mapped back to the original image (`fbjax.geometry.segment_post`), so
HC, BPD and OFD are measured in original pixels and, where the pixel spacing
is known (`spacing_csv` or `pixel_spacing_mm`), in millimetres.

A classifier whose config.json says `input.kind: "aligned_head"` reads the aligned
head instead of the image: `fbjax.evaluation.heads.crop` (the crop training cut, from the
8-bit image) around the segmenter's ellipse (with the alignment its `input`
records), in both canonical orientations, the probabilities averaged; it
needs a segmenter. A file's pixels are taken as square (a data set's
`pixel_aspect`, which training undoes, is not known for a file).

"Not a fetal head": the head step (`fbjax.evaluation.heads`, the rule training's crops
and `launch.evaluate` use too) must find one: the segmenter's head passes
`fbjax.geometry.head_gate` (image content, head size, ellipse fit, a skull ring along
the ellipse) and the shape rule and, with a known spacing, has an HC within
`head_gate.HC_MM_RANGE`; otherwise `seg_quality` is "no_head",
`no_head_reason` says which evidence failed, and the plane, condition,
abnormal and biometry cells stay empty.

Inputs (`fbjax.predict.inputs.scan`, streamed): files with an image suffix, or
whose first bytes are an image signature, are predicted; a file that then
cannot be decoded, an image under `MIN_SIDE` pixels a side (a 3x3 image
holds no head), a dangling link or a directory named like an image is an
error row naming the problem; anything else (`notes.txt`, `labels.csv`,
hidden files) is skipped and counted.

Mechanics: files are read and decoded by a thread pool (OpenCV releases the
GIL) while the device runs the previous batch; every batch has the same shape
(the last one is padded), so each network is compiled once; post-processing
(ellipse fit, overlay PNG) runs in the same pool. Rows are appended batch by
batch (`fbjax.predict.files.Appender`), so a killed run loses at most the
batch in flight; the same call again predicts only the files with neither a
row nor an error row (and refuses to continue a run of another model or
setting, `identity.json`). With `num_shards` > 1 each shard takes the files
whose relative path hashes to it and writes under `out/shards/`; `merge`
(run by the last shard to finish) writes the outputs below for all of them.

Outputs under `out`:
  predictions.csv   one row per readable image (columns: `COLUMNS`)
  errors.csv        file, reason (one row per file that should be but is no readable image)
  skipped.csv       file, reason (files that are not images)
  overlays/*.png    the image with masks, head ellipse and a caption (and, inset
                    bottom right, the aligned head the classifier read): the first
                    `num_overlays` images and every image the report shows
  crops/*.png       the aligned head of each overlay (aligned-head classifiers)
  report.html       counts, distributions, the most abnormal and least certain
                    images, and occlusion maps of where the abnormal head looks
  report_files/     the report's figures (the folder opens from disk as it is)
  summary.json      the counts and timings shown in the report (whole folder)

The package, one job per module (bottom to top):

  inputs     the listing: which files are images, errors or skipped (`scan`, `list_inputs`)
  files      the CSVs appended batch by batch, overlay names, what a folder already holds
  spacing    the pixel spacing of each input (CSV or one value)
  artefacts  what the workdirs must hold (threshold, temperatures, input, segmenter)
  engine     the networks on fixed-shape batches, the head step (`Predictor`)
  rows       outputs -> one CSV row (mm biometry, temperatures, decisions; pure)
  overlays   the overlay and crop pictures of a row
  api        `predict_images`: arrays or files in, rows out
  stream     the threaded pipeline (`iterate`)
  report     report.html
  outputs    merge, summary, report, wandb
  run        the run over a folder: shards, resume, the outputs (`run`)
"""

from fbjax.predict import files, inputs
from fbjax.predict.api import array_to_grey, predict_images
from fbjax.predict.artefacts import (
    SEG_TTA,
    Segmenter,
    check_artefacts,
    check_segmenter,
    classifier_input,
    load_segmenter,
    read_calibration,
)
from fbjax.predict.engine import MIN_SIDE, Predictor, Prepared
from fbjax.predict.inputs import list_inputs
from fbjax.predict.outputs import ERROR_COLUMNS, SKIPPED_COLUMNS, ensure_overlays, merge
from fbjax.predict.rows import COLUMNS, SEG_QUALITY
from fbjax.predict.run import run, shard_folder
from fbjax.predict.spacing import read_spacing_csv, spacing_for
from fbjax.predict.stream import iterate

__all__ = [
    "COLUMNS", "ERROR_COLUMNS", "MIN_SIDE", "SEG_QUALITY", "SEG_TTA", "SKIPPED_COLUMNS",
    "Predictor", "Prepared", "Segmenter", "array_to_grey", "check_artefacts",
    "check_segmenter", "classifier_input", "ensure_overlays", "files", "inputs", "iterate",
    "list_inputs", "load_segmenter", "merge", "predict_images", "read_calibration",
    "read_spacing_csv", "run", "shard_folder", "spacing_for",
]
