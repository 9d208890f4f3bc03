"""MixSource proportions and index mapping."""

import collections

import pytest

from fbjax.data.mix import MixSource


def test_proportions_and_coverage():
  a, b = list(range(100)), [f"b{i}" for i in range(30)]
  m = MixSource([a, b], [0.5, 0.5])
  assert len(m) == 200
  kinds = collections.Counter(type(m[i]) for i in range(len(m)))
  assert kinds[int] == 100 and kinds[str] == 100
  assert {m[i] for i in range(len(m)) if isinstance(m[i], str)} == set(b)  # repeated
  m2 = MixSource([a, b], [0.8, 0.2])
  assert len(m2) == 150 and sum(isinstance(m2[i], str) for i in range(150)) == 30


def test_explicit_length_subsamples_evenly_and_zero_weight_drops():
  a = list(range(100))
  m = MixSource([a, ["x"]], [1.0, 0.0], length=10)
  assert [m[i] for i in range(10)] == list(range(0, 100, 10))
  with pytest.raises(IndexError):
    m[10]


def test_bad_arguments():
  with pytest.raises(ValueError, match="at least one"):
    MixSource([])
  with pytest.raises(ValueError, match="weights"):
    MixSource([[1], [2]], [1.0])
  with pytest.raises(ValueError, match="empty"):
    MixSource([[1], []], [1.0, 1.0])
