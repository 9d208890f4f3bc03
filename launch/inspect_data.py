r"""Fingerprint (JSON) and contact sheet (PNG) of built data sets.

    python -m launch.inspect_data --name hc18 --manual_dir ../shared/data --out inspect_out
    python -m launch.inspect_data --name all --manual_dir ../shared/data --out inspect_out
    python -m launch.inspect_data --name fetal_planes_db --config all \
        --manual_dir /data/FETAL_PLANES_DB --data_dir ~/fbjax_tfds --out inspect_out

Builds a data set first if `--data_dir` does not hold it yet. Writes
`<out>/<name>[-<config>].json` (counts per split and label, image sizes,
pixel-spacing and biometry statistics, intensity percentiles, groups per
split and any group found in two splits) and `<out>/<name>[-<config>].png`
(a contact sheet: random examples per split, head-mask outlines, labels).
`--name all` does hc18, fetal_planes_db and fetal_brain_abnormalities.
"""

from __future__ import annotations

import json
import os
import pathlib

from absl import app, flags

from fbjax.data import builders, fingerprint, io

REAL = ("hc18", "fetal_planes_db", "fetal_brain_abnormalities")

_NAME = flags.DEFINE_string("name", "all", "builder name, or 'all' for the three real sets")
_CONFIG = flags.DEFINE_string("config", None, "builder config (default: the builder's default)")
_MANUAL = flags.DEFINE_string("manual_dir", os.environ.get("FBJAX_REAL_DATA"),
                              "manual folder (default $FBJAX_REAL_DATA)")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data_dir (default: <out>/tfds)")
_OUT = flags.DEFINE_string("out", "inspect_out", "output folder")
_PER_SPLIT = flags.DEFINE_integer("per_split", 16, "examples per split in the contact sheet")


def main(argv):
  del argv
  out = pathlib.Path(_OUT.value)
  out.mkdir(parents=True, exist_ok=True)
  data_dir = _DATA_DIR.value or out / "tfds"
  names = REAL if _NAME.value == "all" else (_NAME.value,)
  for name in names:
    b = builders.prepare(name, data_dir=data_dir, config=_CONFIG.value,
                         manual_dir=_MANUAL.value)
    stem = name + (f"-{b.builder_config.name}" if b.builder_config else "")
    fp = fingerprint.fingerprint(b)
    (out / f"{stem}.json").write_text(json.dumps(fp, indent=1))
    io.write_png(out / f"{stem}.png", fingerprint.contact_sheet(b, per_split=_PER_SPLIT.value))
    counts = {s: v["num_examples"] for s, v in fp["splits"].items()}
    print(f"{stem}: {counts}, {fp['num_groups']} groups, "
          f"{len(fp['group_overlap'])} in two splits -> {out / stem}.json, .png")


if __name__ == "__main__":
  app.run(main)
