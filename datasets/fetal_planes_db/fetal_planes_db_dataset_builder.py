"""FETAL_PLANES_DB: maternal-fetal screening ultrasound planes (tfds builder).

Reads the Zenodo layout (doi:10.5281/zenodo.3904280): `Images/<Image_name>.png`
and `FETAL_PLANES_DB_data.csv` (";"-separated; the last column is named
`Train ` with a trailing space, and every line ends with a space).

- `plane`: from `Brain_plane` (Trans-thalamic TT, Trans-cerebellum TC,
  Trans-ventricular TV, Other -> other; "Not A Brain" -> other in config `all`);
- `group`: `PatientNNNNN` from `Patient_num` (the key the
  `fetal_brain_abnormalities` builder gives the same patient's images);
- `abnormal`, `condition`: -1 (routine screening images, not labelled).

Configs: `brain` (default) keeps the rows with `Plane` = "Fetal brain" (the
excluded rows are counted in the build log); `all` keeps every row.

Splits: `test` = the official test split (`Train` = 0); `validation` =
1/5 of the official training patients (salted-hash rank, seed `SPLIT_SEED`);
`train` = the other training patients. A patient with rows in both official
splits (none in the shared sample) goes wholly to `test`,
with a warning listing them, so that no patient spans two splits.
"""

from __future__ import annotations

import dataclasses
import pathlib

import tensorflow_datasets as tfds
from absl import logging

from fbjax.data import builder_utils, features, labels

CSV = "FETAL_PLANES_DB_data.csv"
EXPECTED = ("Images", CSV)
COLUMNS = ("Image_name", "Patient_num", "Plane", "Brain_plane", "Train")
SPLIT_SEED = 2020
VALIDATION_FRACTION = 0.2
BRAIN = "Fetal brain"
NOT_A_BRAIN = "Not A Brain"
PLANE_MAP = {"Trans-thalamic": "TT", "Trans-cerebellum": "TC", "Trans-ventricular": "TV",
             "Other": "other", NOT_A_BRAIN: "other"}


@dataclasses.dataclass(frozen=True)
class Row:
  line: int
  image_name: str
  patient: int
  plane: str
  brain_plane: str
  train: bool


@dataclasses.dataclass(frozen=True)
class Item:
  id: str
  path: pathlib.Path
  group: str
  plane: int


def read_csv(path: pathlib.Path, problems: list[str]) -> list[Row]:
  """Rows of `FETAL_PLANES_DB_data.csv`; names and values are stripped of spaces."""
  lines = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
  if not lines:
    problems.append(f"{path}: empty file")
    return []
  header = [h.strip() for h in lines[0].split(";")]
  missing = [c for c in COLUMNS if c not in header]
  if missing:
    problems.append(f"{path}:1: missing column(s) {missing}; header is {lines[0]!r}")
    return []
  col = {c: header.index(c) for c in COLUMNS}
  rows = []
  for i, line in enumerate(lines[1:], start=2):
    if not line.strip():
      continue
    f = [v.strip() for v in line.split(";")]
    if len(f) < len(header):
      problems.append(f"{path}:{i}: expected {len(header)} fields, got {len(f)}: {line!r}")
      continue
    try:
      patient = int(f[col["Patient_num"]])
    except ValueError:
      problems.append(f"{path}:{i}: Patient_num {f[col['Patient_num']]!r} is not an integer")
      continue
    if f[col["Train"]] not in ("0", "1"):
      problems.append(f"{path}:{i}: Train must be 0 or 1, got {f[col['Train']]!r}")
      continue
    if f[col["Brain_plane"]] not in PLANE_MAP:
      problems.append(f"{path}:{i}: unknown Brain_plane {f[col['Brain_plane']]!r}; "
                      f"known: {sorted(PLANE_MAP)}")
      continue
    rows.append(Row(i, f[col["Image_name"]], patient, f[col["Plane"]],
                    f[col["Brain_plane"]], f[col["Train"]] == "1"))
  return rows


def scan(root: pathlib.Path, brain_only: bool) -> dict[str, list[Item]]:
  """Lists, filters and splits; raises `DataError` listing every problem."""
  problems: list[str] = []
  rows = read_csv(root / CSV, problems)
  images = {p.stem: p for p in (root / "Images").iterdir()
            if p.is_file() and p.suffix.lower() == ".png"}
  seen: dict[str, int] = {}
  for r in rows:
    if r.image_name in seen:
      problems.append(f"{root / CSV}:{r.line}: duplicate row for {r.image_name} "
                      f"(first at line {seen[r.image_name]})")
    seen[r.image_name] = r.line
  for name, path in sorted(images.items()):
    if name not in seen:
      problems.append(f"{path}: image without a row in {root / CSV}")
  kept, excluded = [], []
  for r in rows:
    if brain_only and (r.plane != BRAIN or r.brain_plane == NOT_A_BRAIN):
      excluded.append(r)
      continue
    if r.image_name not in images:
      problems.append(f"{root / CSV}:{r.line}: row {r.image_name!r} has no image "
                      f"{root / 'Images' / (r.image_name + '.png')}")
      continue
    kept.append(r)
  if problems:
    raise builder_utils.DataError("fetal_planes_db", problems)
  if excluded:
    logging.info("fetal_planes_db: config 'brain' leaves out %d rows whose Plane is not "
                 "'Fetal brain' (config 'all' keeps them)", len(excluded))
  train_patients = {r.patient for r in kept if r.train}
  test_patients = {r.patient for r in kept if not r.train}
  both = sorted(train_patients & test_patients)
  if both:
    logging.warning("fetal_planes_db: %d patients have rows in both official splits; all "
                    "their images go to 'test': %s", len(both), both)
  val = builder_utils.carve_groups((_group(p) for p in train_patients - test_patients),
                                   VALIDATION_FRACTION, SPLIT_SEED)
  out: dict[str, list[Item]] = {"train": [], "validation": [], "test": []}
  for r in kept:
    g = _group(r.patient)
    split = "test" if r.patient in test_patients else ("validation" if g in val else "train")
    plane = labels.plane_index(PLANE_MAP[r.brain_plane])
    out[split].append(Item(f"Images/{r.image_name}.png", images[r.image_name], g, plane))
  return out


def _group(patient: int) -> str:
  return f"Patient{patient:05d}"


def encode(item: Item) -> tuple[str, dict]:
  image = builder_utils.read_grey_uint8(item.path)
  return item.id, features.example(id=item.id, group=item.group, image=image, plane=item.plane)


class Builder(tfds.core.GeneratorBasedBuilder):
  """FETAL_PLANES_DB (manual download)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Brain planes (config brain) or every image (config all); official test "
               "split; validation carved from the training patients.",
  }
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="brain", description=(
          "Rows with Plane 'Fetal brain' (Brain_plane TT, TC, TV or Other).")),
      tfds.core.BuilderConfig(name="all", description=(
          "Every row; non-brain images get plane 'other'.")),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download `FETAL_PLANES_ZENODO.zip` from Zenodo (doi:10.5281/zenodo.3904280,
  https://zenodo.org/records/3904280) and unzip it so that the manual folder
  (`--manual_dir`, either this folder or a parent holding it as
  `fetal_planes_db/`) holds:

    Images/<Image_name>.png          12,400 images (or the subset you have)
    FETAL_PLANES_DB_data.csv         ";"-separated metadata, one row per image

  The .xlsx copy of the table is not needed. The folder is only read (it may
  be read-only).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=features.features(),
        supervised_keys=None,
        homepage="https://zenodo.org/records/3904280",
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    root = builder_utils.find_manual_dir(dl_manager, "fetal_planes_db", EXPECTED,
                                         self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    self.info.metadata[builder_utils.MANUAL_DIR_KEY] = str(root.resolve())
    splits = scan(root, brain_only=self.builder_config.name == "brain")
    for s, its in splits.items():
      logging.info("fetal_planes_db/%s %s: %d images, %d patients", self.builder_config.name,
                   s, len(its), len({i.group for i in its}))
    return {s: self._generate_examples(its) for s, its in splits.items()}

  def _generate_examples(self, items):
    yield from builder_utils.ordered_map(encode, items)
