"""FETAL_PLANES_DB: maternal-fetal screening ultrasound planes (tfds builder).

Reads two layouts of the Zenodo release (doi:10.5281/zenodo.3904280), each a
folder with `Images/<Image_name>.<png|jpg>` and `FETAL_PLANES_DB_data.csv`
(";"-separated; the last column is named `Train ` with a trailing space, and
every line ends with a space):

- `fetal_planes_db/`: the original PNGs (grey, or 3-channel copies with equal
  channels), any size;
- `fetal_planes_db_640/`: a Roboflow re-export stretched to 640x640 (aspect
  not kept), greyscale JPEG (any size is accepted).

Features:
- `plane`: from `Brain_plane` (Trans-thalamic TT, Trans-cerebellum TC,
  Trans-ventricular TV, Other -> other; "Not A Brain" -> other in config `all`);
- `group`: `PatientNNNNN` from `Patient_num` (`splits.fpdb_group`: the key the
  `fetal_brain_abnormalities` builder gives the same patient's images);
- `pixel_aspect`: width / height of the area one stored pixel covers
  (`pixel_aspect_of`): 1 for a grey original at its scanner's grid; for a
  resampled copy (3-channel PNG copies, the 640x640 stretch) the scanner's
  native aspect (`NATIVE_ASPECT`, by `US_Machine`) over the stored aspect.
  Resizing the width by `pixel_aspect` undoes the stretch.
- `abnormal`, `condition`: -1 (routine screening images, not labelled).

Configs: `brain` (default; original layout, rows with `Plane` = "Fetal
brain"), `brain_640` (the 640 layout), `brain_combined` (both; an image
present in both layouts is taken once, from the original), `all` (original
layout, every row).

Splits: by patient, `fbjax.data.splits` (the same patient gets the same split
in every data set); the paper's `Train` column is read and checked, not used.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib

import tensorflow_datasets as tfds
from absl import logging

from fbjax.core import labels
from fbjax.data import builder_utils, features, io, splits

CSV = "FETAL_PLANES_DB_data.csv"
EXPECTED = ("Images", CSV)
COLUMNS = ("Image_name", "Patient_num", "Plane", "Brain_plane", "US_Machine", "Train")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ORIGINAL, STRETCHED = "fetal_planes_db", "fetal_planes_db_640"
# config -> (folders read, brain rows only)
CONFIGS = {"brain": ((ORIGINAL,), True), "brain_640": ((STRETCHED,), True),
           "brain_combined": ((ORIGINAL, STRETCHED), True), "all": ((ORIGINAL,), False)}
BRAIN = "Fetal brain"
NOT_A_BRAIN = "Not A Brain"
PLANE_MAP = {"Trans-thalamic": "TT", "Trans-cerebellum": "TC", "Trans-ventricular": "TV",
             "Other": "other", NOT_A_BRAIN: "other"}
# Width / height of the scanner's own image grid, by `US_Machine`, from the
# grey originals of the shared sample (every one follows it): Aloka 640x392;
# Voluson E6 959x661 and 961x663; Voluson S10 and Other 1137x787 (all three
# within 0.5 % of 959/661).
NATIVE_ASPECT = {"Aloka": 640 / 392, "Voluson E6": 959 / 661, "Voluson S10": 959 / 661,
                 "Other": 959 / 661}


@dataclasses.dataclass(frozen=True)
class Row:
  line: int
  image_name: str
  patient: int
  plane: str
  brain_plane: str
  machine: str
  train: bool


@dataclasses.dataclass(frozen=True)
class Item:
  id: str
  path: pathlib.Path
  group: str
  plane: int
  machine: str
  stretched: bool  # from the 640x640 layout


def pixel_aspect_of(machine: str, width: int, height: int, channels: int,
                    stretched: bool) -> float:
  """Width / height of the area one stored pixel covers (NaN when unknown).

  A grey original is stored on the scanner's grid (1). A stretched or
  3-channel copy was resampled from that grid: the machine's native aspect
  over the stored one (within 1 % of 1 counts as 1).
  """
  if not stretched and channels == 1:
    return 1.0
  native = NATIVE_ASPECT.get(machine)
  if native is None:
    return math.nan
  aspect = native / (width / height)
  return 1.0 if abs(aspect - 1.0) < 0.01 else aspect


def manual_roots(manual_dir, config: str | None) -> dict[str, pathlib.Path]:
  """{folder name: path} of the layouts a config reads (FileNotFoundError naming them)."""
  folders, _ = CONFIGS[config or "brain"]
  return {f: builder_utils.find_manual_dir(manual_dir, f, EXPECTED,
                                           Builder.MANUAL_DOWNLOAD_INSTRUCTIONS)
          for f in folders}


def manual_root(manual_dir, config: str | None) -> pathlib.Path:
  """The folder the examples' `id`s are relative to (recorded in the build's metadata)."""
  roots = [r.resolve() for r in manual_roots(manual_dir, config).values()]
  return roots[0] if len(roots) == 1 else roots[0].parent


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
                    f[col["Brain_plane"]], f[col["US_Machine"]], f[col["Train"]] == "1"))
  return rows


def scan_folder(root: pathlib.Path, brain_only: bool, stretched: bool, id_prefix: str,
                problems: list[str]) -> list[Item]:
  """The kept rows of one layout folder, with their images; problems are appended."""
  rows = read_csv(root / CSV, problems)
  images: dict[str, pathlib.Path] = {}
  for p in sorted((root / "Images").iterdir()):
    if not (p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
      continue
    if p.stem in images:
      problems.append(f"{p}: a second image for {p.stem} (also {images[p.stem]})")
    images[p.stem] = p
  seen: dict[str, int] = {}
  for r in rows:
    if r.image_name in seen:
      problems.append(f"{root / CSV}:{r.line}: duplicate row for {r.image_name} "
                      f"(first at line {seen[r.image_name]})")
    seen[r.image_name] = r.line
  for name, path in sorted(images.items()):
    if name not in seen:
      problems.append(f"{path}: image without a row in {root / CSV}")
  kept, excluded = [], 0
  for r in rows:
    if brain_only and (r.plane != BRAIN or r.brain_plane == NOT_A_BRAIN):
      excluded += 1
      continue
    if r.image_name not in images:
      problems.append(f"{root / CSV}:{r.line}: row {r.image_name!r} has no image "
                      f"{root / 'Images' / r.image_name}.<png|jpg>")
      continue
    path = images[r.image_name]
    kept.append(Item(f"{id_prefix}Images/{path.name}", path, splits.fpdb_group(r.patient),
                     labels.plane_index(PLANE_MAP[r.brain_plane]), r.machine, stretched))
  if excluded:
    logging.info("fetal_planes_db: %s: %d rows whose Plane is not 'Fetal brain' left out "
                 "(config 'all' keeps them)", root, excluded)
  return kept


def scan(roots: dict[str, pathlib.Path], brain_only: bool) -> dict[str, list[Item]]:
  """Lists, filters and splits the layouts `roots` ({folder name: path}).

  Raises `DataError` listing every problem. With two layouts, ids carry the
  folder name, and an image present in both is taken from the original.
  """
  problems: list[str] = []
  prefix = len(roots) > 1
  items: list[Item] = []
  names: dict[str, Item] = {}
  for folder, root in roots.items():
    for it in scan_folder(root, brain_only, folder == STRETCHED,
                          f"{folder}/" if prefix else "", problems):
      stem = it.path.stem
      if stem in names and (names[stem].plane, names[stem].group) != (it.plane, it.group):
        problems.append(f"{it.path}: the same image as {names[stem].path} with another "
                        f"plane or patient in its CSV")
      if stem in names:
        logging.warning("fetal_planes_db: %s is also %s; kept once (%s)", it.path,
                        names[stem].path, names[stem].id)
        continue
      names[stem] = it
      items.append(it)
  if problems:
    raise builder_utils.DataError("fetal_planes_db", problems)
  split_of = splits.assign(it.group for it in items)
  out: dict[str, list[Item]] = {s: [] for s in splits.SPLITS}
  for it in items:
    out[split_of[it.group]].append(it)
  return out


def encode(item: Item) -> tuple[str, dict]:
  raw = io.decode_image(io.read_bytes(item.path), item.path)
  image = io.to_grey(raw)
  if image.dtype != "uint8":
    image = io.float_to_uint8(image.astype("float32") / 65535.0)
  channels = 1 if raw.ndim == 2 else raw.shape[2]
  h, w = image.shape
  aspect = pixel_aspect_of(item.machine, w, h, channels, item.stretched)
  return item.id, features.example(id=item.id, group=item.group, image=image, plane=item.plane,
                                   pixel_aspect=aspect)


class Builder(tfds.core.GeneratorBasedBuilder):
  """FETAL_PLANES_DB (manual download)."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Brain planes (config brain) or every image (config all); official test "
               "split; validation carved from the training patients.",
      "2.0.0": "Splits by patient from fbjax.data.splits (the same patient has the same split "
               "in every data set; the paper's Train column is no longer the test split); "
               "the 640x640 JPEG layout (configs brain_640, brain_combined); feature "
               "pixel_aspect.",
  }
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="brain", description=(
          "Original layout: rows with Plane 'Fetal brain' (Brain_plane TT, TC, TV or Other).")),
      tfds.core.BuilderConfig(name="brain_640", description=(
          "The 640x640 stretched JPEG layout (fetal_planes_db_640/), brain rows.")),
      tfds.core.BuilderConfig(name="brain_combined", description=(
          "Both layouts, brain rows; an image in both is taken once, from the original.")),
      tfds.core.BuilderConfig(name="all", description=(
          "Original layout, every row; non-brain images get plane 'other'.")),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download `FETAL_PLANES_ZENODO.zip` from Zenodo (doi:10.5281/zenodo.3904280,
  https://zenodo.org/records/3904280) and unzip it so that the manual folder
  (`--manual_dir`, either this folder or a parent holding it as
  `fetal_planes_db/`) holds:

    Images/<Image_name>.png          12,400 images (or the subset you have)
    FETAL_PLANES_DB_data.csv         ";"-separated metadata, one row per image

  Configs `brain_640` and `brain_combined` read the 640x640 re-export as
  `fetal_planes_db_640/` (same layout, `Images/<Image_name>.jpg`) beside it
  (`brain_640` also accepts that folder itself as the manual folder). The
  .xlsx copy of the table is not needed. The folders are only read.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=features.features(),
        supervised_keys=None,
        homepage="https://zenodo.org/records/3904280",
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    folders, brain_only = CONFIGS[self.builder_config.name]
    base = builder_utils.requested_manual_dir(dl_manager)
    roots = manual_roots(base, self.builder_config.name)
    if len({r.resolve() for r in roots.values()}) < len(roots):
      raise FileNotFoundError(
          f"fetal_planes_db/{self.builder_config.name} reads {list(folders)} as separate "
          f"folders under the manual folder; found one folder for both: {roots}")
    self.info.metadata[builder_utils.MANUAL_DIR_KEY] = str(manual_root(base,
                                                                       self.builder_config.name))
    by_split = scan(roots, brain_only)
    for s, its in by_split.items():
      logging.info("fetal_planes_db/%s %s: %d images, %d patients", self.builder_config.name,
                   s, len(its), len({i.group for i in its}))
    return {s: self._generate_examples(its) for s, its in by_split.items()}

  def _generate_examples(self, items):
    yield from builder_utils.ordered_map(encode, items)
