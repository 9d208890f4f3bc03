"""One config schema: every config names its input once and its data as `sources`; records
of the older schema (the shipped bundle's, old workdirs') are read as the same model."""

import ast
import json
import pathlib

import pytest

from configs import autoencoder as autoencoder_config
from configs import classify as classify_config
from configs import despeckle as despeckle_config
from configs import release as release_config
from configs import segment as segment_config
from fbjax.core import bundle, schema, workdir
from fbjax.evaluation import inference
from fbjax.jobs import release

REPO = pathlib.Path(__file__).resolve().parents[1]
BUNDLE_CONFIGS = REPO / "models" / bundle.DEFAULT / "configs"
ARGS = {
    segment_config: ["", "stage=2", "runlocal", "runlocal,stage=2", "variant=device",
                     "data=phantom,augment=randomize", "data=hc18,stage=2,augment=randomize"],
    classify_config: ["", "runlocal", "demo", "data=real", "data=mix,variant=frozen",
                      "data=real,variant=autoencoder,size=64,encoder=small",
                      "data=real,variant=pretrain", "runlocal,input=aligned_head",
                      "data=real,input=aligned_head,heads=planes",
                      "data=real,input=aligned_head,heads=abnormal"],
    autoencoder_config: ["", "variant=seed", "runlocal", "demo", "data=hc18"],
    despeckle_config: ["", "runlocal", "data=hc18"],
}
# What an old-schema record held besides `sources` and `input`: none of them remain.
OLD_KEYS = {"data", "phantom", "image_size", "align", "train_on", "train_weights", "eval_on"}
NOT_IN_A_BLOCK = {"size", "input", "align", "augment", "augment_on", "augment_params", "cache",
                  "worker_count", "read_threads"}


def _configs():
  for mod, args in ARGS.items():
    for arg in args:
      yield f"{mod.__name__}:{arg}", mod.get_config(arg)
    for run in getattr(mod, "sweep", lambda: [])():
      yield f"{mod.__name__} sweep {run}", mod.get_config(run.get("arg"))


def _sizes(tree, path=""):
  """Dotted paths of every key named like a grid size."""
  out = []
  for k, v in tree.items():
    if isinstance(v, dict):
      out += _sizes(v, f"{path}{k}.")
    elif k.endswith("size") and isinstance(v, (list, tuple)):
      out.append(f"{path}{k}")
  return out


def test_every_config_names_its_input_once_and_its_data_as_sources():
  for name, c in _configs():
    d = json.loads(c.to_json_best_effort())
    assert d["schema"] == schema.VERSION, name
    assert not OLD_KEYS & set(d), (name, OLD_KEYS & set(d))
    inp = schema.input_of(c)
    assert inp.kind in schema.INPUT_KINDS and len(inp.size) == 2, name
    assert c.sources and all(NOT_IN_A_BLOCK.isdisjoint(b) for b in c.sources.values()), name
    # The one grid is the input's; other sizes are a crop's source grid (stage 2: the fine
    # grid it is run from) or the toy images' own size.
    assert set(_sizes(d)) <= {"input.size", "fine_size",
                              *(f"sources.{n}.source_size" for n in d["sources"])}, name
    assert any(b.weight > 0 for b in c.sources.values()), name


def test_sizes_and_alignment_come_from_the_input_only():
  seg2 = segment_config.get_config("stage=2")
  assert seg2.input.to_dict() == {"kind": "head_crop", "size": (160, 160)}
  assert schema.size_of(segment_config.get_config("variant=device")) == (256, 384)
  c = classify_config.get_config("data=real,input=aligned_head,seg_workdir=/seg")
  assert c.input.to_dict() == {"kind": "aligned_head", "size": (96, 128), "head_fraction": 0.8,
                               "margin": 0.08, "seg_workdir": "/seg"}
  c = classify_config.get_config("data=real,size=64")
  assert c.input.to_dict() == {"kind": "image", "size": (64, 64)}
  with pytest.raises(ValueError, match="config.input"):
    schema.input_of({"input": "aligned_head"})          # the old schema's string


def test_the_bundles_records_are_read_in_todays_keys():
  """The shipped configs were written before this schema; read, they say what the
  networks were trained to read, in today's keys."""
  got = {n: schema.upgrade(json.loads((BUNDLE_CONFIGS / f"{n}.json").read_text()))
         for n in bundle.NETWORKS}
  raw = {n: json.loads((BUNDLE_CONFIGS / f"{n}.json").read_text()) for n in bundle.NETWORKS}
  assert got["seg_stage1"]["input"] == {"kind": "image", "size": raw["seg_stage1"]["data"]["size"]}
  assert got["seg_stage2"]["input"] == {"kind": "head_crop",
                                        "size": raw["seg_stage2"]["data"]["size"]}
  for n in ("seg_stage1", "seg_stage2"):
    s = got[n]["sources"]
    assert {k: (b["name"], b["weight"], b["eval"]) for k, b in s.items()} == {
        "hc18": ("hc18", 0.7, True), "phantom": ("fetal_brain_synth", 0.3, True)}
    assert s["hc18"]["manual_dir"] == raw[n]["data"]["manual_dir"]
    assert got[n]["data_cache"] == raw[n]["data"]["cache"]
    assert got[n]["augment"] == raw[n]["data"]["augment"]
  for n in ("planes", "abnormal"):
    align = raw[n]["align"]
    assert got[n]["input"] == {"kind": "aligned_head", "size": raw[n]["image_size"],
                               "head_fraction": align["head_fraction"],
                               "margin": align["margin"], "seg_workdir": align["seg_workdir"]}
    assert {k: b["weight"] for k, b in got[n]["sources"].items()} == {
        k: b["weight"] for k, b in raw[n]["sources"].items()}
  assert got["anomaly_ae"]["input"] == {"kind": "image", "size": raw["anomaly_ae"]["image_size"]}
  for n, g in got.items():
    assert not OLD_KEYS & set(g), n
    assert schema.upgrade(g) == g                # once upgraded, left as it is
  # The loaded bundle reads them so.
  b = inference.load_bundle()
  assert b.segmenter.config.input.kind == "head_crop" and b.segmenter.size == (540, 800)
  assert b.classifier.size == tuple(raw["planes"]["image_size"])


def _recipe_config(net: str):
  """The config the release recipe trains network `net` with (its overrides applied, paths
  left as the bundle's placeholders)."""
  recipe = release.load_recipe(str(REPO / "configs" / "release.py"))
  m = recipe.models[net]
  path, _, arg = m.config.partition(":")
  mod = {"configs/segment.py": segment_config, "configs/classify.py": classify_config}[path]
  c = mod.get_config(arg)
  keep = {"real_data": "{real_data}", "data_dir": "{data_dir}", "work": "{work}",
          "wandb_mode": release_config.get_config().wandb_mode, "seed": 0}
  for o in m.overrides:
    key, _, value = o.partition("=")
    value = value.format(**keep)
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = tuple(value) if isinstance(node[leaf], tuple) else value
  return c


@pytest.mark.parametrize("net", bundle.NETWORKS)
def test_an_old_record_equals_todays_config_of_the_same_recipe(net):
  """A workdir trained before this schema, resumed with today's config of the same recipe,
  is the same run (`workdir.check_config` finds no difference beyond what training
  records itself: the model kind and the stage-1 path made absolute)."""
  recorded = json.loads((BUNDLE_CONFIGS / f"{net}.json").read_text())
  diffs = workdir.config_differences(recorded, _recipe_config(net))
  assert {k for k, *_ in diffs} <= {"kind", "stage1_workdir", "trained_behind"}, diffs


def test_read_config_upgrades_an_old_record_and_leaves_the_file(tmp_path):
  old = json.loads((BUNDLE_CONFIGS / "seg_stage1.json").read_text())
  (tmp_path / "config.json").write_text(json.dumps(old))
  c = workdir.read_config(tmp_path)
  assert c.input.kind == "image" and tuple(c.input.size) == tuple(old["data"]["size"])
  assert set(c.sources) == {"hc18", "phantom"} and "data" not in c
  assert json.loads((tmp_path / "config.json").read_text()) == old


# Configs as fbjax wrote them before this schema (`schema` 1), one per trainer kind.
OLD = json.loads((REPO / "tests" / "data" / "schema1_configs.json").read_text())
TODAY = {"segment_runlocal": (segment_config, "runlocal"),
         "segment_runlocal_stage2": (segment_config, "runlocal,stage=2"),
         "segment_hc18": (segment_config, "data=hc18"),
         "autoencoder_runlocal": (autoencoder_config, "runlocal"),
         "despeckle_runlocal": (despeckle_config, "runlocal"),
         "classify_runlocal_aligned": (classify_config, "runlocal,input=aligned_head")}


@pytest.mark.parametrize("name", sorted(TODAY))
def test_an_old_record_of_every_trainer_reads_as_todays_same_config(name):
  mod, arg = TODAY[name]
  c = mod.get_config(arg)
  if "real_data" in c:
    c.real_data = OLD[name]["real_data"]
  assert workdir.config_differences(OLD[name], c) == []
  assert schema.upgrade(OLD[name])["input"] == json.loads(c.input.to_json())


def test_an_old_record_keeps_the_block_it_was_trained_on():
  """The old demo trained on its `data` block (the phantom) beside an unused `phantom`
  block: upgraded, the trained block is kept, validated on, and the other one is not."""
  got = schema.upgrade(OLD["demo_segment_smoke"])["sources"]
  assert {n: (b["config"], b["weight"], b["eval"]) for n, b in got.items()} == {
      "hc18": ("tiny", 1.0, True), "phantom": ("small", 0.0, False)}
  ae = schema.upgrade(OLD["autoencoder_runlocal"])["sources"]
  assert list(ae) == ["phantom"] and ae["phantom"]["config"] == "tiny"
