"""Fetal brain abnormalities (Roboflow export, 16 classes) with leakage-free splits.

Reads the Roboflow "multi-class classification" export (`train|valid|test/`
JPEGs, each folder with a one-hot `_classes.csv`). The export's own splits
leak: augmented copies of one source image sit in several of them. This
builder ignores them and rebuilds `train` / `validation` / `test` by source
group (`source_group`) with `fbjax.data.splits.assign`: FETAL_PLANES_DB
patients (the `normal` images) get the split they have in every data set;
the other groups are stratified by class (`builder_utils.stratified_group_split`),
so every class with at least 3 groups has at least one group in each split.

- `condition`: the class, mapped to `fbjax.core.labels.CONDITIONS` (`CLASS_MAP`);
- `abnormal`: 0 for `normal`, 1 otherwise;
- `plane`: for `normal` images listed in `normal_brain_planes.csv` (optional
  file: the FETAL_PLANES_DB plane of the source image), else -1;
- `group`: the source-group key; FETAL_PLANES_DB images (all `normal` ones)
  are grouped by patient as `PatientNNNNN`, the key the `fetal_planes_db`
  builder uses, so the same patient carries the same group in both;
- `pixel_aspect`: NaN: every image was stretched to 640x640 from a size the
  export does not record.
"""

from __future__ import annotations

import collections
import dataclasses
import pathlib
import re

import tensorflow_datasets as tfds
from absl import logging

from fbjax.core import labels
from fbjax.data import builder_utils, features, splits

FOLDERS = ("train", "valid", "test")
CLASSES_CSV = "_classes.csv"
PLANES_CSV = "normal_brain_planes.csv"
EXPECTED = tuple(f"{f}/{CLASSES_CSV}" for f in FOLDERS)

# Export class names (original spellings) -> fbjax condition names.
CLASS_MAP = {
    "anold-chiari-malformation": "arnold_chiari_malformation",
    "arachnoid-cyst": "arachnoid_cyst",
    "cerebellah-hypoplasia": "cerebellar_hypoplasia",
    "colphocephaly": "colpocephaly",
    "encephalocele": "encephalocele",
    "holoprosencephaly": "holoprosencephaly",
    "hydracenphaly": "hydranencephaly",
    "intracranial-hemorrdge": "intracranial_hemorrhage",
    "intracranial-tumor": "intracranial_tumor",
    "m-magna": "mega_cisterna_magna",
    "mild-ventriculomegaly": "mild_ventriculomegaly",
    "moderate-ventriculomegaly": "moderate_ventriculomegaly",
    "normal": "normal",
    "polencephaly": "porencephaly",
    "severe-ventriculomegaly": "severe_ventriculomegaly",
    "vein-of-galen": "vein_of_galen_malformation",
}
PLANE_MAP = {"Trans-thalamic": "TT", "Trans-cerebellum": "TC", "Trans-ventricular": "TV",
             "Other": "other"}

# Keys whose files hold near-identical images (the same image up to flip,
# rotation or small zoom), identified by comparing the export's images;
# merged into one group. The first two pairs carry different labels (the same images were
# uploaded under two classes); each file keeps its own label.
MERGES = (
    ("cerebellah-hypoplasia-20c", "moderate-ventriculomegaly-20c"),
    ("colphocephaly-36c", "moderate-ventriculomegaly-36b"),
    ("mild-ventriculomegaly", "mild-ventriculomegaly-18c"),
    ("moderate-ventriculomegaly-34", "moderate-ventriculomegaly-34b"),
)
_MERGED = {k: "+".join(sorted(pair)) for pair in MERGES for k in pair}

_RF_SUFFIX = re.compile(r"\.rf\.[0-9a-f]{32}\.jpg$", re.IGNORECASE)
_AUG = re.compile(r"_aug_\d+$")
_FPDB = re.compile(r"^(Patient\d+)_Plane\d+_\d+_of_\d+$")


def source_key(filename: str) -> str:
  """The source-image key of an export file name (before merges)."""
  s = _RF_SUFFIX.sub("", filename)
  if s == filename:
    s = re.sub(r"\.jpe?g$", "", s, flags=re.IGNORECASE)
  s = re.sub(r"_png_jpg$", "", s)
  s = re.sub(r"_jpg$", "", s)
  s = _AUG.sub("", s)
  m = _FPDB.match(s)
  if m:
    return splits.fpdb_group(m.group(1))
  s = re.sub(r"^Copy-of-", "", s).lower().replace("_", "-")
  s = re.sub(r"-image$", "", s)
  s = re.sub(r"([a-z])(\d)", r"\1-\2", s)
  s = re.sub(r"-+", "-", s).strip("-")
  return s


def source_group(filename: str) -> str:
  """The split group: `source_key` with near-duplicate keys merged (`MERGES`)."""
  k = source_key(filename)
  return _MERGED.get(k, k)


@dataclasses.dataclass(frozen=True)
class Item:
  id: str          # "<folder>/<file name>"
  path: pathlib.Path
  label: str       # export class name
  group: str
  plane: int


def read_classes_csv(path: pathlib.Path, problems: list[str]) -> dict[str, str]:
  """{file name: class} from a Roboflow `_classes.csv` (", "-separated, one-hot)."""
  text = path.read_text(encoding="utf-8-sig")
  lines = text.replace("\r\n", "\n").split("\n")
  header = [h.strip() for h in lines[0].split(",")]
  if not header or header[0] != "filename":
    problems.append(f"{path}:1: header must start with 'filename', got {lines[0]!r}")
    return {}
  classes = header[1:]
  for c in classes:
    if c not in CLASS_MAP:
      problems.append(f"{path}:1: unknown class {c!r}; known: {sorted(CLASS_MAP)}")
  if any(c not in CLASS_MAP for c in classes):
    return {}
  rows: dict[str, str] = {}
  for i, line in enumerate(lines[1:], start=2):
    if not line.strip():
      continue
    fields = [f.strip() for f in line.split(",")]
    if len(fields) != len(header):
      problems.append(f"{path}:{i}: expected {len(header)} fields, got {len(fields)}")
      continue
    name, values = fields[0], fields[1:]
    if any(v not in ("0", "1") for v in values):
      problems.append(f"{path}:{i}: {name}: one-hot values must be 0 or 1, got {values}")
      continue
    hot = [c for c, v in zip(classes, values, strict=True) if v == "1"]
    if len(hot) != 1:
      problems.append(f"{path}:{i}: {name}: expected exactly one class, got {hot or 'none'}")
      continue
    if name in rows:
      problems.append(f"{path}:{i}: duplicate row for {name}")
    rows[name] = hot[0]
  return rows


def read_planes_csv(path: pathlib.Path, problems: list[str]) -> dict[str, int]:
  """{"<folder>/<file>": plane index} from `normal_brain_planes.csv`."""
  out: dict[str, int] = {}
  lines = path.read_text(encoding="utf-8-sig").replace("\r\n", "\n").split("\n")
  header = [h.strip() for h in lines[0].split(",")]
  if header[:1] != ["filename"] or "brain_plane" not in header:
    problems.append(f"{path}:1: expected header filename,...,brain_plane; got {lines[0]!r}")
    return out
  col = header.index("brain_plane")
  for i, line in enumerate(lines[1:], start=2):
    if not line.strip():
      continue
    fields = [f.strip() for f in line.split(",")]
    if len(fields) != len(header) or fields[col] not in PLANE_MAP:
      problems.append(f"{path}:{i}: expected {len(header)} fields with brain_plane in "
                      f"{sorted(PLANE_MAP)}; got {line!r}")
      continue
    out[fields[0]] = labels.plane_index(PLANE_MAP[fields[col]])
  return out


def scan(root: pathlib.Path) -> list[Item]:
  """Lists and cross-checks the export; raises `DataError` listing every problem."""
  problems: list[str] = []
  planes: dict[str, int] = {}
  if (root / PLANES_CSV).exists():
    planes = read_planes_csv(root / PLANES_CSV, problems)
  else:
    logging.warning("fetal_brain_abnormalities: %s not found: plane = -1 for every image",
                    root / PLANES_CSV)
  items: list[Item] = []
  for folder in FOLDERS:
    csv_path = root / folder / CLASSES_CSV
    rows = read_classes_csv(csv_path, problems)
    files = {p.name: p for p in (root / folder).iterdir()
             if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".png")}
    for name in rows:
      if name not in files:
        problems.append(f"{csv_path}: row {name!r} has no image {root / folder / name}")
    for name, path in sorted(files.items()):
      if name not in rows:
        problems.append(f"{path}: image without a row in {csv_path}")
        continue
      rel = f"{folder}/{name}"
      plane = planes.get(rel, labels.UNKNOWN)
      if plane != labels.UNKNOWN and rows[name] != "normal":
        problems.append(f"{root / PLANES_CSV}: {rel} has a plane but class {rows[name]!r}")
      items.append(Item(rel, path, rows[name], source_group(name), plane))
  unused = sorted(set(planes) - {i.id for i in items})
  builder_utils.log_skipped("fetal_brain_abnormalities",
                            f"rows of {PLANES_CSV} whose file is absent (no effect)", unused)
  if problems:
    raise builder_utils.DataError("fetal_brain_abnormalities", problems)
  return items


def assign_splits(items: list[Item]) -> dict[str, str]:
  """group -> split (`splits.assign`, stratified by class over this set's own groups)."""
  group_classes: dict[str, set[str]] = collections.defaultdict(set)
  for it in items:
    group_classes[it.group].add(it.label)
  return splits.assign(group_classes)


def encode(item: Item) -> tuple[str, dict]:
  image = builder_utils.read_grey_uint8(item.path)
  cond = CLASS_MAP[item.label]
  return item.id, features.example(
      id=item.id, group=item.group, image=image, plane=item.plane,
      abnormal=labels.ABNORMAL.index("normal" if cond == "normal" else "abnormal"),
      condition=labels.condition_index(cond))


class Builder(tfds.core.GeneratorBasedBuilder):
  """Fetal brain abnormalities ultrasound (Roboflow v1 export; manual download)."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Splits rebuilt by source group, stratified by class; conditions mapped to "
               "fbjax names; planes of normal images from normal_brain_planes.csv.",
      "2.0.0": "Splits from fbjax.data.splits: FETAL_PLANES_DB patients (the normal images) "
               "have the split they have in every data set (Patient00712, 00719, 00723 and "
               "00724 fixed in test); feature pixel_aspect (NaN: stretched, size unknown).",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download "Fetal Brain Abnormalities Ultrasound", version 1, from Roboflow Universe
  (https://universe.roboflow.com/hritwik-trivedi-gkgrv/fetal-brain-abnormalities-ultrasound),
  export format "Multi-Class Classification" (CSV). Unzip it so that the manual folder
  (`--manual_dir`, either this folder or a parent holding it as
  `fetal_brain_abnormalities/`) holds:

    train/*.jpg  train/_classes.csv
    valid/*.jpg  valid/_classes.csv
    test/*.jpg   test/_classes.csv
    normal_brain_planes.csv     (optional: filename,fetal_planes_db_image_name,brain_plane
                                 for the `normal` images; gives their plane)

  The export's own train/valid/test assignment is not used (it leaks copies of
  one source image across splits). The folder is only read (it may be read-only).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=features.features(),
        supervised_keys=None,
        homepage="https://universe.roboflow.com/hritwik-trivedi-gkgrv/"
                 "fetal-brain-abnormalities-ultrasound",
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    root = builder_utils.find_manual_dir(dl_manager, "fetal_brain_abnormalities", EXPECTED,
                                         self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    self.info.metadata[builder_utils.MANUAL_DIR_KEY] = str(root.resolve())
    items = scan(root)
    split_of = assign_splits(items)
    by_split = {s: [i for i in items if split_of[i.group] == s] for s in splits.SPLITS}
    for s, its in by_split.items():
      logging.info("fetal_brain_abnormalities %s: %d images, %d groups", s, len(its),
                   len({i.group for i in its}))
    return {s: self._generate_examples(its) for s, its in by_split.items()}

  def _generate_examples(self, items):
    yield from builder_utils.ordered_map(encode, items)
