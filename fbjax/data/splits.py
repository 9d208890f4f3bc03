"""One split per group, in every data set.

A patient (or source image, or synthetic fetus) must sit in one split
wherever it appears: FETAL_PLANES_DB patients appear in the `fetal_planes_db`
builder (original PNG and 640x640 JPEG layouts) and, as the `normal` images,
in `fetal_brain_abnormalities`. Every builder asks `assign` for its splits;
`split_of` gives the split of a group shared between data sets from its name
alone, so two builders cannot disagree.

Groups, by namespace (`namespace`):

  "fpdb"       `PatientNNNNN` (`fpdb_group`), FETAL_PLANES_DB patients, in any
               data set: `FIXED` if listed there, else by a salted hash of the
               name: `test` below `FRACTIONS["test"]`, `validation` in the next
               `FRACTIONS["validation"]`, else `train`. FETAL_PLANES_DB's own
               `Train` column (the paper's split) is not used: it puts every
               patient of the abnormalities set's normal images in training,
               which would leave that set's test split without normals.
  "hc18"       `hc18-NNN` (labelled) and `hc18-test-NNN` (the official,
               unlabelled test images): `test` for the latter; the former
               4:1 train/validation (`HC18_VALIDATION`, salted-hash rank, the
               assignment HC18 has had since its first version).
  "synth"      `synth-s<seed>-...`: the split whose phantom stream has that seed
               (`SYNTH_SEEDS`; each split is its own stream).
  "fba"        any other name in `fetal_brain_abnormalities` (a source-image
               key): stratified by class over that set's groups, with its
               FETAL_PLANES_DB patients placed first by `split_of`.

`FIXED`: patients whose images have been test images of the abnormalities set
(its normal test groups since that builder's first version), kept in test
everywhere so that results measured on them stay held out.
"""

from __future__ import annotations

import collections
import pathlib
import re
from collections.abc import Iterable, Mapping

from fbjax.data import builder_utils, builders

SPLITS = ("train", "validation", "test")
SEED = 12
FRACTIONS = {"validation": 0.15, "test": 0.15}
FIXED = {f"Patient{n:05d}": "test" for n in (712, 719, 723, 724)}
HC18_SEED = 18
HC18_VALIDATION = 0.2
SYNTH_SEEDS = {"train": 101, "validation": 102, "test": 103, "unlabelled": 104}
FBA_SEED = 16

_FPDB = re.compile(r"^Patient\d{5}$")
_HC18 = re.compile(r"^hc18-(test-)?\d+$")
_SYNTH = re.compile(r"^synth-s(\d+)-")


def fpdb_group(patient: int | str) -> str:
  """`PatientNNNNN` from a FETAL_PLANES_DB patient number (737, "737", "Patient737")."""
  s = str(patient).strip()
  s = s[len("Patient"):] if s.lower().startswith("patient") else s
  if not s.isdigit():
    raise ValueError(f"not a FETAL_PLANES_DB patient number: {patient!r}")
  return f"Patient{int(s):05d}"


def namespace(group: str) -> str:
  if _FPDB.match(group):
    return "fpdb"
  if _HC18.match(group):
    return "hc18"
  if _SYNTH.match(group):
    return "synth"
  return "fba"


def split_of(group: str) -> str:
  """The split of a FETAL_PLANES_DB patient or phantom group, from its name alone."""
  ns = namespace(group)
  if ns == "synth":
    seed = int(_SYNTH.match(group).group(1))
    by_seed = {v: k for k, v in SYNTH_SEEDS.items()}
    if seed not in by_seed:
      raise ValueError(f"{group}: phantom seed {seed} is not a split stream {SYNTH_SEEDS}")
    return by_seed[seed]
  if ns != "fpdb":
    raise ValueError(f"{group}: the split of a {ns!r} group depends on its data set; "
                     "use splits.assign")
  if group in FIXED:
    return FIXED[group]
  u = builder_utils.hash_unit(group, SEED)
  if u < FRACTIONS["test"]:
    return "test"
  if u < FRACTIONS["test"] + FRACTIONS["validation"]:
    return "validation"
  return "train"


def assign(group_classes: Mapping[str, Iterable[str]] | Iterable[str]) -> dict[str, str]:
  """group -> split for every group of one data set (the one rule of all builders).

  `group_classes` maps each group to the classes of its files (used to
  stratify the abnormalities set's own groups), or is just the groups.
  """
  if not isinstance(group_classes, Mapping):
    group_classes = {g: () for g in group_classes}
  by_ns: dict[str, dict[str, set]] = collections.defaultdict(dict)
  for g, classes in group_classes.items():
    by_ns[namespace(g)][g] = set(classes)
  out: dict[str, str] = {}
  for ns in ("fpdb", "synth"):
    out.update({g: split_of(g) for g in by_ns.get(ns, {})})
  hc18 = by_ns.get("hc18", {})
  labelled = [g for g in hc18 if not g.startswith("hc18-test-")]
  val = builder_utils.carve_groups(labelled, HC18_VALIDATION, HC18_SEED)
  out.update({g: "test" if g.startswith("hc18-test-") else
              ("validation" if g in val else "train") for g in hc18})
  fba = by_ns.get("fba", {})
  if fba:
    # FETAL_PLANES_DB patients of the same set are placed first and count
    # towards each class's share.
    fixed = {g: out[g] for g in by_ns.get("fpdb", {})}
    both = {**{g: by_ns["fpdb"][g] for g in fixed}, **fba}
    strat = builder_utils.stratified_group_split(both, FRACTIONS, FBA_SEED, fixed=fixed)
    out.update({g: strat[g] for g in fba})
  return out


def check_disjoint(memberships: Mapping[str, Mapping[str, Iterable[str]]]) -> list[str]:
  """Groups found in two different splits: {data set: {split: groups}} -> problems."""
  where: dict[str, set[tuple[str, str]]] = collections.defaultdict(set)
  for ds, by_split in memberships.items():
    for split, groups in by_split.items():
      for g in groups:
        where[g].add((ds, split))
  return [f"{g}: {sorted(w)}" for g, w in sorted(where.items())
          if len({s for _, s in w}) > 1]


def hc18_split(root: pathlib.Path) -> dict[str, list[pathlib.Path]]:
  """HC18 labelled image paths by split, by the builder's own scan and split rule."""
  # The builder module as fbjax imports it (once; tfds registers a builder per import).
  hc18 = builders.builder_module("hc18")
  labelled, unlabelled = hc18.scan(root)
  split_of = assign(i.group for i in labelled + unlabelled)
  out: dict[str, list[pathlib.Path]] = {}
  for i in labelled:
    out.setdefault(split_of[i.group], []).append(pathlib.Path(i.image))
  return {k: sorted(v) for k, v in out.items()}
