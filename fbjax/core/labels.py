"""The label vocabularies shared by every fbjax data set.

All builders use these lists (and their order) so that a model trained on a
mix of sources sees one label space. Unknown labels are -1 everywhere.
"""

PLANES = ("trans-thalamic", "trans-cerebellar", "trans-ventricular", "other")
PLANE_SHORT = ("TT", "TC", "TV", "other")

# The phantom simulates the first eleven; the fetal brain abnormalities set
# uses `normal` and fifteen anomalies, five of which the phantom shares.
CONDITIONS = (
    "normal",
    "mild_ventriculomegaly",       # atrial width 10-12 mm
    "moderate_ventriculomegaly",   # 12-15 mm
    "severe_ventriculomegaly",     # > 15 mm
    "microcephaly",                # HC < mean - 3 SD for gestational age
    "cerebellar_hypoplasia",       # TCD well below gestational age in mm
    "mega_cisterna_magna",         # cisterna magna depth > 10 mm
    "absent_csp",                  # cavum septi pellucidi not seen
    "arachnoid_cyst",
    "hydranencephaly",
    "encephalocele",
    "arnold_chiari_malformation",
    "colpocephaly",
    "holoprosencephaly",
    "intracranial_hemorrhage",
    "intracranial_tumor",
    "porencephaly",
    "vein_of_galen_malformation",
)
PHANTOM_CONDITIONS = CONDITIONS[:11]

ABNORMAL = ("normal", "abnormal")
UNKNOWN = -1


def plane_index(name: str) -> int:
  """Index of a plane given its long or short name (case-insensitive)."""
  key = name.strip().lower()
  for i, (long, short) in enumerate(zip(PLANES, PLANE_SHORT, strict=True)):
    if key in (long, short.lower()):
      return i
  raise KeyError(f"unknown plane {name!r}; expected one of {PLANES}")


def condition_index(name: str) -> int:
  try:
    return CONDITIONS.index(name)
  except ValueError:
    raise KeyError(f"unknown condition {name!r}; expected one of {CONDITIONS}") from None
