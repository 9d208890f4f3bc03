r"""Exports the fetal head phantom as files, and draws contact sheets.

    python -m launch.phantom --num 1000 --seed 0 --size 256 --out /tmp/phantom
    python -m launch.phantom --contact_sheet docs/phantom_contact_sheet.png --size 160

The export writes `images/`, `clean/`, `masks/{head,skull,brain}/` (PNG, masks
0/255) and `labels.csv`; see `fbjax.phantom.export`. `--contact_sheet`
writes a grid of every plane x condition (image beside its masks) and, when
real HC18 images are found under `--real_data` (default: $FBJAX_REAL_DATA,
its `hc18/` folder), a second sheet `<name>_hc18.png` with HC18 images
beside phantom images at the same pixel spacing.
"""

from __future__ import annotations

import os

from absl import app, flags

from fbjax.phantom import export as phantom_export
from fbjax.phantom import sheet as phantom_sheet

_NUM = flags.DEFINE_integer("num", 0, "Number of images to export.")
_SEED = flags.DEFINE_integer("seed", 0, "Phantom stream seed.")
_SIZE = flags.DEFINE_integer("size", 256, "Image size (pixels, square).")
_OUT = flags.DEFINE_string("out", None, "Output folder of the export.")
_WORKERS = flags.DEFINE_integer("workers", None, "Processes (default: all cores, at most 8).")
_SHEET = flags.DEFINE_string("contact_sheet", None, "Write contact sheet(s) to this PNG path.")
_REAL = flags.DEFINE_string("real_data", os.environ.get("FBJAX_REAL_DATA"),
                            "Folder holding hc18/ (for the HC18 comparison sheet).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _OUT.value is None and _SHEET.value is None:
    raise app.UsageError("give --out (export) and/or --contact_sheet")
  if _OUT.value is not None:
    path = phantom_export.export(_OUT.value, num=_NUM.value, seed=_SEED.value,
                                 size=_SIZE.value, workers=_WORKERS.value)
    print(f"wrote {_NUM.value} images and {path}")
  if _SHEET.value is not None:
    for path in phantom_sheet.write_sheets(_SHEET.value, seed=_SEED.value, size=_SIZE.value,
                                           real_data=_REAL.value):
      print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main)
