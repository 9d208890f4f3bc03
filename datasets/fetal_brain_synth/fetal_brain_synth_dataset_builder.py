"""fetal_brain_synth: the fbjax fetal head phantom as a tfds data set (array_record).

Every example is `fbjax.phantom.simulator.simulate(seed, index, size=...)` in the
shared data model (`fbjax.data.features`). Each split is its own phantom
stream (seed `SPLIT_SEEDS[split]`), so no synthetic fetus (`group`) appears in
two splits, and indices 0..n-1 of a stream follow the phantom's index plan:
every run of `phantom.CYCLE` (33) images holds every condition, so each
labelled split of at least 33 images contains all eleven conditions.

Splits: `train` and `validation` (4:1), `test`, and `unlabelled` (2,949
images, as many as FETAL_PLANES_DB's brain planes) whose examples carry the
image and group only: labels -1, measurements NaN, masks and the clean image
empty with their `has_*` flags False.

Configs: `tiny` (64 px, 132/33/33 + 16, for unit tests), `small` (128 px,
1200/300/300 + 2949, for tests and the demo), `full` (256 px,
8000/2000/2000 + 2949).
"""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds

from fbjax.data import features, splits
from fbjax.phantom import simulator as phantom

# Each split is its own phantom stream; `fbjax.data.splits` maps a group's
# stream seed back to its split.
SPLIT_SEEDS = splits.SYNTH_SEEDS
UNLABELLED = 2949


@dataclasses.dataclass
class PhantomConfig(tfds.core.BuilderConfig):
  size: int = 128
  num_train: int = 1200
  num_validation: int = 300
  num_test: int = 300
  num_unlabelled: int = UNLABELLED

  def counts(self) -> dict[str, int]:
    return {"train": self.num_train, "validation": self.num_validation,
            "test": self.num_test, "unlabelled": self.num_unlabelled}


def labelled_example(args: tuple) -> tuple[str, dict]:
  seed, index, size = args
  sim = phantom.simulate(seed, index, size=size)
  _check_split(sim["group"], seed)
  return sim["id"], features.example(**sim, pixel_aspect=1.0)


def _check_split(group: str, seed: int) -> None:
  split = {v: k for k, v in SPLIT_SEEDS.items()}[seed]
  if splits.split_of(group) != split:
    raise AssertionError(f"{group}: generated for {split}, but splits.split_of says "
                         f"{splits.split_of(group)}")


def unlabelled_example(args: tuple) -> tuple[str, dict]:
  seed, index, size = args
  sim = phantom.simulate(seed, index, size=size)
  # The pixel spacing is acquisition metadata (a scanner writes it into every
  # image's header), not a label: it stays, so biometry can be given in mm.
  _check_split(sim["group"], seed)
  return sim["id"], features.example(id=sim["id"], group=sim["group"], image=sim["image"],
                                     pixel_spacing_mm=sim["pixel_spacing_mm"], pixel_aspect=1.0)


class Builder(tfds.core.GeneratorBasedBuilder):
  """The fbjax fetal head phantom (B-mode simulation with full ground truth)."""

  VERSION = tfds.core.Version("1.4.0")
  RELEASE_NOTES = {"1.0.0": "First release: TT/TC/TV (+ other) planes, 11 conditions.",
                   "1.1.0": "The unlabelled split keeps pixel_spacing_mm (metadata, not a label).",
                   "1.2.0": "Feature pixel_aspect (1); each group's split checked against "
                            "fbjax.data.splits.",
                   "1.3.0": "Image formation matched to HC18 by head-size tercile at 800 and "
                            "256 px: narrower axial PSF, lateral PSF scaled with the field of "
                            "view, less echogenic skull, darker display. Anatomy, masks, labels "
                            "and measurements unchanged.",
                   "1.4.0": "Gestational age 11-40 weeks (HC 47-372 mm) drawn from HC18's GA "
                            "distribution, conditions from 16 weeks; small structures and the "
                            "TCD follow GA; field of view, PSF, display level and skull and "
                            "brain echogenicity follow head size and GA, matched to HC18 by "
                            "head-size tercile at 800 and 256 px. Every (seed, index) has a "
                            "new fetus: images, masks and measurements all change."}
  BUILDER_CONFIGS = [
      PhantomConfig(name="tiny", description="64 px, 132/33/33 + 16 unlabelled (unit tests)",
                    size=64, num_train=132, num_validation=33, num_test=33, num_unlabelled=16),
      PhantomConfig(name="small", description="128 px, 1200/300/300 + 2949 unlabelled",
                    size=128, num_train=1200, num_validation=300, num_test=300),
      PhantomConfig(name="full", description="256 px, 8000/2000/2000 + 2949 unlabelled",
                    size=256, num_train=8000, num_validation=2000, num_test=2000),
  ]
  DEFAULT_CONFIG_NAME = "small"

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=features.features(),
        supervised_keys=None,
        homepage="https://github.com/fbjax/fbjax",
        description=__doc__,
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split, n)
            for split, n in self.builder_config.counts().items()}

  def _generate_examples(self, split: str, num: int):
    fn = unlabelled_example if split == "unlabelled" else labelled_example
    # Serial on purpose: on 2 shared cores neither threads nor processes were
    # faster (measured), and a builder must not spawn processes that re-import
    # the caller's main module.
    for i in range(num):
      yield fn((SPLIT_SEEDS[split], i, self.builder_config.size))
