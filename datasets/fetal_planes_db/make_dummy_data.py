"""Writes `dummy_data/`: a tiny synthetic FETAL_PLANES_DB in both layouts.

    python datasets/fetal_planes_db/make_dummy_data.py

`dummy_data/fetal_planes_db/` is the Zenodo layout (PNG), and
`dummy_data/fetal_planes_db_640/` the stretched JPEG re-export's: square
3-channel JPEGs (one grey, of another size), one image also in the original
layout (taken once by `brain_combined`), patient 2 in both layouts, and
patient 712 (a fixed test patient of `fbjax.data.splits`).

The CSV reproduces the original's quirks: ";" separators, the header column
`Train ` with a trailing space, and a space at the end of every line. Images
mix 8-bit grey and 3-channel PNGs of different sizes; two rows are not brain
images ("Fetal abdomen" / "Maternal cervix", Brain_plane "Not A Brain").
Deterministic; the files are small.
"""

from __future__ import annotations

import pathlib

import cv2
import numpy as np

OUT = pathlib.Path(__file__).resolve().parent / "dummy_data" / "fetal_planes_db"
OUT_640 = OUT.parent / "fetal_planes_db_640"
HEADER = "Image_name;Patient_num;Plane;Brain_plane;Operator;US_Machine;Train "
# patient, image index, of n, Plane, Brain_plane, Train, (w, h), channels
ROWS = [
    (1, 1, 3, "Fetal abdomen", "Not A Brain", 1, (64, 40), 1),
    (1, 2, 3, "Fetal brain", "Trans-thalamic", 1, (64, 40), 1),
    (1, 3, 3, "Fetal brain", "Trans-cerebellum", 1, (64, 40), 3),
    (2, 1, 2, "Fetal brain", "Trans-ventricular", 1, (72, 50), 3),
    (2, 2, 2, "Fetal brain", "Other", 1, (72, 50), 1),
    (3, 1, 1, "Fetal brain", "Trans-thalamic", 1, (60, 42), 1),
    (4, 1, 1, "Fetal brain", "Trans-cerebellum", 1, (60, 42), 3),
    (5, 1, 2, "Fetal brain", "Trans-ventricular", 1, (64, 40), 1),
    (5, 2, 2, "Maternal cervix", "Not A Brain", 1, (64, 40), 1),
    (6, 1, 1, "Fetal brain", "Trans-thalamic", 1, (64, 40), 1),
    (7, 1, 2, "Fetal brain", "Trans-thalamic", 0, (64, 40), 1),
    (7, 2, 2, "Fetal brain", "Trans-ventricular", 0, (64, 40), 3),
    (8, 1, 1, "Fetal brain", "Trans-cerebellum", 0, (72, 50), 1),
]


# patient, image index, of n, Brain_plane, machine, Train, side, channels
ROWS_640 = [
    (2, 1, 2, "Trans-ventricular", "Voluson E6", 1, 48, 3),  # also in the original layout
    (9, 1, 2, "Trans-thalamic", "Aloka", 1, 48, 3),
    (9, 2, 2, "Other", "Voluson E6", 0, 48, 3),
    (12, 1, 1, "Trans-cerebellum", "Voluson S10", 0, 40, 1),
    (13, 1, 1, "Trans-ventricular", "Other", 1, 48, 3),
    (712, 1, 1, "Trans-thalamic", "Voluson E6", 1, 48, 3),
]


def name(patient: int, i: int, n: int) -> str:
  return f"Patient{patient:05d}_Plane3_{i}_of_{n}"


def write_layout(out: pathlib.Path, rows, ext: str, seed: int) -> None:
  """Images/ and the CSV of one layout; `rows`: (patient, i, n, Plane, Brain_plane,
  US_Machine, Train, (w, h), channels)."""
  rng = np.random.default_rng(seed)
  (out / "Images").mkdir(parents=True, exist_ok=True)
  lines = [HEADER]
  for patient, i, n, plane, brain_plane, machine, train, (w, h), channels in rows:
    grey = rng.integers(0, 256, (h, w)).astype(np.uint8)
    img = grey if channels == 1 else cv2.merge([grey] * channels)
    cv2.imwrite(str(out / "Images" / f"{name(patient, i, n)}.{ext}"), img)
    lines.append(f"{name(patient, i, n)};{patient};{plane};{brain_plane};Op. 1;{machine};"
                 f"{train} ")
  (out / "FETAL_PLANES_DB_data.csv").write_text("\n".join(lines) + "\n")


def main() -> None:
  write_layout(OUT, [(p, i, n, plane, bp, "Voluson E6", t, wh, c)
                     for p, i, n, plane, bp, t, wh, c in ROWS], "png", 2020)
  write_layout(OUT_640, [(p, i, n, "Fetal brain", bp, m, t, (side, side), c)
                         for p, i, n, bp, m, t, side, c in ROWS_640], "jpg", 640)


if __name__ == "__main__":
  main()
