"""Config -> random-access data source: the one place that maps a data block to data.

    source = sources.block_source(config.sources.hc18, "train", model_input=config.input)
    ds = pipeline.make_dataset(source, size=config.input.size, ...)

A block of `config.sources` (`fbjax.core.schema`) has: `name` (a builder under
`datasets/`, or "toy" for a small in-memory set that needs no building),
`config` (the builder config, e.g. "tiny"/"small"/"full" for the phantom),
`data_dir` (where built data lives; default `default_data_dir()`),
`manual_dir` (raw files for builders of real data), and two optional label
specs: `label_defaults` ("abnormal=0,condition=0": unknown labels take these
values, e.g. screening images taken as normal) and `where` ("abnormal=0":
keep only these examples, e.g. an autoencoder trained on normal images only).
A block has no size: what the network reads is the model's `config.input`.

The "toy" source is a list of examples in the decoded tfds feature layout
(what `tfds.data_source` returns: images (H, W, 1) uint8, labels int,
measurements float): bright elliptical rings in speckle, deterministic from
(seed, index). It exists for tests and smoke runs, not for measuring anything.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import pathlib

import ml_collections
import numpy as np

from fbjax.core import labels, schema
from fbjax.data import aligned, builders
from fbjax.data.features import MASKS, MEASUREMENTS
from fbjax.data.mix import MixSource, Subset

TOY = "toy"
TOY_SPLITS = {"train": 0, "validation": 1, "test": 2, "unlabelled": 3}


def default_data_dir() -> str:
  """`$FBJAX_DATA_DIR`, else `<user cache>/fbjax/tensorflow_datasets` (never the source tree)."""
  env = os.environ.get("FBJAX_DATA_DIR")
  if env:
    return env
  cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(pathlib.Path.home(), ".cache")
  return os.path.join(cache, "fbjax", "tensorflow_datasets")


class ListSource:
  """Random access over a list of examples (the `tfds.data_source` protocol)."""

  def __init__(self, examples: list[dict]):
    self._examples = list(examples)

  def __len__(self) -> int:
    return len(self._examples)

  def __getitem__(self, i):
    return self._examples[i]

  def __repr__(self) -> str:
    return f"ListSource({len(self)} examples)"


def toy_example(rng: np.random.Generator, index: int, size: tuple[int, int]) -> dict:
  """One decoded example: an elliptical bright ring (skull) in multiplicative speckle."""
  h, w = size
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  cy, cx = h * rng.uniform(0.4, 0.6), w * rng.uniform(0.4, 0.6)
  a, b = w * rng.uniform(0.25, 0.4), h * rng.uniform(0.2, 0.33)
  th = rng.uniform(0, math.pi)
  xr = (xx - cx) * math.cos(th) + (yy - cy) * math.sin(th)
  yr = -(xx - cx) * math.sin(th) + (yy - cy) * math.cos(th)
  r = np.sqrt((xr / a) ** 2 + (yr / b) ** 2)
  head = (r <= 1.0).astype(np.uint8)
  skull = ((r > 0.9) & (r <= 1.0)).astype(np.uint8)
  brain = (r <= 0.9).astype(np.uint8)
  clean = 0.15 + 0.25 * brain + 0.6 * skull
  speckle = rng.rayleigh(1.0, size=(h, w)).astype(np.float32) / math.sqrt(math.pi / 2)
  image = np.clip(clean * speckle, 0, 1)
  to_u8 = lambda x: np.round(255 * x).astype(np.uint8)[..., None]
  spacing = float(rng.uniform(0.1, 0.3))
  ex = {"id": f"toy_{index:05d}", "group": f"toy_{index:05d}", "image": to_u8(image),
        "clean": to_u8(clean), "has_clean": True,
        "plane": int(rng.integers(0, len(labels.PLANES))), "abnormal": 0, "condition": 0}
  for name, m in zip(MASKS, (head, skull, brain), strict=True):
    ex[name] = m[..., None]
    ex[f"has_{name}"] = True
  for m in MEASUREMENTS:
    ex[m] = np.float32(np.nan)
  ex["pixel_spacing_mm"] = np.float32(spacing)
  return ex


def toy_source(split: str, num_examples: int = 64, size=(64, 64), seed: int = 0) -> ListSource:
  if split not in TOY_SPLITS:
    raise KeyError(f"unknown split {split!r} of the toy data; known: {sorted(TOY_SPLITS)}")
  rng = np.random.default_rng([seed, TOY_SPLITS[split]])
  return ListSource([toy_example(rng, i, tuple(size)) for i in range(num_examples)])


def get_source(data, split: str):
  """A random-access source for `split` of the data set described by `data`."""
  name = data.name
  if name == TOY:
    n = data.get("num_examples", 64)
    if split != "train":
      n = max(8, n // 4)
    source = toy_source(split, n, tuple(data.get("source_size") or (64, 64)),
                        data.get("seed", 0))
    return filtered(source, data)
  if name not in builders.available():
    raise KeyError(f"unknown data set {name!r}; available: {[TOY, *builders.available()]}")
  # Images stay PNG bytes until `pipeline.decode`, which skips absent masks.
  source = builders.data_source(name, split, data_dir=data.get("data_dir") or default_data_dir(),
                                config=data.get("config") or None,
                                manual_dir=data.get("manual_dir") or None, decode_images=False)
  return filtered(source, data)


# ---------------------------------------------------------------------------
# Label defaults and selections (a block's `label_defaults` and `where`)
# ---------------------------------------------------------------------------

LABEL_KEYS = ("plane", "abnormal", "condition")


def parse_labels(spec: str) -> dict[str, int]:
  """"abnormal=0,condition=0" -> {"abnormal": 0, "condition": 0} (label names checked)."""
  out = {}
  for item in filter(None, (s.strip() for s in str(spec or "").split(","))):
    key, eq, value = item.partition("=")
    key = key.strip()
    if not eq or key not in LABEL_KEYS:
      raise ValueError(f"bad label spec {item!r} in {spec!r}: expected NAME=INT with NAME one "
                       f"of {LABEL_KEYS}")
    out[key] = int(value)
  return out


class Relabelled:
  """A source whose unknown labels (-1) are replaced by `defaults`.

  E.g. routine screening images without anomaly labels (HC18, FETAL_PLANES_DB)
  taken as normal: `Relabelled(source, {"abnormal": 0, "condition": 0})`.
  """

  def __init__(self, source, defaults: dict[str, int]):
    self._source, self._defaults = source, dict(defaults)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, i):
    ex = dict(self._source[i])
    for k, v in self._defaults.items():
      if int(ex.get(k, -1)) < 0:
        ex[k] = v
    return ex

  def __repr__(self) -> str:
    return f"Relabelled({self._source!r}, {self._defaults})"


def label_table(source, keys=LABEL_KEYS) -> dict[str, np.ndarray]:
  """{label: (N,) int array} read from every example (image bytes are not decoded)."""
  rows = [source[i] for i in range(len(source))]
  return {k: np.array([int(r.get(k, -1)) for r in rows], np.int64) for k in keys}


def select(source, where: dict[str, int]):
  """The examples whose labels equal every value of `where`; an empty result is an error."""
  if not where:
    return source
  table = label_table(source, tuple(where))
  keep = np.ones(len(source), bool)
  for k, v in where.items():
    keep &= table[k] == v
  if not keep.any():
    raise ValueError(f"no example of {source!r} has labels {where}")
  return Subset(source, np.nonzero(keep)[0])


def group_share(group) -> float:
  """A group's stable position in [0, 1): the first 8 bytes of sha1(group) / 2**64.

  Unsalted and independent of the split assignment's salted hashes
  (`builder_utils.hash_unit`): a training split holds the groups whose split
  hash lies above the test and validation shares, so thinning it by that same
  hash would keep a biased (or empty) set.
  """
  g = group.decode() if isinstance(group, bytes) else str(group)
  return int.from_bytes(hashlib.sha1(g.encode()).digest()[:8], "big") / 2.0**64


def group_subset_indices(source, fraction: float, *, name: str = "") -> np.ndarray:
  """Indices of the examples of `source` whose group's `group_share` is below `fraction`.

  A stable share of the groups (patients, source images, synthetic fetuses),
  the same on every machine and in any order; nested: the groups kept at 0.25
  are among those kept at 0.5. For learning curves (`train_groups` of a data
  block). An error naming `name` when no group is kept.
  """
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"{name or repr(source)}: train_groups={fraction}; expected 0 < F <= 1")
  keep = np.array([group_share(source[i]["group"]) < fraction for i in range(len(source))],
                  bool)
  if not keep.any():
    raise ValueError(f"{name or repr(source)}: train_groups={fraction} keeps no group of "
                     f"{len(source)} examples")
  return np.nonzero(keep)[0]


def filtered(source, data):
  """Applies `data.label_defaults` then `data.where` (both optional label specs)."""
  defaults = parse_labels(data.get("label_defaults", ""))
  if defaults:
    source = Relabelled(source, defaults)
  return select(source, parse_labels(data.get("where", "")))


# ---------------------------------------------------------------------------
# Config blocks -> the sources a trainer reads (one block, or a weighted mix)
# ---------------------------------------------------------------------------


class TaskMask:
  """A source whose labels outside `tasks` read as unknown (-1).

  A source teaches only the tasks its labels are meant for (e.g. HC18's
  abnormal labels are defaults, not findings): `block.tasks` in a config.
  """

  def __init__(self, source, tasks):
    self._source, self._drop = source, [k for k in LABEL_KEYS if k not in tasks]

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, i):
    ex = self._source[i]
    if not self._drop:
      return ex
    ex = dict(ex)
    for k in self._drop:
      ex[k] = -1
    return ex

  def __repr__(self) -> str:
    return f"TaskMask({self._source!r}, drops {self._drop})"


def data_block(block):
  """`block` with a data_dir of its own for each manual_dir.

  tfds reuses a data set already prepared in `data_dir`, whatever
  `manual_dir` it was built from; so that pointing `manual_dir` at another
  folder builds that folder (rather than silently reading the old one), data
  built from a manual folder goes to `<data_dir>/manual/<hash of its path>`.
  An explicit `data_dir` is used as given.
  """
  if not block.get("manual_dir") or block.get("data_dir"):
    return block

  key = hashlib.sha1(os.path.realpath(block.manual_dir).encode()).hexdigest()[:12]
  out = ml_collections.ConfigDict(block.to_dict())
  out.data_dir = os.path.join(default_data_dir(), "manual", key)
  return out


def block_source(block, split: str, *, model_input=None, masked: bool = True,
                 head_table=None):
  """The source of one config block's `split`: `get_source` of the block (its own
  data_dir per manual_dir), labels outside `block.tasks` (if given) masked.

  `model_input` is the model's `config.input` (None: the image; a second-stage
  segmenter's "head_crop" reads the image too, cropped by `fbjax.evaluation.coarse_fine`). With kind
  "aligned_head" every image is the aligned head it describes
  (`fbjax.data.aligned`; examples without a usable head are left out and
  counted in the source's `head_counts`). Where the heads are is
  `head_table(block, split, source, model_input)` -> (ellipses, kinds):
  `fbjax.evaluation.head_tables.table`, which the caller passes (the data layer runs no model).
  """
  src = get_source(data_block(block), split)
  limit = int(block.get("max_examples", 0) or 0)
  if 0 < limit < len(src):   # smoke tests: the first N examples of the split
    src = Subset(src, np.arange(limit))
  kind = "image" if model_input is None else model_input.get("kind")
  if kind not in schema.INPUT_KINDS:
    raise ValueError(f"data block {block.name!r} read as the model's input={kind!r} "
                     f"(config.input.kind); expected one of {schema.INPUT_KINDS}")
  keep = None
  fraction = float(block.get("train_groups", 1.0))
  if fraction != 1.0 and split == block.get("train_split"):
    keep = group_subset_indices(src, fraction, name=f"data block {block.name!r} {split}")
    logging.info("%s %s: %d of %d examples (train_groups=%g)", block.name, split, keep.size,
                 len(src), fraction)
  if kind == "aligned_head":

    if head_table is None:
      raise ValueError(f"data block {block.name!r} reads aligned heads: give head_table "
                       "(fbjax.evaluation.head_tables.table), which finds the heads")
    ell, kinds = head_table(block, split, src, model_input)   # cached for the whole split
    if keep is not None:
      src, ell, kinds = Subset(src, keep), ell[keep], np.asarray(kinds)[keep]
    src, counts = aligned.aligned_source(src, ell, model_input, kinds=kinds,
                                         name=f"{block.name} {split}")
    if counts["no_head"]:
      logging.info("%s %s: %d of %d examples without a usable head ellipse, left out",
                   block.name, split, counts["no_head"], counts["total"])
  elif keep is not None:
    src = Subset(src, keep)
  head_counts = getattr(src, "head_counts", None)
  if masked and block.get("tasks") is not None:
    src = TaskMask(src, tuple(block.tasks))
    if head_counts is not None:
      src.head_counts = head_counts
  return src


def training_blocks(config) -> dict:
  """The blocks of `config.sources` trained on (`weight` > 0), in their order."""
  out = {n: b for n, b in config.sources.items() if float(b.get("weight", 0.0)) > 0}
  if not out:
    raise ValueError(f"no data to train on: every block of config.sources "
                     f"({', '.join(config.sources)}) has weight 0")
  return out


def eval_blocks(config) -> dict:
  """The blocks of `config.sources` validated on (`eval`), in their order."""
  return {n: b for n, b in config.sources.items() if b.get("eval")}


def validation_source(config):
  """The validation split of the one block of `config.sources` validated on (`eval`): the
  trainers of one source (autoencoder, despeckler)."""
  blocks = eval_blocks(config)
  if len(blocks) != 1:
    raise ValueError(f"config.sources: one block is validated on (eval), not {len(blocks)} "
                     f"({', '.join(blocks) or 'none'})")
  (block,) = blocks.values()
  return block_source(block, block.val_split)


def mixture(blocks: dict, weights=None, split_key: str = "train_split", *, model_input=None,
            head_table=None, wrap=None):
  """The weighted mix of `blocks` (name -> config block) at each block's `split_key`.

  `weights`: one per block (None: each block's `weight`, else equal shares).
  `wrap(source)`, if given, is applied to each block's source before mixing (e.g. a
  second-stage segmenter's head crops). A single block gives its source as it is;
  several give a `MixSource`.
  """

  srcs = [block_source(b, b[split_key], model_input=model_input, head_table=head_table)
          for b in blocks.values()]
  if wrap is not None:
    srcs = [wrap(s) for s in srcs]
  if len(srcs) == 1:
    return srcs[0]
  if weights is None and all("weight" in b for b in blocks.values()):
    weights = [float(b.weight) for b in blocks.values()]
  return MixSource(srcs, list(weights) if weights else None)
