"""A trained workdir's record is what a command runs: a config or flag given later can say
where the data are, and any disagreement with the record stops with both values named."""

import os

import pytest

from configs import autoencoder as autoencoder_config
from configs import classify as classify_config
from configs import segment as segment_config
from fbjax import evaluate


def _resolved(c):
  return c.copy_and_resolve_references()


def test_a_stage1_config_file_leaves_a_stage2_workdirs_sizes():
  """The README's `launch.evaluate --config configs/segment.py --config.data.manual_dir=DIR`
  on a two-stage workdir: the block keeps the size stage 2 was trained at."""
  trained = _resolved(segment_config.get_config("data=mix,stage=2"))
  given = segment_config.get_config("data=mix")
  assert tuple(given.data.size) != tuple(trained.data.size)
  got = evaluate.merged_config(trained, given, {"data.manual_dir": "/data/other_hc18"},
                               strict=False)
  assert tuple(got.data.size) == tuple(trained.data.size)
  assert got.data.manual_dir == "/data/other_hc18"
  assert got.data.to_dict() == {**trained.data.to_dict(), "manual_dir": "/data/other_hc18"}


def test_an_override_of_what_the_model_reads_names_both_values():
  trained = _resolved(segment_config.get_config("data=mix,stage=2"))
  with pytest.raises(ValueError, match=r"data.size=\(128, 192\).*trained with "
                                       r"data.size=\(160, 160\)"):
    evaluate.merged_config(trained, None, {"data.size": (128, 192)}, strict=False)
  # The same value as recorded is no disagreement.
  same = evaluate.merged_config(trained, None, {"data.size": (160, 160)}, strict=False)
  assert tuple(same.data.size) == (160, 160)


def test_an_autoencoder_trained_on_normals_is_not_evaluated_on_abnormal_images():
  trained = _resolved(autoencoder_config.get_config("runlocal"))
  with trained.unlocked():
    trained.data.where = "abnormal=0"
  given = autoencoder_config.get_config("runlocal")   # where="" (every image)
  with pytest.raises(ValueError, match=r"data.where: .* trained with 'abnormal=0', the "
                                       r"config gives ''"):
    evaluate.merged_config(trained, given)
  with pytest.raises(ValueError, match="abnormal=0"):
    evaluate.merged_config(trained, None, {"data.where": ""})
  # As the command line reads a config file: its defaults never replace the record.
  assert evaluate.merged_config(trained, given, strict=False).data.where == "abnormal=0"


def test_an_override_of_a_block_the_model_does_not_read_stops():
  """`--config configs/segment.py --config.data.manual_dir=X` on a classifier workdir
  (it reads `sources`): an error, not a silently ignored folder."""
  trained = _resolved(classify_config.get_config("data=real"))
  with pytest.raises(ValueError, match=r"--config.data.manual_dir: .* no such data block.*"
                                       r"sources.fba"):
    evaluate.merged_config(trained, segment_config.get_config(""),
                           {"data.manual_dir": "/x"}, strict=False)
  got = evaluate.merged_config(trained, None, {"sources.fba.manual_dir": "/x"})
  assert got.sources.fba.manual_dir == "/x"
  assert got.sources.fpdb.manual_dir == trained.sources.fpdb.manual_dir != "/x"


def test_where_paths_expand_the_home_folder():
  trained = _resolved(segment_config.get_config("data=mix"))
  got = evaluate.merged_config(trained, None, {"data.manual_dir": "~/hc18",
                                               "phantom.data_dir": "~/tfds"})
  assert got.data.manual_dir == os.path.join(os.path.expanduser("~"), "hc18")
  assert got.phantom.data_dir == os.path.join(os.path.expanduser("~"), "tfds")


def test_a_new_block_is_sized_for_the_model():
  trained = _resolved(classify_config.get_config("data=real"))
  with trained.unlocked():
    del trained.sources["hc18"]
  given = classify_config.get_config("data=real")
  got = evaluate.merged_config(trained, given, strict=False)
  assert "hc18" in got.sources and tuple(got.sources.hc18.size) == tuple(trained.image_size)


def test_one_sources_folder_moves_that_source_alone():
  """`--config.sources.fba.manual_dir=X` (as config_flags sets it) leaves the other
  sources where `real_data` puts them; `--config.real_data=DIR` moves them all."""
  c = classify_config.get_config("data=real")
  c.real_data = "/data/all"
  assert {c.sources[n].manual_dir for n in ("fba", "fpdb", "hc18")} == {"/data/all"}
  c.sources.fba.manual_dir = "/data/copy"
  r = c.copy_and_resolve_references()
  assert r.sources.fba.manual_dir == "/data/copy"
  assert r.sources.fpdb.manual_dir == r.sources.hc18.manual_dir == r.real_data == "/data/all"


def test_a_data_folder_written_with_the_home_folder_is_found(tmp_path, monkeypatch):
  from fbjax.data import builders

  monkeypatch.setenv("HOME", str(tmp_path))
  (tmp_path / "data" / "hc18").mkdir(parents=True)
  assert builders._manual_root("hc18", "~/data") == (tmp_path / "data" / "hc18").resolve()
