r"""Contact sheet of the device augmentation on real images, head-mask outline in red.

    FBJAX_REAL_DATA=../shared/data python -m benchmarks.augment_sheet --data_dir /tmp/fbjax_tfds \
        --out docs/device_augment_examples.png

Rows: HC18 training images as the pipeline gives them (letterboxed to
--size), then `device_augment.augment_batch` with the default chain (the host
chain's transforms and strengths), then each ultrasound extra alone at a
visible strength. The red outline is the augmented head mask, drawn on the
augmented image: it should sit on the skull in every row.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import cv2
import jax
import numpy as np
from absl import app, flags

from fbjax.data import builders, pipeline
from fbjax.data import device_augment as da

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where to build HC18 (tfds data_dir).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "HC18 raw files (default: "
                                  "$FBJAX_REAL_DATA/hc18).")
_SIZE = flags.DEFINE_integer("size", 160, "Network grid (square).")
_N = flags.DEFINE_integer("n", 6, "Images per row.")
_OUT = flags.DEFINE_string("out", "augment_sheet.png", "PNG to write.")


def main(argv):
  del argv

  manual = _MANUAL_DIR.value or str(pathlib.Path(os.environ["FBJAX_REAL_DATA"]) / "hc18")
  source = builders.data_source("hc18", "train", data_dir=_DATA_DIR.value, manual_dir=manual,
                                decode_images=False)
  size = (_SIZE.value, _SIZE.value)
  keys = ("image", "head_mask", "pixel_spacing_mm")
  examples = [pipeline.decode(source[i * 97], size, keys) for i in range(_N.value)]
  batch = {k: np.stack([e[k] for e in examples]) for k in keys}

  default = da.DeviceAugmentConfig()
  rows = {"as loaded": None, "default (host chain on device)": default,
          "aspect 0.2": dataclasses.replace(default, max_log_aspect=0.2),
          "depth gain 0.5": dataclasses.replace(default, max_depth_log_gain=0.5),
          "shadow": dataclasses.replace(default, shadow_prob=1.0),
          "speckle 0.5": dataclasses.replace(default, max_speckle_sigma=0.5)}
  tiles = []
  for title, cfg in rows.items():
    out = batch if cfg is None else jax.device_get(
        da.augment_batch(jax.random.key(0), batch, cfg))
    row = []
    for img, mask in zip(out["image"], out["head_mask"], strict=True):
      rgb = cv2.cvtColor((np.clip(img, 0, 1) * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
      contours, _ = cv2.findContours(np.asarray(mask, np.uint8), cv2.RETR_EXTERNAL,
                                     cv2.CHAIN_APPROX_NONE)
      cv2.drawContours(rgb, contours, -1, (0, 0, 255), 1)
      row.append(rgb)
    strip = np.concatenate(row, axis=1)
    label = np.full((22, strip.shape[1], 3), 255, np.uint8)
    cv2.putText(label, title, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    tiles += [label, strip]
  cv2.imwrite(_OUT.value, np.concatenate(tiles, axis=0))
  print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
