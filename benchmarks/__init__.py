"""Measurements that print JSON, run from the repository root as
`python -m benchmarks.<name>`; no benchmark imports another."""
