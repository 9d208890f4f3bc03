"""Finds the tfds builders in the repository's `datasets/` folder.

The builders live in `datasets/<name>/<name>_dataset_builder.py`, tfds
style. They are imported by path under the package name `fbjax_datasets`,
never as a top-level `datasets` package, so that the Hugging Face package of
that name can be installed beside fbjax without either shadowing the other.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pathlib
import sys
import types

import cloudpickle
import tensorflow_datasets as tfds

ROOT = pathlib.Path(__file__).resolve().parents[2] / "datasets"
PACKAGE = "fbjax_datasets"


def available() -> list[str]:
  return sorted(p.parent.name for p in ROOT.glob("*/*_dataset_builder.py")
                if p.name == f"{p.parent.name}_dataset_builder.py")


def _ensure_package(name: str, path: pathlib.Path) -> None:
  if name in sys.modules:
    return
  # A file-based spec (the `__init__.py` need not exist; it is never executed)
  # so that `importlib.resources` maps the package to its real folder: tfds
  # locates a builder's README.md, CITATIONS.bib and checksums through it.
  spec = importlib.util.spec_from_file_location(
      name, path / "__init__.py", submodule_search_locations=[str(path)])
  sys.modules[name] = importlib.util.module_from_spec(spec)


def builder_module(name: str) -> types.ModuleType:
  """Imports (once) and returns the module of the builder `name`."""
  folder = ROOT / name
  if not (folder / f"{name}_dataset_builder.py").exists():
    raise KeyError(f"no builder {name!r} under {ROOT}; available: {available()}")
  _ensure_package(PACKAGE, ROOT)
  _ensure_package(f"{PACKAGE}.{name}", folder)
  module = importlib.import_module(f"{PACKAGE}.{name}.{name}_dataset_builder")
  # grain worker processes (`worker_count > 0`) unpickle the data sources
  # without this path-based package: what they reference of the module
  # travels by value.
  cloudpickle.register_pickle_by_value(module)
  return module


def builder_class(name: str) -> type[tfds.core.DatasetBuilder]:
  return builder_module(name).Builder


def builder(name: str, *, data_dir: str | os.PathLike, config: str | None = None,
            manual_dir: str | os.PathLike | None = None) -> tfds.core.DatasetBuilder:
  """A builder instance writing to / reading from `data_dir`."""
  cls = builder_class(name)
  kwargs = {"data_dir": os.fspath(data_dir)}
  if config:
    kwargs["config"] = config
  b = cls(**kwargs)
  return b


def _manual_root(name: str, manual_dir: str | os.PathLike,
                 config: str | None = None) -> pathlib.Path:
  """The folder a builder reads: `<manual_dir>/<name>` if it exists, else `manual_dir`.

  A builder module whose configs read other folders says which with
  `manual_root(manual_dir, config)`.
  """
  manual_dir = os.path.expanduser(os.fspath(manual_dir))
  module = builder_module(name)
  if hasattr(module, "manual_root"):
    try:
      return module.manual_root(manual_dir, config)
    except FileNotFoundError:
      pass
  base = pathlib.Path(manual_dir)
  return (base / name if (base / name).is_dir() else base).resolve()


def prepare(name: str, *, data_dir: str | os.PathLike, config: str | None = None,
            manual_dir: str | os.PathLike | None = None) -> tfds.core.DatasetBuilder:
  """Builds the data set if it is not built yet and returns the builder.

  Builders of real data record the manual folder they read (metadata
  `manual_dir`). If `data_dir` already holds a build from another folder, this
  raises instead of silently returning the other copy's data: use another
  `data_dir` (one per copy) or delete the old build.
  """
  data_dir = os.path.expanduser(os.fspath(data_dir))
  if manual_dir is not None:
    manual_dir = os.path.expanduser(os.fspath(manual_dir))
  b = builder(name, data_dir=data_dir, config=config, manual_dir=manual_dir)
  if manual_dir is not None and b.is_prepared():
    built_from = (b.info.metadata or {}).get("manual_dir")
    wanted = str(_manual_root(name, manual_dir, b.builder_config.name
                              if b.builder_config else None))
    if built_from is not None and built_from != wanted:
      raise ValueError(
          f"{b.data_path} holds {name} built from {built_from}, but manual_dir points at "
          f"{wanted}; give a separate data_dir for each copy of the data (or delete "
          f"{b.data_path} to rebuild)")
  dl_config = tfds.download.DownloadConfig(
      manual_dir=None if manual_dir is None else os.fspath(manual_dir))
  b.download_and_prepare(file_format="array_record", download_config=dl_config)
  return b


# Features that are images; `data_source(..., decode_images=False)` leaves them encoded.
IMAGE_FEATURES = ("image", "clean", "head_mask", "skull_mask", "brain_mask")


def data_source(name: str, split: str, *, data_dir: str | os.PathLike,
                config: str | None = None, manual_dir: str | os.PathLike | None = None,
                decode_images: bool = True):
  """Builds if needed, then returns `tfds.data_source`-style random access for a split.

  With `decode_images=False` the image features come as PNG bytes;
  `pipeline.decode` decodes them and skips masks flagged absent, which is
  several times less work per example than decoding every image feature.
  """
  b = prepare(name, data_dir=data_dir, config=config, manual_dir=manual_dir)
  if decode_images:
    return b.as_data_source(split=split)
  decoders = {k: tfds.decode.SkipDecoding() for k in IMAGE_FEATURES if k in b.info.features}
  return b.as_data_source(split=split, decoders=decoders)
