"""Shared fixtures.

Real data: `real_manual_dir` is `$FBJAX_REAL_DATA` (tests using it skip only
when that variable is unset). `real_builder(name, config=None)` builds that
data set from it once per test session into a temporary data_dir shared by
all pytest-xdist workers (a file lock makes the other workers wait and then
reuse the build) and returns the tfds builder. `real_data_dir` builds the
three real data sets (default configs) and returns that data_dir, for
`builders.data_source(name, split, data_dir=real_data_dir)`. The default data_dir
(`$FBJAX_DATA_DIR`) is a temporary folder per test session, never the user's cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib

import pytest

REAL_DATA_SETS = ("hc18", "fetal_planes_db", "fetal_brain_abnormalities")


def skip_or_fail(reason: str):
  """Skips the test, except under CI (`CI=true`), where what it needs must be there: the
  test fails instead of passing unseen."""
  if os.environ.get("CI", "").lower() == "true":
    pytest.fail(f"CI=true, but {reason}", pytrace=False)
  pytest.skip(reason)


@pytest.fixture(autouse=True, scope="session")
def _default_data_dir(tmp_path_factory):
  """No test builds data sets in the user's cache: `$FBJAX_DATA_DIR` (the default data_dir)
  is a temporary folder of this test session (tests may still set their own)."""
  old = os.environ.get("FBJAX_DATA_DIR")
  os.environ["FBJAX_DATA_DIR"] = str(tmp_path_factory.mktemp("default_tfds"))
  yield
  if old is None:
    os.environ.pop("FBJAX_DATA_DIR", None)
  else:
    os.environ["FBJAX_DATA_DIR"] = old


@pytest.fixture(scope="session")
def real_manual_dir() -> pathlib.Path:
  root = os.environ.get("FBJAX_REAL_DATA")
  if not root:
    skip_or_fail("FBJAX_REAL_DATA is not set")
  return pathlib.Path(root)


@contextlib.contextmanager
def _locked(path: pathlib.Path):
  with open(path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def _real_tfds_dir(tmp_path_factory) -> pathlib.Path:
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent  # shared by the workers of this session
  d = base / "fbjax_real_tfds"
  d.mkdir(exist_ok=True)
  return d


@pytest.fixture(scope="session")
def real_builder(real_manual_dir, _real_tfds_dir):
  from fbjax.data import builder_testing

  def get(name: str, config: str | None = None):
    with _locked(_real_tfds_dir / f".{name}-{config}.lock"):
      return builder_testing.build(name, real_manual_dir, _real_tfds_dir, config=config)

  return get


@pytest.fixture(scope="session")
def real_data_dir(real_builder, _real_tfds_dir) -> pathlib.Path:
  for name in REAL_DATA_SETS:
    real_builder(name)
  return _real_tfds_dir
