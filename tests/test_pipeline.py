"""The grain pipeline: determinism, resumable state, process sharding."""

import cv2
import numpy as np
import pytest

from fbjax.core import labels
from fbjax.data import features, pipeline


def _source(n=12, hw=(40, 56)):
  """tfds-decoded examples (what `tfds.data_source` returns) built from the data model."""
  rng = np.random.default_rng(0)
  out = []
  for i in range(n):
    img = rng.integers(0, 256, hw, dtype=np.uint8)
    ex = features.example(id=f"x{i}", group=f"g{i}", image=img, head_mask=img > 128,
                          plane=i % len(labels.PLANES), pixel_spacing_mm=0.1 + 0.01 * i)
    # decode PNG bytes the way tfds' numpy decoder does
    dec = {}
    for k, v in ex.items():
      if isinstance(v, bytes):
        dec[k] = cv2.imdecode(np.frombuffer(v, np.uint8), cv2.IMREAD_UNCHANGED)[..., None]
      else:
        dec[k] = v
    dec["index"] = i
    out.append(dec)
  return out


def _collect(ds, n):
  it = iter(ds)
  return [next(it) for _ in range(n)]


def test_batches_have_documented_layout():
  src = _source()
  b = next(iter(pipeline.make_dataset(src, size=(32, 32), batch_size=4, seed=0, train=False)))
  assert b["image"].shape == (4, 32, 32) and b["image"].dtype == np.float32
  assert b["head_mask"].dtype == np.uint8 and set(np.unique(b["head_mask"])) <= {0, 1}
  assert b["has_head_mask"].all() and not b["has_brain_mask"].any()
  np.testing.assert_array_equal(b["plane"], [0, 1, 2, 3])
  assert (b["condition"] == -1).all() and np.isnan(b["hc_mm"]).all()
  # spacing on the 32x32 grid: original spacing / scale, scale = 32/56
  np.testing.assert_allclose(b["pixel_spacing_mm"], (0.1 + 0.01 * np.arange(4)) * 56 / 32,
                             rtol=1e-5)


def test_same_seed_same_stream_and_epochs_reshuffle():
  src = _source()
  kw = dict(size=(32, 32), batch_size=4, train=True, num_epochs=None,
            keys=(*pipeline.DEFAULT_KEYS, "id"))
  a = _collect(pipeline.make_dataset(src, seed=3, **kw), 6)
  b = _collect(pipeline.make_dataset(src, seed=3, **kw), 6)
  c = _collect(pipeline.make_dataset(src, seed=4, **kw), 6)
  for x, y in zip(a, b, strict=True):
    np.testing.assert_array_equal(x["image"], y["image"])
  assert any(not np.array_equal(x["plane"], y["plane"]) for x, y in zip(a, c, strict=True))
  # 12 examples / batch 4 = 3 batches per epoch; each epoch is a permutation
  order = lambda batches: [i for bt in batches for i in bt["id"]]
  assert sorted(order(a[:3])) == sorted(order(a[3:6])) == sorted(f"x{i}" for i in range(12))
  assert order(a[:3]) != order(a[3:6])  # reshuffled each epoch


def test_iterator_state_resumes_exactly():
  src = _source()
  ds = pipeline.make_dataset(src, size=(32, 32), batch_size=4, seed=0, train=True, num_epochs=None)
  it = iter(ds)
  next(it)
  state = it.get_state()
  rest = [next(it) for _ in range(4)]
  it2 = iter(ds)
  it2.set_state(state)
  for x in rest:
    y = next(it2)
    np.testing.assert_array_equal(x["image"], y["image"])


def test_processes_read_disjoint_shards():
  src = _source()
  seen = []
  for p in range(2):
    ds = pipeline.make_dataset(src, size=(16, 16), batch_size=4, seed=0, train=False,
                               process_index=p, process_count=2, keys=("image", "id"))
    seen.append([i for b in ds for i in b["id"]])
  assert not set(seen[0]) & set(seen[1])
  assert sorted(seen[0] + seen[1]) == sorted(f"x{i}" for i in range(12))


def test_bad_arguments():
  with pytest.raises(ValueError, match="divisible"):
    pipeline.make_dataset(_source(), size=(8, 8), batch_size=3, seed=0, train=False,
                          process_count=2)
  with pytest.raises(ValueError, match="empty"):
    pipeline.make_dataset([], size=(8, 8), batch_size=2, seed=0, train=False)
