"""A trained workdir's record is what a command runs: a config or flag given later can say
where the data are, and any disagreement with the record stops with both values named."""

import os

import pytest

from configs import autoencoder as autoencoder_config
from configs import classify as classify_config
from configs import segment as segment_config
from fbjax.jobs import evaluate


def _resolved(c):
  return c.copy_and_resolve_references()


def test_a_stage1_config_file_leaves_a_stage2_workdirs_input():
  """The README's `launch.evaluate --config configs/segment.py
  --config.sources.hc18.manual_dir=DIR` on a two-stage workdir: the model reads the input
  stage 2 was trained with; only the folder moves."""
  trained = _resolved(segment_config.get_config("data=mix,stage=2"))
  given = segment_config.get_config("data=mix")
  assert given.input.to_dict() != trained.input.to_dict()
  got = evaluate.merged_config(trained, given, {"sources.hc18.manual_dir": "/data/other_hc18"},
                               strict=False)
  assert got.input.to_dict() == trained.input.to_dict() == {"kind": "head_crop",
                                                            "size": (160, 160)}
  assert got.sources.hc18.to_dict() == {**trained.sources.hc18.to_dict(),
                                        "manual_dir": "/data/other_hc18"}
  assert got.sources.phantom.to_dict() == trained.sources.phantom.to_dict()


def test_an_override_of_what_the_model_reads_names_both_values():
  trained = _resolved(segment_config.get_config("data=mix,stage=2"))
  with pytest.raises(ValueError, match=r"input.size=\(128, 192\).*trained with "
                                       r"input.size=\(160, 160\)"):
    evaluate.merged_config(trained, None, {"input.size": (128, 192)}, strict=False)
  with pytest.raises(ValueError, match=r"sources.hc18.where='abnormal=0'.*trained with "
                                       r"sources.hc18.where=''"):
    evaluate.merged_config(trained, None, {"sources.hc18.where": "abnormal=0"})
  # The same value as recorded is no disagreement.
  same = evaluate.merged_config(trained, None, {"input.size": (160, 160)}, strict=False)
  assert tuple(same.input.size) == (160, 160)


def test_an_autoencoder_trained_on_normals_is_not_evaluated_on_abnormal_images():
  trained = _resolved(autoencoder_config.get_config("runlocal"))
  with trained.unlocked():
    trained.sources.phantom.where = "abnormal=0"
  given = autoencoder_config.get_config("runlocal")   # where="" (every image)
  with pytest.raises(ValueError, match=r"sources.phantom.where: .* trained with 'abnormal=0', "
                                       r"the config gives ''"):
    evaluate.merged_config(trained, given)
  with pytest.raises(ValueError, match="abnormal=0"):
    evaluate.merged_config(trained, None, {"sources.phantom.where": ""})
  # As the command line reads a config file: its defaults never replace the record.
  got = evaluate.merged_config(trained, given, strict=False)
  assert got.sources.phantom.where == "abnormal=0"


def test_an_override_of_a_block_the_model_does_not_read_stops():
  """`--config configs/autoencoder.py --config.sources.toy.manual_dir=X` on a classifier
  workdir (which has no such block): an error, not a silently ignored folder."""
  trained = _resolved(classify_config.get_config("data=real"))
  with pytest.raises(ValueError, match=r"--config.sources.toy.manual_dir: .* no such data "
                                       r"block.*sources.fba"):
    evaluate.merged_config(trained, autoencoder_config.get_config(""),
                           {"sources.toy.manual_dir": "/x"}, strict=False)
  # The old schema's block names are not data blocks of today's configs either.
  with pytest.raises(ValueError, match=r"--config.data.manual_dir: .* no such data block"):
    evaluate.merged_config(trained, None, {"data.manual_dir": "/x"}, strict=False)
  got = evaluate.merged_config(trained, None, {"sources.fba.manual_dir": "/x"})
  assert got.sources.fba.manual_dir == "/x"
  assert got.sources.fpdb.manual_dir == trained.sources.fpdb.manual_dir != "/x"


def test_where_paths_expand_the_home_folder():
  trained = _resolved(segment_config.get_config("data=mix"))
  got = evaluate.merged_config(trained, None, {"sources.hc18.manual_dir": "~/hc18",
                                               "sources.phantom.data_dir": "~/tfds"})
  assert got.sources.hc18.manual_dir == os.path.join(os.path.expanduser("~"), "hc18")
  assert got.sources.phantom.data_dir == os.path.join(os.path.expanduser("~"), "tfds")


def test_a_new_block_is_read_as_the_model_reads_and_measured_only_when_named():
  trained = _resolved(classify_config.get_config("data=real"))
  with trained.unlocked():
    del trained.sources["hc18"]
  given = classify_config.get_config("data=real")
  got = evaluate.merged_config(trained, given, strict=False)
  assert "hc18" in got.sources and "size" not in got.sources.hc18
  assert not got.sources.hc18.eval and given.sources.hc18.eval
  assert got.input.to_dict() == trained.input.to_dict()


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


def test_how_a_block_took_part_in_training_is_the_records():
  """A config of another mixture (`data=hc18`: the phantom's weight 0) given for the data
  of a `data=mix` workdir: weights and validation flags stay the workdir's, uncompared."""
  trained = _resolved(segment_config.get_config("data=mix"))
  got = evaluate.merged_config(trained, segment_config.get_config("data=hc18"))
  assert {n: b.weight for n, b in got.sources.items()} == {"hc18": 0.7, "phantom": 0.3}
  with pytest.raises(ValueError, match=r"a data block has no size; .*input.size \(128, 192\)"):
    evaluate.merged_config(trained, None, {"sources.hc18.size": (64, 64)})
  with pytest.raises(ValueError, match=r"config.data / config.phantom are config.sources"):
    evaluate.merged_config(trained, None, {"data.manual_dir": "/x"})
