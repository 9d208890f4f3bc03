"""Under CI (`CI=true`) a test that needs the real data fails without it instead of
skipping unseen; outside CI it skips, and `make test` prints the skip reasons (-rs)."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(tmp_path, ci: str):
  test = tmp_path / "test_needs_real.py"
  test.write_text("def test_needs_real(real_manual_dir):\n  assert real_manual_dir\n")
  (tmp_path / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
  env = {k: v for k, v in os.environ.items() if k not in ("FBJAX_REAL_DATA", "CI",
                                                          "PYTEST_XDIST_WORKER")}
  env.update(CI=ci, PYTHONPATH=str(ROOT))
  return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                         "-p", "no:xdist", str(test)], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=120)


def test_missing_real_data_fails_under_ci_and_skips_elsewhere(tmp_path):
  r = _run(tmp_path, "true")
  assert r.returncode == 1 and "CI=true, but FBJAX_REAL_DATA is not set" in r.stdout
  r = _run(tmp_path, "")
  assert r.returncode == 0 and "SKIPPED" in r.stdout and "FBJAX_REAL_DATA is not set" in r.stdout


def test_make_test_prints_skip_reasons():
  assert "pytest -q -rs" in (ROOT / "Makefile").read_text()
  assert "export CI=true" in (ROOT / ".ci" / "run").read_text()
