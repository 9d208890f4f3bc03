"""Per-split counts of every real-data builder, and a check that no group spans two splits.

    FBJAX_REAL_DATA=/work/shared/data python -m benchmarks.split_counts \
        --data_dir /tmp/fbjax_tfds --out docs/split_counts.json

Builds (or reuses) hc18, fetal_planes_db (brain, brain_640, brain_combined),
fetal_brain_abnormalities and the phantom's tiny config in `--data_dir`, and
writes JSON: per builder and split the images, groups, planes and conditions,
the build time in seconds, and the groups found in two different splits
anywhere (must be empty).
"""

from __future__ import annotations

import collections
import json
import os
import time
import types

import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags

from fbjax.core import labels
from fbjax.data import builder_testing, builders, splits

BUILDS = (("hc18", None), ("fetal_planes_db", "brain"), ("fetal_planes_db", "brain_640"),
          ("fetal_planes_db", "brain_combined"), ("fetal_brain_abnormalities", None),
          ("fetal_brain_synth", "tiny"))

_MANUAL_DIR = flags.DEFINE_string("manual_dir", os.environ.get("FBJAX_REAL_DATA", ""),
                                  "Folder of the real data sets' files (or $FBJAX_REAL_DATA).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data_dir to build in (or reuse).")
_OUT = flags.DEFINE_string("out", "", "JSON file (default: print).")
flags.mark_flag_as_required("data_dir")


def split_table(b: tfds.core.DatasetBuilder) -> dict[str, dict]:
  """{split: {images, groups, planes, conditions, group_set}} without decoding images."""
  skip = {k: tfds.decode.SkipDecoding() for k in builders.IMAGE_FEATURES}
  out = {}
  for split in b.info.splits:
    src = b.as_data_source(split=split, decoders=skip)
    groups, planes, conds = set(), collections.Counter(), collections.Counter()
    for i in range(len(src)):
      ex = src[i]
      groups.add(ex["group"].decode() if isinstance(ex["group"], bytes) else str(ex["group"]))
      p, c = int(ex["plane"]), int(ex["condition"])
      planes[labels.PLANES[p] if p >= 0 else "unknown"] += 1
      conds[labels.CONDITIONS[c] if c >= 0 else "unknown"] += 1
    out[split] = {"images": len(src), "groups": len(groups), "planes": dict(planes),
                  "conditions": dict(conds), "group_set": groups}
  return out


def main(argv) -> None:
  del argv
  args = types.SimpleNamespace(manual_dir=_MANUAL_DIR.value, data_dir=_DATA_DIR.value,
                               out=_OUT.value)
  report, members = {}, {}
  for name, config in BUILDS:
    t0 = time.perf_counter()
    b = builder_testing.build(name, args.manual_dir, args.data_dir, config=config)
    seconds = time.perf_counter() - t0
    key = f"{name}/{config}" if config else name
    table = split_table(b)
    members[key] = {s: t.pop("group_set") for s, t in table.items()}
    report[key] = {"version": str(b.info.version), "build_or_load_s": round(seconds, 1),
                   "splits": table}
  report["groups_in_two_splits"] = splits.check_disjoint(members)
  fpdb = set().union(*members["fetal_planes_db/brain_combined"].values())
  fba = set().union(*members["fetal_brain_abnormalities"].values())
  report["fpdb_patients_also_in_abnormalities_set"] = sorted(fpdb & fba)
  report["pixel_aspect_brain_640"] = _aspects(args.data_dir)
  text = json.dumps(report, indent=1, default=int)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")
  else:
    print(text)


def _aspects(data_dir: str) -> dict[str, int]:
  """How many images of the 640 layout have each `pixel_aspect` (all splits)."""
  counts: collections.Counter = collections.Counter()
  for split in splits.SPLITS:
    src = builders.data_source("fetal_planes_db", split, data_dir=data_dir, config="brain_640",
                               decode_images=False)
    counts.update(f"{float(np.float32(src[i]['pixel_aspect'])):.3f}" for i in range(len(src)))
  return dict(counts)


if __name__ == "__main__":
  app.run(main)
