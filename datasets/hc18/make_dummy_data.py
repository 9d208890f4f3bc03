"""Writes `dummy_data/`: a tiny synthetic HC18 in the Zenodo layout.

    python datasets/hc18/make_dummy_data.py

Images are speckle with a bright elliptical ring; each annotation is the
ring's centre ellipse drawn as a ~2-3 px outline (like HC18's), and the CSV
holds the pixel size and the HC of that ellipse (Ramanujan). One ellipse runs
off the image border. Deterministic; the files are small.
"""

from __future__ import annotations

import math
import pathlib

import cv2
import numpy as np

OUT = pathlib.Path(__file__).resolve().parent / "dummy_data"
SIZE = (120, 90)  # (W, H); real images are ~800x540
# stem, (cx, cy), (semi-axis a, b), angle, pixel size mm
TRAIN = [
    ("001_HC", (60, 45), (40, 30), 10, 0.25),
    ("001_2HC", (58, 46), (38, 29), -20, 0.25),
    ("002_HC", (62, 44), (42, 33), 35, 0.20),
    ("003_HC", (60, 46), (35, 27), 80, 0.30),
    ("004_HC", (50, 40), (52, 34), 5, 0.22),    # runs off the left and top border
    ("005_HC", (61, 45), (44, 31), -45, 0.18),
    ("006_HC", (59, 45), (39, 30), 0, 0.27),
]
TEST = [("000_HC", 0.21), ("001_HC", 0.26)]


def ramanujan(a: float, b: float) -> float:
  h = ((a - b) / (a + b)) ** 2
  return math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))


def _image(rng, centre, axes, angle) -> np.ndarray:
  w, h = SIZE
  img = rng.rayleigh(25.0, (h, w))
  ring = np.zeros((h, w), np.uint8)
  cv2.ellipse(ring, centre, axes, angle, 0, 360, 1, 4)
  img += 120 * ring
  return np.clip(img, 0, 255).astype(np.uint8)


def main() -> None:
  rng = np.random.default_rng(18)
  (OUT / "training_set").mkdir(parents=True, exist_ok=True)
  (OUT / "test_set").mkdir(parents=True, exist_ok=True)
  rows = ["filename,pixel size(mm),head circumference (mm)"]
  for stem, centre, axes, angle, spacing in TRAIN:
    cv2.imwrite(str(OUT / "training_set" / f"{stem}.png"), _image(rng, centre, axes, angle))
    ann = np.zeros(SIZE[::-1], np.uint8)
    cv2.ellipse(ann, centre, axes, angle, 0, 360, 255, 2)
    cv2.imwrite(str(OUT / "training_set" / f"{stem}_Annotation.png"), ann)
    rows.append(f"{stem}.png,{spacing},{ramanujan(*axes) * spacing:.2f}")
  (OUT / "training_set_pixel_size_and_HC.csv").write_text("\n".join(rows) + "\n")
  rows = ["filename,pixel size(mm)"]
  for stem, spacing in TEST:
    cv2.imwrite(str(OUT / "test_set" / f"{stem}.png"), _image(rng, (60, 45), (40, 30), 0))
    rows.append(f"{stem}.png,{spacing}")
  (OUT / "test_set_pixel_size.csv").write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
  main()
