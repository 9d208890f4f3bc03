"""Pipeline on encoded sources (PNG bytes, absent masks skipped) and with the decoded cache."""

import cv2
import numpy as np
import pytest
from absl import flags

from fbjax.data import builder_testing as bt
from fbjax.data import builders, features, pipeline


def _examples(n=10, hw=(30, 50)):
  rng = np.random.default_rng(1)
  out = []
  for i in range(n):
    img = rng.integers(0, 256, hw, dtype=np.uint8)
    out.append(features.example(id=f"x{i}", group=f"g{i}", image=img,
                                head_mask=img > 100 if i % 2 else None,
                                pixel_spacing_mm=0.2))
  return out


def _decoded(exs):
  """What tfds' numpy decoder gives: images as (H, W, 1) arrays."""
  return [{k: (cv2.imdecode(np.frombuffer(v, np.uint8), cv2.IMREAD_UNCHANGED)[..., None]
               if isinstance(v, bytes) and k in builders.IMAGE_FEATURES else v)
           for k, v in ex.items()} for ex in exs]


def test_encoded_and_decoded_sources_give_the_same_batches():
  exs = _examples()
  kw = dict(size=(24, 24), batch_size=5, seed=0, train=False, keys=(*pipeline.DEFAULT_KEYS, "id"))
  a = list(pipeline.make_dataset(exs, **kw))
  b = list(pipeline.make_dataset(_decoded(exs), **kw))
  assert len(a) == len(b) == 2
  for x, y in zip(a, b, strict=True):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  assert a[0]["has_head_mask"].tolist() == [False, True, False, True, False]
  assert not a[0]["head_mask"][0].any() and a[0]["head_mask"][1].any()


@pytest.mark.parametrize("train", [False, True])
def test_cache_gives_the_same_stream(train):
  exs = _examples()
  kw = dict(size=(24, 24), batch_size=4, seed=3, train=train, num_epochs=3)
  plain = list(pipeline.make_dataset(exs, **kw))
  cached = list(pipeline.make_dataset(exs, cache=True, **kw))
  assert len(plain) == len(cached) == (7 if train else 8)
  for x, y in zip(plain, cached, strict=True):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_cached_arrays_are_read_only():
  cache = pipeline.DecodedCache(_examples(), (24, 24), pipeline.DEFAULT_KEYS)
  d = cache[1]
  assert cache[1] is d
  with pytest.raises(ValueError, match="read-only"):
    d["image"][0, 0] = 1


def test_data_source_leaves_images_encoded_on_request(tmp_path):
  dummy = builders.ROOT / "hc18" / "dummy_data"
  b = bt.build("hc18", dummy, tmp_path)
  enc = builders.data_source("hc18", "train", data_dir=tmp_path, decode_images=False)
  dec = builders.data_source("hc18", "train", data_dir=tmp_path)
  assert isinstance(enc[0]["image"], bytes) and dec[0]["image"].shape[-1] == 1
  kw = dict(size=(32, 32), batch_size=3, seed=0, train=False)
  for x, y in zip(pipeline.make_dataset(enc, **kw), pipeline.make_dataset(dec, **kw),
                  strict=True):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["head_mask"], y["head_mask"])
  assert b.info.splits["train"].num_examples == len(enc)


def test_absent_features_batch_as_zeros_without_copies():
  exs = _examples(4)
  b = next(iter(pipeline.make_dataset(exs, size=(16, 16), batch_size=4, seed=0, train=False)))
  assert b["clean"].shape == (4, 16, 16) and b["clean"].dtype == np.float32
  assert not b["clean"].any() and not b["brain_mask"].any()
  b["clean"][0, 0, 0] = 1.0  # a fresh, writable array, not a shared one
  assert b["head_mask"][1].any() and not b["head_mask"][0].any()  # mixed: stacked


@pytest.mark.parametrize("cache", [False, True])
def test_worker_processes_read_a_built_data_set(tmp_path, cache):
  """grain workers unpickle the source although its builder is imported by path."""
  if not flags.FLAGS.is_parsed():  # grain reads its absl flags (no app.run under pytest)
    flags.FLAGS.mark_as_parsed()
  bt.build("hc18", builders.ROOT / "hc18" / "dummy_data", tmp_path)
  src = builders.data_source("hc18", "train", data_dir=tmp_path)
  kw = dict(size=(32, 32), batch_size=2, seed=0, train=True, num_epochs=1, cache=cache)
  inline = list(pipeline.make_dataset(src, **kw))
  workers = list(pipeline.make_dataset(src, worker_count=1, **kw))
  assert len(inline) == len(workers) == len(src) // 2
  for x, y in zip(inline, workers, strict=True):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["head_mask"], y["head_mask"])
