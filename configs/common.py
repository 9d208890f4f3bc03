"""Pieces every fbjax config shares: argument parsing, input, data, tracking, checkpoints.

Task configs build on these and set their own model and schedule:

    def get_config(arg=None):
      arg = common.parse_arg(arg, variant="default", runlocal=False, data="fetal_brain_synth")
      config = common.base(arg)
      config.input = common.model_input("image", (224, 224))
      config.sources = common.sources(common.data(arg.data))
      ...
"""

from __future__ import annotations

import ast

import ml_collections

from fbjax.core import schema
from fbjax.enhance import modules as enhance_modules

# Where each data set's builder finds its files and which builder config / splits to use.
DATASETS = {
    "fetal_brain_synth": dict(config="small", train_split="train", val_split="validation"),
    "fetal_brain_abnormalities": dict(config=None, train_split="train",
                                      val_split="validation"),
    "fetal_planes_db": dict(config=None, train_split="train", val_split="validation"),
    "hc18": dict(config=None, train_split="train", val_split="validation"),
    "toy": dict(config=None, train_split="train", val_split="validation"),
}


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses "variant=seed,runlocal,data=hc18" against `defaults` (big_vision style).

  A bare word `x` means `x=True`; values are Python literals where they parse
  as one, strings otherwise. An unknown key is an error.
  """
  out = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise KeyError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
    if not _:
      out[key] = True
      continue
    try:
      out[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key] = value
  return ml_collections.ConfigDict(out)


def data(name: str, *, weight: float = 1.0, evaluate: bool = True,
         **overrides) -> ml_collections.ConfigDict:
  """A block of `config.sources` for data set `name` (`fbjax.data.sources.block_source`):
  which data set and where, its splits and labels, its `weight` in a training epoch and
  whether it is validated on (`eval`). Blocks have no size: the model's `config.input`
  says what every block is read as.

  `name` may carry the builder config after a colon: "fetal_brain_synth:tiny".
  """
  name, _, builder_config = name.partition(":")
  if name not in DATASETS:
    raise KeyError(f"unknown data set {name!r}; known: {sorted(DATASETS)}")
  d = dict(DATASETS[name])
  if builder_config:
    d["config"] = builder_config
  block = ml_collections.ConfigDict(dict(
      name=name, config=d["config"] or "", data_dir="", manual_dir="",
      train_split=d["train_split"], val_split=d["val_split"],
      weight=float(weight), eval=bool(evaluate),
      seed=0,
      label_defaults="",  # e.g. "abnormal=0,condition=0": unknown labels take these values
      where="",           # e.g. "abnormal=0": keep only these examples (fbjax.data.sources)
      train_groups=1.0,   # share of the training split's groups kept (learning curves)
      max_examples=0))    # > 0: only the first N examples of every split (smoke tests)
  if name == "toy":       # the toy set's images are drawn at this size (no builder)
    block.update(num_examples=64, source_size=(64, 64))
  block.update(overrides)
  return block


def sources(*blocks) -> ml_collections.ConfigDict:
  """`config.sources` of single-source trainers: each block under its data set's short
  name (`fbjax.core.schema.SHORT`: phantom, fba, fpdb, hc18, toy)."""
  out = ml_collections.ConfigDict()
  for b in blocks:
    out[schema.SHORT[b.name]] = b
  return out


def model_input(kind: str = "image", size=(224, 224), **align) -> ml_collections.ConfigDict:
  """`config.input`: what the network reads (`fbjax.core.schema`), named once."""
  if kind not in schema.INPUT_KINDS:
    raise KeyError(f"unknown input {kind!r}; expected one of {schema.INPUT_KINDS}")
  unknown = sorted(set(align) - set(schema.ALIGN_KEYS))
  if unknown or (align and kind != "aligned_head"):
    raise KeyError(f"input {kind!r}: unexpected alignment keys {sorted(align)}")
  return ml_collections.ConfigDict(dict(kind=kind, size=tuple(size), **align))


def benchmark_data(config, *, size: int, read_threads: int, worker_count: int, cache: bool,
                   manual_dir: str, data_dir: str) -> None:
  """A benchmark's input options on `config` (in place): square `size`, reader threads and
  workers, the decoded cache; `manual_dir` for a real data set, `data_dir` when given
  (every block of `config.sources`)."""
  config.input.size = (size, size)
  config.update(read_threads=read_threads, data_workers=worker_count, data_cache=cache)
  for block in config.sources.values():
    if block.name not in ("toy", "fetal_brain_synth"):
      block.manual_dir = manual_dir
    if data_dir:
      block.data_dir = data_dir


def base(arg) -> ml_collections.ConfigDict:
  """Fields every trainer reads; task configs fill in model and optimizer."""
  c = ml_collections.ConfigDict()
  c.schema = schema.VERSION     # the layout of this config (`fbjax.core.schema`)
  c.seed = 0
  c.batch_size = 32             # global, over all devices and processes
  c.num_epochs = 30
  c.total_steps = 0             # > 0 overrides num_epochs
  c.num_devices = 0             # 0 = every device (fewer: single-process experiments)
  c.log_every = 50              # steps
  c.eval_every = 0              # steps; 0 = once per epoch
  c.eval_batch_size = 64
  c.checkpoint_every = 1000     # steps (and always at the end)
  c.keep_checkpoints = 3
  c.async_checkpoint = True
  c.num_images = 8              # reconstructions logged per evaluation
  # The input pipeline (every block of `config.sources`): augmentation (flip, rotation +
  # scale, gain + gamma; on the host per example, or in the jitted step:
  # `fbjax.data.device_augment`, `augment_params` overriding its defaults), the decoded
  # cache, grain workers (0: threads in this process) and reader threads.
  c.augment = True
  c.augment_on = "host"
  c.data_cache = False
  c.data_workers = 0
  c.read_threads = 4
  c.wandb = ml_collections.ConfigDict(dict(
      mode="offline", project="fbjax", entity="", group="", name="", tags=(), notes=""))
  # Enhancement of the input batch on device (fbjax.enhance.modules): chain "none" = off,
  # e.g. --config.enhance.chain=srad --config.enhance.srad.iterations=20.
  c.enhance = enhance_modules.default_config("none")
  if arg.get("runlocal"):
    c.log_every = 5
    c.checkpoint_every = 20
    c.eval_batch_size = 16
    c.num_images = 4
  return c
