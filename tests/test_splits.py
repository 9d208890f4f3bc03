"""`fbjax.data.splits`: one split per group, whatever data set asks."""

from __future__ import annotations

import collections

import pytest

from fbjax.data import builder_utils, splits


@pytest.mark.parametrize("raw", [737, "737", "00737", "Patient737", "Patient00737", "patient737"])
def test_fpdb_group_normalises_patient_numbers(raw):
  assert splits.fpdb_group(raw) == "Patient00737"


def test_fpdb_group_names_a_bad_value():
  with pytest.raises(ValueError, match="'Patient7x'"):
    splits.fpdb_group("Patient7x")


def test_namespaces():
  assert splits.namespace("Patient00737") == "fpdb"
  assert splits.namespace("hc18-010") == splits.namespace("hc18-test-003") == "hc18"
  assert splits.namespace("synth-s101-c0-f2") == "synth"
  assert splits.namespace("arachnoid-cyst-35a") == "fba"


def test_patient_split_is_a_function_of_the_name_with_sensible_proportions():
  groups = [splits.fpdb_group(n) for n in range(1, 4001)]
  got = [splits.split_of(g) for g in groups]
  assert got == [splits.split_of(g) for g in groups]  # deterministic
  share = collections.Counter(g for g, n in zip(got, range(1, 4001), strict=True)
                              if f"Patient{n:05d}" not in splits.FIXED)
  total = sum(share.values())
  # Binomial(3996, 0.15): 3 SD = 0.017.
  assert abs(share["test"] / total - 0.15) < 0.017
  assert abs(share["validation"] / total - 0.15) < 0.017
  # Independent of which other groups are present.
  subset = groups[::7]
  assert splits.assign(subset) == {g: splits.split_of(g) for g in subset}


def test_fixed_patients_are_test_everywhere():
  for g in ("Patient00712", "Patient00719", "Patient00723", "Patient00724"):
    assert splits.split_of(g) == "test"
    assert splits.assign({g: {"normal"}, "arachnoid-cyst-1": {"arachnoid-cyst"}})[g] == "test"


def test_phantom_groups_follow_their_stream():
  for split, seed in splits.SYNTH_SEEDS.items():
    assert splits.split_of(f"synth-s{seed}-c3-f1") == split
  with pytest.raises(ValueError, match="seed 7"):
    splits.split_of("synth-s7-c0-f0")


def test_data_set_local_groups_need_assign():
  with pytest.raises(ValueError, match="splits.assign"):
    splits.split_of("hc18-010")


def test_hc18_keeps_its_4_to_1_assignment_and_official_test():
  labelled = [f"hc18-{n:03d}" for n in range(100)]
  got = splits.assign(labelled + ["hc18-test-001", "hc18-test-002"])
  val = builder_utils.carve_groups(labelled, 0.2, 18)
  assert {g for g, s in got.items() if s == "validation"} == val and len(val) == 20
  assert got["hc18-test-001"] == got["hc18-test-002"] == "test"
  assert not any(s == "test" for g, s in got.items() if g in labelled)


def test_abnormalities_groups_stratified_around_the_shared_patients():
  patients = {splits.fpdb_group(n): {"normal"} for n in range(700, 740)}
  own = {f"cyst-{i}": {"cyst"} for i in range(10)} | {f"vm-{i}": {"vm"} for i in range(3)}
  got = splits.assign({**patients, **own})
  assert all(got[g] == splits.split_of(g) for g in patients)
  per = collections.defaultdict(collections.Counter)
  for g, s in got.items():
    for c in (patients | own)[g]:
      per[c][s] += 1
  assert per["vm"] == {"train": 1, "validation": 1, "test": 1}
  assert per["cyst"]["test"] >= 1 and per["cyst"]["validation"] >= 1


def test_check_disjoint_reports_a_group_in_two_splits():
  members = {"a": {"train": ["Patient00001"], "test": ["x"]},
             "b": {"validation": ["Patient00001"], "test": ["y"]}}
  problems = splits.check_disjoint(members)
  assert problems == ["Patient00001: [('a', 'train'), ('b', 'validation')]"]
  assert splits.check_disjoint({"a": {"train": ["p"]}, "b": {"train": ["p"]}}) == []
