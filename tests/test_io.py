"""Image I/O: every input kind gets its documented outcome (fbjax/data/io.py)."""

import cv2
import numpy as np
import pytest
from PIL import Image

from fbjax.data import io


@pytest.fixture
def grey8():
  rng = np.random.default_rng(0)
  return rng.integers(0, 256, (23, 31), dtype=np.uint8)


def test_png_8bit_grey(tmp_path, grey8):
  p = tmp_path / "a.png"
  Image.fromarray(grey8).save(p)
  out = io.read_image(p)
  assert out.dtype == np.float32 and out.shape == (23, 31)
  np.testing.assert_array_equal(out, grey8.astype(np.float32) / 255)


def test_png_16bit_grey(tmp_path):
  rng = np.random.default_rng(1)
  arr = rng.integers(0, 65536, (17, 19), dtype=np.uint16)
  p = tmp_path / "b.png"
  Image.fromarray(arr).save(p)  # PIL writes mode I;16
  ref = np.asarray(Image.open(p)).astype(np.float64) / 65535
  out = io.read_image(p)
  np.testing.assert_allclose(out, ref, atol=1e-7)
  assert out.max() > 0.9  # really 16-bit data, not truncated to 8


def test_png_rgba_drops_alpha(tmp_path, grey8):
  rgba = np.stack([grey8, grey8, grey8, np.full_like(grey8, 7)], -1)
  p = tmp_path / "c.png"
  Image.fromarray(rgba, mode="RGBA").save(p)
  np.testing.assert_array_equal(io.read_image(p), grey8.astype(np.float32) / 255)


def test_rgb_colour_uses_luma(tmp_path):
  rgb = np.zeros((4, 4, 3), np.uint8)
  rgb[..., 0] = 200  # red
  rgb[..., 2] = 50   # blue
  p = tmp_path / "d.png"
  Image.fromarray(rgb).save(p)
  expected = round(0.299 * 200 + 0.114 * 50) / 255  # BT.601 luma
  np.testing.assert_allclose(io.read_image(p), expected, atol=1 / 255)


def test_rgb_jpeg(tmp_path, grey8):
  p = tmp_path / "e.jpg"
  Image.fromarray(np.stack([grey8] * 3, -1)).save(p, quality=95)
  out = io.read_image(p)
  assert out.shape == grey8.shape
  ref = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
  assert np.abs(out - ref).max() <= 2 / 255  # decoder rounding only


def test_16bit_rgb_png(tmp_path):
  arr = np.full((5, 6, 3), 30000, np.uint16)
  p = tmp_path / "f.png"
  cv2.imwrite(str(p), arr)
  np.testing.assert_allclose(io.read_image(p), 30000 / 65535, rtol=1e-6)


@pytest.mark.parametrize(
    "content,reason",
    [(b"", "empty file"),
     (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "cannot decode PNG"),
     (b"this is not an image at all", "cannot decode image"),
     (b"\xff\xd8\xff\xe0" + b"\x00" * 10, "cannot decode JPEG")])
def test_bad_files_name_the_file(tmp_path, content, reason):
  p = tmp_path / "bad.png"
  p.write_bytes(content)
  with pytest.raises(io.ImageReadError, match=reason) as e:
    io.read_image(p)
  assert str(p) in str(e.value) and e.value.path == str(p)


def test_truncated_png(tmp_path, grey8):
  good = io.encode_png(grey8)
  p = tmp_path / "trunc.png"
  p.write_bytes(good[: len(good) // 2])
  with pytest.raises(io.ImageReadError, match="truncated"):
    io.read_image(p)


def test_missing_file_and_directory(tmp_path):
  with pytest.raises(io.ImageReadError, match="no such file"):
    io.read_image(tmp_path / "nope.png")
  with pytest.raises(io.ImageReadError, match="directory"):
    io.read_image(tmp_path)


def test_png_roundtrip_is_lossless_and_deterministic(grey8):
  a, b = io.encode_png(grey8), io.encode_png(grey8)
  assert a == b
  np.testing.assert_array_equal(io.decode_image(a), grey8)


def test_list_images(tmp_path, grey8):
  (tmp_path / "sub").mkdir()
  for name in ("b.PNG", "sub/a.jpg", "c.txt"):
    (tmp_path / name).write_bytes(b"x")
  assert [p.name for p in io.list_images(tmp_path)] == ["b.PNG", "a.jpg"]
