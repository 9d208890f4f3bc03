"""Contact sheet of aligned heads on real images (docs/aligned_heads.png).

    FBJAX_REAL_DATA=/work/shared/data python -m benchmarks.aligned_heads_sheet \
        --out docs/aligned_heads.png

Each tile: the image with its annotated head ellipse (HC18 outline, or the
Alzubaidi et al. head mask of a FETAL_PLANES_DB trans-ventricular image), the
aligned head, and its 180-degree twin (`flip=True`). The attribution of the
data sets shown is written under the sheet (CC BY 4.0).
"""

from __future__ import annotations

import os
import pathlib

import cv2
import numpy as np
from absl import app, flags

from fbjax.data import builders
from fbjax.geometry import align

_ROOT = flags.DEFINE_string("root", os.environ.get("FBJAX_REAL_DATA", ""),
                            "Folder holding hc18/, fetal_planes_db/, fetal_planes_db_tv_masks/.")
_OUT = flags.DEFINE_string("out", "docs/aligned_heads.png", "PNG to write.")

HC18 = ("010_HC.png", "102_HC.png", "204_HC.png", "306_HC.png", "404_HC.png", "507_2HC.png",
        "617_2HC.png", "721_HC.png")
FPDB_TV = ("Patient00644_Plane3_1_of_3.png", "Patient00652_Plane3_1_of_1.png",
           "Patient00765_Plane3_1_of_6.png", "Patient00700_Plane3_2_of_2.png")
# (8 of the 56 masks label only a small region (< 1.2 % of the image) as "head";
# those are not head outlines and are not used here.)
ATTRIBUTION = (
    "HC18 data set, T. L. A. van den Heuvel, D. de Bruijn, C. L. de Korte and B. van Ginneken, "
    "Radboud University Medical Center (doi:10.5281/zenodo.1327317), CC BY 4.0.",
    "FETAL_PLANES_DB, X. P. Burgos-Artizzu et al., BCNatal Barcelona "
    "(doi:10.5281/zenodo.3904280), CC BY 4.0; head masks from M. Alzubaidi et al.",
    "(doi:10.1016/j.dib.2023.109708), CC BY 4.0. Images resized, cropped, rotated and "
    "masked by fbjax.geometry.align.",
)
TILE_H = 96
SIZE = (96, 128)


def _examples(root: pathlib.Path):
  hc18 = builders.builder_module("hc18")
  for name in HC18:
    p = root / "hc18" / "training_set" / name
    img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
    ann = cv2.imread(str(p).replace(".png", "_Annotation.png"), cv2.IMREAD_GRAYSCALE)
    mask, _ = hc18.fill_outline(ann, p)
    yield f"HC18 {name[:-4]}", img, mask
  for name in FPDB_TV:
    img = cv2.imread(str(root / "fetal_planes_db" / "Images" / name), cv2.IMREAD_GRAYSCALE)
    rgb = cv2.imread(str(root / "fetal_planes_db_tv_masks" / name), cv2.IMREAD_COLOR)
    head = (rgb[..., 2] == 128) | (rgb[..., 1] > 0)  # head, ventricle and CSP boxes lie inside
    if head.shape != img.shape:
      head = cv2.resize(head.astype(np.uint8), img.shape[::-1],
                        interpolation=cv2.INTER_NEAREST) > 0
    yield f"FPDB {name[7:12]} TV", img, head.astype(np.uint8)


def tile(label: str, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
  e = align.ellipse_from_mask(mask, name=label)
  crop, _ = align.aligned_head(image, e, size=SIZE)
  twin, _ = align.aligned_head(image, e, size=SIZE, flip=True)
  scale = TILE_H / image.shape[0]
  small = cv2.resize(image, (round(image.shape[1] * scale), TILE_H), interpolation=cv2.INTER_AREA)
  small = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
  (cx, cy), (w, h), ang = e.scaled(scale).to_cv2()
  cv2.ellipse(small, ((cx, cy), (w, h), ang), (0, 200, 255), 1, cv2.LINE_AA)
  cv2.putText(small, label, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 0), 1,
              cv2.LINE_AA)
  gap = np.full((TILE_H, 4, 3), 60, np.uint8)
  crops = [cv2.cvtColor(c, cv2.COLOR_GRAY2BGR) for c in (crop, twin)]
  return np.hstack([small, gap, crops[0], gap, crops[1]])


def main(argv) -> None:
  del argv
  tiles = [tile(*ex) for ex in _examples(pathlib.Path(_ROOT.value))]
  width = max(t.shape[1] for t in tiles)
  tiles = [np.pad(t, ((0, 0), (0, width - t.shape[1]), (0, 0))) for t in tiles]
  rows = [np.hstack([tiles[i], np.full((TILE_H, 8, 3), 255, np.uint8), tiles[i + 1]])
          for i in range(0, len(tiles) - 1, 2)]
  sep = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
  sheet = np.vstack([x for r in rows for x in (r, sep)])
  foot = np.full((16 * len(ATTRIBUTION) + 8, sheet.shape[1], 3), 255, np.uint8)
  for i, line in enumerate(ATTRIBUTION):
    cv2.putText(foot, line, (4, 16 * i + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (0, 0, 0), 1,
                cv2.LINE_AA)
  cv2.imwrite(_OUT.value, np.vstack([sheet, foot]))
  print(_OUT.value, sheet.shape)


if __name__ == "__main__":
  app.run(main)
