"""Writes `dummy_data/`: a tiny synthetic Roboflow export in the real layout.

    python datasets/fetal_brain_abnormalities/make_dummy_data.py

File names follow the export's patterns (`Copy-of-<class><n><x>-image_aug_<k>
_png_jpg.rf.<32 hex>.jpg`, `PatientNNNNN_PlaneP_i_of_n_aug_<k>_png_jpg.rf...`),
copies of one source image sit in several folders (as in the export), the
`_classes.csv` files use ", " separators and have no final newline, and the
merge pairs of the builder appear (including a label conflict). Images are
48x48 RGB JPEGs with equal channels. Deterministic.
"""

from __future__ import annotations

import hashlib
import pathlib

import cv2
import numpy as np

OUT = pathlib.Path(__file__).resolve().parent / "dummy_data"
CLASSES = ("anold-chiari-malformation", "arachnoid-cyst", "cerebellah-hypoplasia",
           "colphocephaly", "encephalocele", "holoprosencephaly", "hydracenphaly",
           "intracranial-hemorrdge", "intracranial-tumor", "m-magna", "mild-ventriculomegaly",
           "moderate-ventriculomegaly", "normal", "polencephaly", "severe-ventriculomegaly",
           "vein-of-galen")
# (source stem, class, {folder: number of augmented copies}, plane of normal images)
SOURCES = [
    ("Copy-of-arachnoid-cyst35a-image", "arachnoid-cyst", {"train": 2, "test": 1}, None),
    ("Copy-of-arachnoid-cyst-36a", "arachnoid-cyst", {"train": 2, "valid": 1}, None),
    ("Copy-of-arachnoid-cyst_27p", "arachnoid-cyst", {"train": 1, "valid": 1}, None),
    ("Copy-of-vein-of-galen-40a", "vein-of-galen", {"train": 1}, None),
    ("Copy-of-cerebellah-hypoplasia_20c", "cerebellah-hypoplasia", {"train": 2}, None),
    ("Copy-of-moderate-ventriculomegaly-20c", "moderate-ventriculomegaly",
     {"train": 1, "test": 1}, None),
    ("Copy-of-moderate-ventriculomegaly19b", "moderate-ventriculomegaly", {"train": 2}, None),
    ("Copy-of-moderate-ventriculomegaly-27", "moderate-ventriculomegaly", {"valid": 1}, None),
    ("Copy-of-mild-ventriculomegaly", "mild-ventriculomegaly", {"train": 1}, None),
    ("Copy-of-mild-ventriculomegaly-18c", "mild-ventriculomegaly", {"train": 1, "valid": 1},
     None),
    ("Patient00709_Plane3_1_of_3", "normal", {"train": 2, "test": 1}, "Trans-thalamic"),
    ("Patient00709_Plane3_2_of_3", "normal", {"train": 1}, "Trans-ventricular"),
    ("Patient00710_Plane3_1_of_6", "normal", {"train": 2}, "Trans-cerebellum"),
    ("Patient00714_Plane3_7_of_8", "normal", {"valid": 1}, "Trans-thalamic"),
    ("Patient00717_Plane3_1_of_3", "normal", {"train": 1, "valid": 1}, "Other"),
]
SIZE = 48


def _hash(name: str) -> str:
  return hashlib.md5(name.encode()).hexdigest()


def main() -> None:
  rng = np.random.default_rng(16)
  rows: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
  planes = ["filename,fetal_planes_db_image_name,brain_plane"]
  k = 0
  for stem, cls, folders, plane in SOURCES:
    base = rng.integers(0, 200, (SIZE, SIZE)).astype(np.uint8)
    for folder, n in folders.items():
      (OUT / folder).mkdir(parents=True, exist_ok=True)
      for _ in range(n):
        name = f"{stem}_aug_{k % 7}_png_jpg.rf.{_hash(f'{stem}{k}')}.jpg"
        k += 1
        grey = np.clip(base.astype(np.int16) + rng.integers(-10, 10), 0, 255).astype(np.uint8)
        cv2.imwrite(str(OUT / folder / name), cv2.merge([grey] * 3),
                    [cv2.IMWRITE_JPEG_QUALITY, 80])
        onehot = ", ".join("1" if c == cls else "0" for c in CLASSES)
        rows[folder].append(f"{name}, {onehot}")
        if plane:
          planes.append(f"{folder}/{name},{stem},{plane}")
  for folder, lines in rows.items():
    text = "\n".join(["filename, " + ", ".join(CLASSES), *lines])  # no final newline
    (OUT / folder / "_classes.csv").write_text(text)
  (OUT / "normal_brain_planes.csv").write_text("\n".join(planes) + "\n")


if __name__ == "__main__":
  main()
