"""Image input/output that fails loudly and names the file.

Every reader returns a float32 greyscale image in [0, 1], whatever the file
holds: PNG or JPEG, 8 or 16 bit, grey, RGB or RGBA. Colour is converted with
the ITU-R BT.601 luma weights (what `cv2.cvtColor(..., COLOR_BGR2GRAY)`
does); an alpha channel is dropped (ultrasound exports carry no useful
transparency, and compositing would invent a background).

Outcomes, by input:

| input                     | outcome                                     |
|---------------------------|---------------------------------------------|
| 8-bit grey/RGB/RGBA       | grey float32, value / 255                   |
| 16-bit grey/RGB/RGBA      | grey float32, value / 65535                 |
| zero-byte file            | `ImageReadError` "empty file"               |
| truncated / corrupt file  | `ImageReadError` "cannot decode ..."        |
| not an image              | `ImageReadError` "cannot decode ..."        |
| missing file              | `ImageReadError` "no such file"             |
| float / other bit depth   | `ImageReadError` "unsupported pixel type"   |
"""

from __future__ import annotations

import os
import pathlib

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# A PNG's data ends with the IEND chunk; OpenCV decodes some truncated PNGs
# without complaint (filling the missing rows with zeros), so check it.
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"
_JPEG_MAGIC = b"\xff\xd8"


class ImageReadError(ValueError):
  """A file could not be read as an image; the message names the file."""

  def __init__(self, path: os.PathLike | str, reason: str):
    self.path = str(path)
    self.reason = reason
    super().__init__(f"{self.path}: {reason}")


def read_bytes(path: os.PathLike | str) -> bytes:
  path = pathlib.Path(path)
  try:
    data = path.read_bytes()
  except FileNotFoundError:
    raise ImageReadError(path, "no such file") from None
  except IsADirectoryError:
    raise ImageReadError(path, "is a directory, not an image file") from None
  except OSError as e:
    raise ImageReadError(path, f"cannot read file ({e.strerror})") from None
  if not data:
    raise ImageReadError(path, "empty file (0 bytes)")
  return data


def decode_image(data: bytes, path: os.PathLike | str = "<bytes>") -> np.ndarray:
  """Decodes PNG/JPEG bytes to the array as stored (uint8 or uint16, 2-D or HxWxC)."""
  if not data:
    raise ImageReadError(path, "empty file (0 bytes)")
  if data.startswith(_PNG_MAGIC) and _PNG_IEND not in data[-64:]:
    raise ImageReadError(path, "cannot decode PNG: truncated (no IEND chunk)")
  arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  if arr is None or arr.size == 0:
    kind = "PNG" if data.startswith(_PNG_MAGIC) else (
        "JPEG" if data.startswith(_JPEG_MAGIC) else "image (unknown format)")
    raise ImageReadError(path, f"cannot decode {kind}: corrupt or not an image")
  if arr.dtype not in (np.uint8, np.uint16):
    raise ImageReadError(path, f"unsupported pixel type {arr.dtype}")
  if arr.ndim == 3 and arr.shape[2] not in (1, 3, 4):
    raise ImageReadError(path, f"unsupported channel count {arr.shape[2]}")
  return arr


def to_grey(arr: np.ndarray) -> np.ndarray:
  """HxW, HxWx1, HxWx3 (BGR) or HxWx4 (BGRA) -> HxW, same dtype."""
  if arr.ndim == 2:
    return arr
  if arr.shape[2] == 1:
    return arr[..., 0]
  bgr = arr[..., :3]
  if np.array_equal(bgr[..., 0], bgr[..., 1]) and np.array_equal(bgr[..., 1], bgr[..., 2]):
    return np.ascontiguousarray(bgr[..., 0])  # grey stored as RGB: exact
  return cv2.cvtColor(np.ascontiguousarray(bgr), cv2.COLOR_BGR2GRAY)


def decode_grey_float(data: bytes, path: os.PathLike | str = "<bytes>") -> np.ndarray:
  arr = to_grey(decode_image(data, path))
  scale = 65535.0 if arr.dtype == np.uint16 else 255.0
  return arr.astype(np.float32) / np.float32(scale)


def read_image(path: os.PathLike | str) -> np.ndarray:
  """Reads an image file as float32 grey in [0, 1] (HxW). See module doc."""
  return decode_grey_float(read_bytes(path), path)


def read_image_uint8(path: os.PathLike | str) -> np.ndarray:
  """Reads an image file as uint8 grey (HxW); 16-bit data is rounded to 8 bits."""
  return float_to_uint8(read_image(path))


def float_to_uint8(img: np.ndarray) -> np.ndarray:
  return np.clip(np.rint(np.asarray(img, np.float32) * 255.0), 0, 255).astype(np.uint8)


def encode_png(arr: np.ndarray, params: tuple[int, ...] | None = None) -> bytes:
  """uint8/uint16 HxW, HxWx1 or HxWx3 (BGR) array -> PNG bytes (deterministic).

  `params` are OpenCV `IMWRITE_PNG_*` flags (default: compression level 3).
  """
  arr = np.asarray(arr)
  if arr.dtype not in (np.uint8, np.uint16):
    raise ValueError(f"encode_png wants uint8 or uint16, got {arr.dtype}")
  flags = [cv2.IMWRITE_PNG_COMPRESSION, 3] if params is None else list(params)
  ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr), flags)
  if not ok:
    raise ValueError(f"cv2.imencode failed for an array of shape {arr.shape}")
  return buf.tobytes()


def write_png(path: os.PathLike | str, arr: np.ndarray) -> None:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(encode_png(arr))


def list_images(root: os.PathLike | str) -> list[pathlib.Path]:
  """Files under `root` (recursively) with an image suffix, sorted."""
  root = pathlib.Path(root)
  return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
