"""Input pipeline: `tfds.data_source` -> grain -> numpy batches.

    source = builders.data_source("fetal_brain_synth", "train", data_dir=d, config="small")
    ds = pipeline.make_dataset(source, size=(128, 128), batch_size=32, seed=0,
                               train=True, num_epochs=None)
    it = iter(ds)
    batch = next(it)            # dict of numpy arrays, leading dim = batch size
    state = it.get_state()      # saveable (JSON-able) iterator state
    it.set_state(state)         # resumes exactly where it was

Order and augmentation are deterministic functions of (seed, epoch, index):
the shuffle is reseeded every epoch, and each element's augmentation draws
from a generator seeded by its position in the stream. Under multi-process
training each process reads the disjoint slice `process_index::process_count`
and batches `batch_size // process_count` examples.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import cv2
import grain
import numpy as np

from fbjax.data import augment as augment_lib
from fbjax.data.features import MASKS, MEASUREMENTS
from fbjax.geometry import preprocess

LABELS = ("plane", "abnormal", "condition")
FLAGS = ("has_clean", *(f"has_{m}" for m in MASKS))
# What a batch carries by default (strings like `id` stay on the host side).
DEFAULT_KEYS = ("image", "clean", *MASKS, *FLAGS, *LABELS, *MEASUREMENTS)


def grey(value) -> np.ndarray:
  """A tfds image feature as HxW: a decoded (H, W, 1) array or encoded PNG bytes.

  Sources whose image features are left encoded (`builders.data_source(...,
  decode_images=False)`) hand over the PNG bytes; decoding them here lets
  `decode` skip absent masks, which cuts the decoding work per example.
  """
  if isinstance(value, (bytes, np.bytes_)):
    arr = cv2.imdecode(np.frombuffer(value, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
      raise ValueError("cannot decode an image feature (corrupt PNG in the data set)")
    return arr if arr.ndim == 2 else arr[..., 0]
  arr = np.asarray(value)
  return arr[..., 0] if arr.ndim == 3 else arr


def decode_uint8(ex: dict, size: tuple[int, int], keys: Sequence[str] = DEFAULT_KEYS) -> dict:
  """The deterministic part of `decode`: letterboxed uint8 images, scalars converted.

  A mask or clean image whose `has_*` flag is False is left out (not decoded);
  `finish` puts zeros in its place.
  """
  image, g = preprocess.letterbox(grey(ex["image"]), size)
  out: dict = {"image": image}
  for k in ("clean", *MASKS):
    if k in keys and bool(ex.get(f"has_{k}", True)):
      out[k], _ = preprocess.letterbox(grey(ex[k]), size, nearest=k != "clean", geometry=g)
  for k in keys:
    if k in FLAGS:
      out[k] = np.bool_(ex[k])
    elif k in LABELS:
      out[k] = np.int32(ex[k])
    elif k in MEASUREMENTS:
      out[k] = np.float32(ex[k])
    elif k in ("id", "group"):
      v = ex[k]
      out[k] = v.decode() if isinstance(v, bytes) else str(v)
  if "pixel_spacing_mm" in out:
    out["pixel_spacing_mm"] = np.float32(g.spacing_on_grid(out["pixel_spacing_mm"]))
  out["scale"] = np.float32(g.scale)
  return out


def to_float(d: dict) -> dict:
  """uint8 `image` (and `clean`, when present) -> float32 in [0, 1]; the rest as is."""
  out = dict(d)
  for k in ("image", "clean"):
    if k in d:
      out[k] = d[k].astype(np.float32) / np.float32(255.0)
  return out


@functools.lru_cache(maxsize=16)
def _zeros(shape: tuple[int, ...], dtype: str) -> np.ndarray:
  z = np.zeros(shape, dtype)
  z.setflags(write=False)  # shared by every example that lacks the feature
  return z


def fill_absent(d: dict, keys: Sequence[str] = DEFAULT_KEYS) -> dict:
  """Zeros (float32 for `clean`, uint8 for masks) for the features left out as absent."""
  out = dict(d)
  hw = tuple(d["image"].shape[:2])
  if "clean" in keys and "clean" not in d:
    out["clean"] = _zeros(hw, "float32")
  for m in MASKS:
    if m in keys and m not in d:
      out[m] = _zeros(hw, "uint8")
  return out


def _is_shared_zeros(v) -> bool:
  return (isinstance(v, np.ndarray) and not v.flags.writeable
          and v is _zeros(tuple(v.shape), v.dtype.name))


def batch_examples(examples: Sequence[dict]) -> dict:
  """Stacks examples into a batch; a feature absent from every example becomes
  one fresh `np.zeros` array instead of a stack of copies."""
  out = {}
  for k, first in examples[0].items():
    vals = [e[k] for e in examples]
    if _is_shared_zeros(first) and all(v is first for v in vals):
      out[k] = np.zeros((len(vals), *first.shape), first.dtype)
    else:
      out[k] = np.stack(vals)
  return out


def finish(d: dict, keys: Sequence[str] = DEFAULT_KEYS) -> dict:
  """`decode_uint8` output -> the batch layout: float images in [0, 1], zeros for absent."""
  return fill_absent(to_float(d), keys)


def decode(ex: dict, size: tuple[int, int], keys: Sequence[str] = DEFAULT_KEYS) -> dict:
  """One tfds example -> fixed-size numpy arrays (float image, uint8 masks).

  The image is letterboxed into `size`; `pixel_spacing_mm` becomes the
  spacing on the network grid and `scale` records the resize factor. Image
  features may be decoded arrays or PNG bytes; a mask or clean image whose
  `has_*` flag is False is all zeros and is not decoded.
  """
  return finish(decode_uint8(ex, size, keys), keys)


class DecodedCache:
  """Random access to `decode_uint8(source[i])`, kept in memory after the first read.

  Holds about H*W bytes per example and per present mask (uint8 on the
  network grid): e.g. ~128 KiB per HC18 example at 256x256. Cached arrays are
  read-only, so a transform that writes in place fails instead of corrupting
  later epochs.
  """

  def __init__(self, source, size: tuple[int, int], keys: Sequence[str]):
    self._source, self._size, self._keys = source, tuple(size), tuple(keys)
    self._items: dict[int, dict] = {}

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, i: int) -> dict:
    d = self._items.get(i)
    if d is None:
      d = decode_uint8(self._source[i], self._size, self._keys)
      for v in d.values():
        if isinstance(v, np.ndarray):
          v.setflags(write=False)
      self._items[i] = d
    return d


def make_dataset(source, *, size: tuple[int, int], batch_size: int, seed: int,
                 train: bool, num_epochs: int | None = 1,
                 keys: Sequence[str] = DEFAULT_KEYS,
                 augment: Callable[[np.random.Generator, dict], dict] | None = None,
                 process_index: int = 0, process_count: int = 1,
                 drop_remainder: bool | None = None, worker_count: int = 0,
                 read_threads: int = 4, cache: bool = False) -> grain.IterDataset:
  """A grain `IterDataset` of numpy batches over a random-access `source`.

  Args:
    source: anything with `__len__` and `__getitem__` (e.g. `tfds.data_source`).
    size: (H, W) of the network grid.
    batch_size: the global batch size (divided among processes).
    seed: seeds the shuffle and the augmentation.
    train: shuffle, augment, and drop the last partial batch.
    num_epochs: None repeats forever.
    augment: (rng, example) -> example; defaults to `augment.augment` when training.
      It receives only the features present (absent masks / clean images are
      added as zeros after it).
    worker_count: grain worker processes (0 = in-process threads only).
    read_threads: threads reading and decoding examples.
    cache: keep each decoded, resized example (uint8, before augmentation) in
      memory, so epochs after the first skip image decoding and resizing (see
      `DecodedCache` for the memory it takes; each grain worker holds its own).
  """
  if batch_size % process_count:
    raise ValueError(f"batch_size {batch_size} is not divisible by {process_count} processes")
  if len(source) == 0:
    raise ValueError("the data source is empty")
  size = tuple(size)
  keys = tuple(keys)
  if cache:
    ds = grain.MapDataset.source(DecodedCache(source, size, keys))
  else:
    ds = grain.MapDataset.source(source)
  if process_count > 1:
    ds = ds[process_index::process_count]
  if train:
    ds = ds.shuffle(seed=seed)
  ds = ds.repeat(num_epochs) if num_epochs != 1 else ds
  if not cache:
    ds = ds.map(lambda ex: decode_uint8(ex, size, keys))
  ds = ds.map(to_float)
  if train:
    # Augmentation sees only the features present: absent masks and clean
    # images are filled with zeros after it (no work spent warping zeros).
    aug = augment or augment_lib.augment
    ds = ds.random_map(lambda ex, rng: aug(rng, ex), seed=seed + 1)
  ds = ds.map(lambda d: fill_absent(d, keys))
  drop = train if drop_remainder is None else drop_remainder
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=64))
  ds = ds.batch(batch_size // process_count, drop_remainder=drop, batch_fn=batch_examples)
  if worker_count > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return ds


def stack(examples: Sequence[dict]) -> dict:
  """Host-side batching of decoded examples (for tools that bypass grain)."""
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}
