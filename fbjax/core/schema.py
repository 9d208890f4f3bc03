"""The one config schema every trainer writes and every reader of a trained model reads.

    config.input    what the network reads, named once:
                    {"kind": "image", "size": (H, W)}            the letterboxed image
                    {"kind": "aligned_head", "size": (H, W),      the head cut out and turned
                     "head_fraction", "margin", "seg_workdir"}  (`geometry.align.aligned_head`)
                    {"kind": "head_crop", "size": (H, W)}         a second-stage segmenter's
                                                                  head crops (`config.crop`)
    config.sources  the data, one block per source (`fbjax.data.sources.block_source`):
                    which data set and where (name, config, manual_dir, data_dir), splits,
                    labels (label_defaults, where, tasks), `weight` (its share of a
                    training epoch; 0: not trained on) and `eval` (validated on during
                    training, and measured by `launch.evaluate` by default). A block has
                    no size: every block is read at `input.size`.
    top level       the input pipeline's switches (augment, augment_on, augment_params,
                    data_cache, data_workers, read_threads).

Workdirs and bundles written before this schema (`config.data` / `config.phantom` blocks
with their own `size`, a classifier's `image_size` + `align` + string `input`) are
upgraded on read (`upgrade`), so a trained model keeps reading what it was trained to.
"""

from __future__ import annotations

import copy

VERSION = 2
INPUT_KINDS = ("image", "aligned_head", "head_crop")
# What a classifier (and the data layer's blocks) may read.
CLASSIFIER_INPUTS = ("image", "aligned_head")
# The alignment of an aligned head (`fbjax.geometry.align.aligned_head`'s keyword arguments) and the
# segmenter whose ellipses it was cut around where an example has no head mask.
ALIGN_KEYS = ("head_fraction", "margin", "seg_workdir")
# What the pipeline reads from the top level (a block of the old schema held them).
PIPELINE_KEYS = {"augment": "augment", "augment_on": "augment_on",
                 "augment_params": "augment_params", "cache": "data_cache",
                 "worker_count": "data_workers", "read_threads": "read_threads"}
# Keys of an old block that are the model's input or the pipeline's, not the data's.
_NOT_DATA = ("size", "input", "align", *PIPELINE_KEYS)
# The key of a source in `config.sources`, by data set (single-block trainers).
SHORT = {"fetal_brain_synth": "phantom", "fetal_brain_abnormalities": "fba",
         "fetal_planes_db": "fpdb", "hc18": "hc18", "toy": "toy"}


def input_of(config) -> dict:
  """`config.input` checked: a kind of `INPUT_KINDS` and a size (H, W)."""
  inp = config.get("input")
  if not hasattr(inp, "get") or inp.get("kind") not in INPUT_KINDS or "size" not in inp:
    raise ValueError(f"config.input={inp!r}: expected {{'kind': one of {INPUT_KINDS}, "
                     "'size': (H, W), ...}")
  return inp


def size_of(config) -> tuple[int, int]:
  """The grid (H, W) every block of `config` is read at."""
  return tuple(int(v) for v in input_of(config)["size"])


def is_current(cfg) -> bool:
  return int(cfg.get("schema", 1) or 1) >= VERSION


def _data_block(block: dict) -> dict:
  out = {k: v for k, v in block.items() if k not in _NOT_DATA}
  out.setdefault("max_examples", 0)
  if block.get("name") == "toy":   # the toy images are made at the size they were read at
    out["source_size"] = list(block.get("source_size") or block["size"])
  else:
    out.pop("num_examples", None)  # the toy set's own count
  return out


def upgrade(cfg: dict) -> dict:
  """A recorded config (a JSON dict) in the current schema; one already in it unchanged.

  The old schema's data blocks (`data`, `phantom`: top-level dicts with a `name` and a
  `val_split`, each with its `size` and pipeline switches; or a classifier's `sources` with
  per-block sizes beside `image_size`, a string `input` and `align`) become `sources` and
  one `input`. `train_on` / `train_weights` / `eval_on` become the blocks' `weight` and
  `eval`.
  """
  if is_current(cfg):
    return cfg
  cfg = copy.deepcopy(cfg)
  old = {k: v for k, v in cfg.items() if isinstance(v, dict) and "name" in v
         and "val_split" in v}
  if old:   # segmenter, autoencoder, despeckler: config.data (+ config.phantom)
    first = old.get("data") or next(iter(old.values()))
    kind = "head_crop" if int(cfg.get("stage", 1) or 1) == 2 else "image"
    cfg["input"] = {"kind": kind, "size": list(first["size"])}
    for key, top in PIPELINE_KEYS.items():
      if key in first:
        cfg[top] = first[key]
    train_on = list(cfg.pop("train_on", None) or ["data"])
    weights = list(cfg.pop("train_weights", None) or [])
    eval_on = list(cfg.pop("eval_on", None) or ["data"])
    # Every old role keeps its name but `data`: a segmenter's is HC18's place (`hc18`,
    # whatever data set it held, as today's configs name it), another trainer's one block
    # takes its data set's short name where that is free (else it stays `data`).
    keys = {role: role for role in old if role != "data"}
    if "data" in old:
      short = "hc18" if cfg.get("trainer") == "segment" else SHORT.get(old["data"]["name"])
      keys["data"] = short if short and short not in keys else "data"
    srcs = {}
    for role, block in old.items():
      new = _data_block(block)
      share = (weights[train_on.index(role)] if weights else 1.0) if role in train_on else 0.0
      new.update(weight=float(share), eval=role in eval_on)
      srcs[keys[role]] = new
      del cfg[role]
    cfg["sources"] = srcs
  elif "image_size" in cfg or "align" in cfg or isinstance(cfg.get("input"), str):
    # classifier: config.sources + image_size + input (a string) + align
    kind = cfg.get("input") if isinstance(cfg.get("input"), str) else "image"
    align = cfg.pop("align", None) or {}
    size = list(cfg.pop("image_size", None) or align["size"])
    inp = {"kind": kind, "size": list(align.get("size", size)) if kind == "aligned_head"
           else size}
    if kind == "aligned_head":
      inp.update({k: align[k] for k in ALIGN_KEYS if k in align})
    cfg["input"] = inp
    cfg["sources"] = {n: _data_block(b) for n, b in (cfg.get("sources") or {}).items()}
  else:     # nothing of the old schema (e.g. a config of data blocks only): as it is
    return cfg
  cfg.setdefault("augment_on", "host")   # the default of records that did not say
  cfg["schema"] = VERSION
  return cfg


# The kinds of trained model a workdir holds.
KINDS = ("autoencoder", "segmenter", "classifier", "despeckler")
# Workdirs written before `kind` was recorded name their trainer instead.
_KIND_OF_TRAINER = {"autoencoder": "autoencoder", "segment": "segmenter",
                    "classify": "classifier", "despeckle": "despeckler"}


def kind_of(config, where: str = "") -> str:
  """The model kind a workdir's config records (`KINDS`); older records name their trainer."""
  kind = config.get("kind") or _KIND_OF_TRAINER.get(config.get("trainer", ""))
  if kind not in KINDS:
    raise ValueError(f"{where or 'config'}: unknown model kind {kind!r} "
                     f"(trainer {config.get('trainer')!r}); expected one of {KINDS}")
  return kind
