"""Which files of a folder are images: a streamed, shardable listing.

    for e in inputs.scan("scans/"):          # Entry(path, key, kind, reason)
      ...

`scan` walks a folder depth first with `os.scandir` and yields one `Entry`
per thing it finds, without building the whole list (10^6 files list in
bounded memory: a folder's entries are sorted by name when it holds at most
`SORT_LIMIT` of them, else streamed in the file system's order). Each entry
is one of

  "image"    a file with a known image suffix (`IMAGE_SUFFIXES`, any case), or
             without one whose first bytes are a PNG / JPEG / BMP / TIFF
             signature; decoding it may still fail (then it is an error);
  "error"    something named like an image that cannot be one, reported by
             name with the problem: a dangling symbolic link, a directory
             named `x.png` (its contents are still listed), a folder or file
             that cannot be read (permission denied);
  "skipped"  anything else (`notes.txt`, `labels.csv`, hidden files and
             folders, names starting with "."): counted, never an error.

Symbolic links to files and folders are followed (a folder is entered once,
so link cycles end). `key` is the path relative to the listed folder (POSIX
separators); it decides the shard (`shard_of`) so that the assignment does
not depend on where the folder is mounted or on the order of the listing.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import pathlib
from collections.abc import Iterator, Sequence

from fbjax.data.io import IMAGE_SUFFIXES

SORT_LIMIT = 65536
_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*")


@dataclasses.dataclass(frozen=True)
class Entry:
  path: str       # as it is opened (and written to the CSVs)
  key: str        # relative to the listed root: decides the shard
  kind: str       # "image", "error" or "skipped"
  reason: str = ""

  def __post_init__(self):
    # One spelling of a path everywhere (rows, error rows, the resume check): as
    # pathlib writes it ("./a//b.png" -> "a/b.png").
    object.__setattr__(self, "path", str(pathlib.PurePath(self.path)))


def shard_of(key: str, num_shards: int) -> int:
  """Stable shard of a relative path: a hash of its UTF-8 bytes, modulo `num_shards`."""
  if num_shards <= 1:
    return 0
  h = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest()
  return int.from_bytes(h, "little") % num_shards


def file_hash(name: str) -> int:
  """A signed 64-bit hash of a file name as written in the CSVs (resume bookkeeping)."""
  h = hashlib.blake2b(name.encode("utf-8", "surrogateescape"), digest_size=8).digest()
  return int.from_bytes(h, "little", signed=True)


def looks_like_image(path: str | os.PathLike) -> bool:
  with open(path, "rb") as f:
    head = f.read(16)
  return head.startswith(_MAGIC)


def _classify_file(path: str, key: str, name: str) -> Entry:
  if pathlib.PurePath(name).suffix.lower() in IMAGE_SUFFIXES:
    return Entry(path, key, "image")
  try:
    is_image = looks_like_image(path)
  except OSError as e:
    return Entry(path, key, "skipped", f"unreadable, not named like an image ({e.strerror})")
  if is_image:
    return Entry(path, key, "image")
  suffix = pathlib.PurePath(name).suffix.lower() or "(no suffix)"
  return Entry(path, key, "skipped", f"not an image ({suffix})")


def _sorted_entries(it) -> Iterator[os.DirEntry]:
  first = []
  for e in it:
    first.append(e)
    if len(first) > SORT_LIMIT:
      yield from first
      yield from it
      return
  yield from sorted(first, key=lambda e: e.name)


def _walk(root: str, rel: str, seen: set) -> Iterator[Entry]:
  try:
    it = os.scandir(root)
  except OSError as e:
    yield Entry(root, rel or ".", "error", f"cannot list folder ({e.strerror})")
    return
  with it:
    for d in _sorted_entries(it):
      path = d.path
      key = f"{rel}/{d.name}" if rel else d.name
      if d.name.startswith("."):
        yield Entry(path, key, "skipped", "hidden")
        continue
      try:
        is_dir = d.is_dir()                       # follows links
        is_file = not is_dir and d.is_file()
      except OSError as e:
        yield Entry(path, key, "error", f"cannot read ({e.strerror})")
        continue
      image_name = pathlib.PurePath(d.name).suffix.lower() in IMAGE_SUFFIXES
      if is_dir:
        if image_name:
          yield Entry(path, key, "error", "is a directory, not an image file")
        try:
          st = os.stat(path)
        except OSError as e:
          yield Entry(path, key, "error", f"cannot read folder ({e.strerror})")
          continue
        ident = (st.st_dev, st.st_ino)
        if ident in seen:
          yield Entry(path, key, "skipped", "folder already listed (symbolic link loop)")
          continue
        seen.add(ident)
        yield from _walk(path, key, seen)
      elif is_file:
        yield _classify_file(path, key, d.name)
      elif d.is_symlink():
        target = os.readlink(path)
        yield Entry(path, key, "error", f"dangling symbolic link (target {target!r} is missing)")
      else:
        yield Entry(path, key, "skipped" if not image_name else "error",
                    "not a regular file (device, socket or pipe)")


def scan(spec: str | os.PathLike | Sequence) -> Iterator[Entry]:
  """Entries of a folder (recursively), a glob pattern, one file, or a list of paths."""
  if isinstance(spec, (list, tuple)):
    for p in spec:
      yield _one(os.fspath(p), os.fspath(p))
    return
  s = os.path.expanduser(os.fspath(spec))
  if os.path.isdir(s):
    st = os.stat(s)
    yield from _walk(s, "", {(st.st_dev, st.st_ino)})
    return
  if os.path.isfile(s):
    yield _one(s, os.path.basename(s))
    return
  if not glob.has_magic(s):
    raise FileNotFoundError(f"--input {s!r}: no such folder or file")
  parts = pathlib.PurePath(s).parts
  fixed = next((i for i, p in enumerate(parts) if glob.has_magic(p)), len(parts))
  root = os.path.join(*parts[:fixed]) if fixed else "."
  hits = sorted(glob.iglob(s, recursive=True))      # a pattern's matches are few enough to sort
  found = False
  for h in hits:
    if os.path.isdir(h):
      continue
    found = True
    yield _one(h, os.path.relpath(h, root))
  if not found:
    raise FileNotFoundError(f"--input {s!r}: no such folder or file, and no file matches it")


def _one(path: str, key: str) -> Entry:
  """A file named explicitly: it is meant as an image, so problems are errors."""
  if os.path.islink(path) and not os.path.exists(path):
    return Entry(path, key, "error", f"dangling symbolic link (target {os.readlink(path)!r} "
                 "is missing)")
  if os.path.isdir(path):
    return Entry(path, key, "error", "is a directory, not an image file")
  return Entry(path, key, "image")


def list_inputs(spec: str | os.PathLike | Sequence) -> list[pathlib.Path]:
  """The image files named by a folder, a glob or a list (see `scan`)."""
  return [pathlib.Path(e.path) for e in scan(spec) if e.kind == "image"]
