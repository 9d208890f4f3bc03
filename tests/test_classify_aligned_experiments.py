"""Counting each source image once (`fbjax.evaluation.source_images`) and the aligned-head
experiments' configs (`configs/classify_aligned.py`)."""

import numpy as np
import pytest

from configs import classify as classify_config
from configs import classify_aligned as experiments
from fbjax.core import metrics
from fbjax.evaluation import source_images

H = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("ident, key", [
    (f"train/Patient00709_Plane3_2_of_3_aug_0_png_jpg.rf.{H}.jpg", "Patient00709_Plane3_2_of_3"),
    (f"test/Patient00709_Plane3_2_of_3_aug_13_png_jpg.rf.{H}.jpg", "Patient00709_Plane3_2_of_3"),
    (f"valid/Patient00737_Plane3_2_of_2_png_jpg.rf.{H}.jpg", "Patient00737_Plane3_2_of_2"),
    ("fetal_planes_db/Images/Patient00737_Plane3_2_of_2.png", "Patient00737_Plane3_2_of_2"),
    ("fetal_planes_db_640/Images/Patient01516_Plane3_2_of_3.jpg", "Patient01516_Plane3_2_of_3"),
    (f"train/Copy-of-arachnoid-cyst35a-image_aug_5_png_jpg.rf.{H}.jpg",
     "Copy-of-arachnoid-cyst35a-image"),
])
def test_source_image_joins_augmented_copies_and_exports(ident, key):
  assert source_images.source_image(ident) == key


def test_by_source_image_averages_copies_and_counts_each_image_once():
  # Image "a" (class 0): three copies, two called 1, one confidently 0 -> mean says 0.
  # Image "b" (class 1): one copy called 1. Image "c" (class 2): two copies called 0.
  ids = ["x/a_aug_0.jpg", "x/a_aug_1.jpg", "x/a_aug_2.jpg", "y/b.png", "x/c_aug_0.jpg",
         "x/c_aug_1.jpg", "z/d.png"]
  y = np.array([0, 0, 0, 1, 2, 2, -1])
  p = np.array([[0.45, 0.55, 0.0], [0.45, 0.55, 0.0], [1.0, 0.0, 0.0], [0.1, 0.8, 0.1],
                [0.7, 0.1, 0.2], [0.6, 0.1, 0.3], [0.0, 0.0, 1.0]])
  got = source_images.by_source_image(y, p, ids, 3)
  assert got["n_source_images"] == 3 and got["n_images"] == 6
  # By hand: a -> 0 (right), b -> 1 (right), c -> 0 (wrong).
  assert got["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [1, 0, 0]]
  assert got["accuracy"] == pytest.approx(2 / 3)
  f1 = [2 * 0.5 * 1 / 1.5, 1.0, 0.0]
  assert got["per_class_f1"] == pytest.approx(f1, abs=1e-4)
  assert got["macro_f1"] == pytest.approx(np.mean(f1))
  # Per image the same predictions weigh image "a" three times.
  per_image = metrics.accuracy(y, p.argmax(1))
  assert per_image == pytest.approx(2 / 6)


def test_binary_by_source_image_scores_the_mean_of_each_images_copies():
  # Image "a" (abnormal): copies 0.9 and 0.3 -> 0.6; "b" (normal): 0.2, 0.4, 0.6 -> 0.4;
  # "c" (normal): 0.7 -> 0.7; "d" (unknown label) is left out.
  ids = ["x/a_aug_0.jpg", "x/a_aug_1.jpg", "y/b.png", "x/b_aug_3.jpg", "z/b.jpg", "c.png",
         "d.png"]
  y = np.array([1, 1, 0, 0, 0, 0, -1])
  p = np.array([0.9, 0.3, 0.2, 0.4, 0.6, 0.7, 0.99])
  got = source_images.binary_by_source_image(y, p, ids, 0.5)
  assert got["n_source_images"] == 3 and got["normals"] == 2
  # At 0.5: a (0.6) is found, b (0.4) passes, c (0.7) is a false positive.
  assert got["sensitivity"] == 1.0 and got["specificity"] == 0.5
  # AUROC by hand: the one abnormal (0.6) above b (0.4), below c (0.7).
  assert got["auroc"] == pytest.approx(0.5)


def test_planes_phantom_run_adds_the_phantoms_planes_at_its_share():
  kw = dict(real="/real", seg="/seg", data_dir="/tmp/tfds", steps=10)
  plain = experiments.experiment("planes", **kw)
  mixed = experiments.experiment("planes_phantom", phantom_share=0.2, **kw)
  assert plain.sources.phantom.weight == 0.0
  weights = {n: b.weight for n, b in mixed.sources.items()}
  assert weights["phantom"] / sum(weights.values()) == pytest.approx(0.2)
  for n in ("fpdb", "fba", "hc18"):   # the real part of the mixture is the planes run's
    assert weights[n] == plain.sources[n].weight
  assert tuple(mixed.sources.phantom.tasks) == ("plane",) and not mixed.sources.phantom.eval
  assert mixed.tasks == ("plane",) and mixed.input.kind == "aligned_head"
  default = experiments.experiment("planes_phantom", **kw)   # the config's share unless given
  w = {n: b.weight for n, b in default.sources.items()}
  assert w["phantom"] / sum(w.values()) == pytest.approx(classify_config.PHANTOM_PLANES)


def test_train_groups_thins_the_real_training_sources_only():
  kw = dict(real="/real", seg="/seg", data_dir="/tmp/tfds", steps=10)
  assert all(b.train_groups == 1.0 for b in experiments.experiment("planes", **kw).sources.values())
  c = experiments.experiment("planes_phantom", train_groups=0.5, **kw)
  assert {n: b.train_groups for n, b in c.sources.items()} == {
      "phantom": 1.0, "fba": 0.5, "fpdb": 0.5, "hc18": 0.5}


def test_the_named_config_is_the_experiment():
  arg = "run=planes_phantom,real=/real,seg=/seg,data_dir=/tmp/tfds,steps=10,phantom_share=0.2"
  want = experiments.experiment("planes_phantom", real="/real", seg="/seg",
                                data_dir="/tmp/tfds", steps=10, phantom_share=0.2)
  assert experiments.get_config(arg).to_dict() == want.to_dict()
