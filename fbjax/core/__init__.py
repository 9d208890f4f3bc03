"""Floor 0: records and vocabularies (config schema, workdir files, checkpoints, the bundle's
files, labels), metrics and plots. Imports no other fbjax folder."""
