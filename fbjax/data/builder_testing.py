"""Helpers for builder tests (tfds' own test case needs TensorFlow, which fbjax does not use).

    b = builder_testing.build("hc18", manual_dir, tmp_path / "tfds")
    assert builder_testing.split_counts(b) == {"train": 6, "validation": 1, "test": 2}
    exs = builder_testing.examples(b, "train")
"""

from __future__ import annotations

import os
import pathlib
import shutil

import tensorflow_datasets as tfds

from fbjax.data import builders


def build(name: str, manual_dir: str | os.PathLike, data_dir: str | os.PathLike,
          config: str | None = None) -> tfds.core.DatasetBuilder:
  tfds.disable_progress_bar()
  return builders.prepare(name, data_dir=data_dir, config=config, manual_dir=manual_dir)


def split_counts(b: tfds.core.DatasetBuilder) -> dict[str, int]:
  return {k: v.num_examples for k, v in b.info.splits.items()}


def examples(b: tfds.core.DatasetBuilder, split: str) -> list[dict]:
  """Every example of a split, decoded, with `id`/`group` as str."""
  src = b.as_data_source(split=split)
  out = []
  for i in range(len(src)):
    ex = dict(src[i])
    for k in ("id", "group"):
      ex[k] = ex[k].decode() if isinstance(ex[k], bytes) else str(ex[k])
    out.append(ex)
  return out


def ids_and_groups(b: tfds.core.DatasetBuilder, split: str) -> tuple[list[str], list[str]]:
  """(ids, groups) of a split without decoding the images."""
  skip = {k: tfds.decode.SkipDecoding() for k in builders.IMAGE_FEATURES}
  src = b.as_data_source(split=split, decoders=skip)
  ids, groups = [], []
  for i in range(len(src)):
    ex = src[i]
    ids.append(ex["id"].decode() if isinstance(ex["id"], bytes) else str(ex["id"]))
    groups.append(ex["group"].decode() if isinstance(ex["group"], bytes) else str(ex["group"]))
  return ids, groups


def copy_tree(src: str | os.PathLike, dst: str | os.PathLike) -> pathlib.Path:
  """A writable copy of a manual folder (e.g. dummy_data) to break in a test."""
  dst = pathlib.Path(dst)
  shutil.copytree(src, dst)
  for p in [dst, *dst.rglob("*")]:
    p.chmod(p.stat().st_mode | 0o200)
  return dst


def snapshot(root: str | os.PathLike) -> dict[str, tuple[int, int]]:
  """{relative path: (size, mtime_ns)} of every entry under `root` (to prove it was not written)."""
  root = pathlib.Path(root)
  return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in sorted(root.rglob("*"))}


def make_read_only(root: str | os.PathLike) -> None:
  root = pathlib.Path(root)
  for p in sorted(root.rglob("*"), reverse=True):
    p.chmod(p.stat().st_mode & ~0o222)
  root.chmod(root.stat().st_mode & ~0o222)


def make_writable(root: str | os.PathLike) -> None:
  root = pathlib.Path(root)
  for p in [root, *root.rglob("*")]:
    p.chmod(p.stat().st_mode | 0o200)
