"""The layers of fbjax, checked from the source: folders on floors, no import that runs back
up a floor, no import circle, no import inside a function without a reason beside it, no
benchmark that imports another, no `sys.path` edits.

    python tests/test_layers.py          # prints the import graph, floor by floor
"""

from __future__ import annotations

import ast
import collections
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

# fbjax's folders, bottom to top: a module may import its own floor and the floors below.
FLOORS = (
    ("core",),                # records, vocabularies, metrics, plots
    ("geometry",),            # letterbox, ellipses and biometry, the aligned head, the gate
    ("enhance", "data"),      # jittable filters; the input pipeline and the tfds sources
    ("phantom", "models"),    # the ultrasound phantom; the networks and losses
    ("runtime",),             # the one training loop, optimisers, parallelism, tracking
    ("evaluation",),          # trained models as functions, the head step, the evaluators
    ("trainers",),            # one trainer per model kind
    ("predict",),             # launch.predict's application
    ("jobs",),                # evaluate, release, demo, the model card
)
FLOOR = {folder: i for i, folders in enumerate(FLOORS) for folder in folders}
# Modules longer than this say why beside their name.
MAX_LINES = 420
LONG = {
    "fbjax.phantom.simulator": "the phantom's anatomy and its scan geometry, one model",
    "fbjax.enhance.filters": "a library of independent jittable filters",
}
# An import inside a function needs a reason written beside it, not only a linter code.
_NOQA = re.compile(r"noqa(?::\s*[A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*)?")


def says_why(line: str) -> bool:
  """Whether `line` carries a comment with words in it besides a linter's codes."""
  comment = line.partition("#")[2]
  return bool(re.search(r"[A-Za-z]{3,}", _NOQA.sub("", comment)))


def modules() -> dict[str, pathlib.Path]:
  out = {}
  for p in sorted((ROOT / "fbjax").rglob("*.py")):
    parts = p.relative_to(ROOT).with_suffix("").parts
    out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
  return out


def _targets(node, package: str, known) -> list[str]:
  if isinstance(node, ast.Import):
    names = [a.name for a in node.names]
  else:
    base = node.module or ""
    if node.level:
      parts = package.split(".")[:len(package.split(".")) - node.level + 1]
      base = ".".join(parts + ([base] if base else []))
    names = [f"{base}.{a.name}" for a in node.names] or [base]
    names = [n if n in known else base for n in names]
  out = []
  for n in names:
    while n and n not in known:
      n = n.rpartition(".")[0]
    if n:
      out.append(n)
  return out


def imports(path: pathlib.Path, name: str, known) -> tuple[set, list]:
  """(module-level fbjax imports, [(target, line, inside a function, source line)])."""
  text = path.read_text()
  tree = ast.parse(text)
  lines = text.splitlines()
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  top, every = set(), []
  inner_nodes = set()
  for fn in ast.walk(tree):
    if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
      for sub in ast.walk(fn):
        if isinstance(sub, (ast.Import, ast.ImportFrom)):
          inner_nodes.add(id(sub))
  for node in ast.walk(tree):
    if not isinstance(node, (ast.Import, ast.ImportFrom)):
      continue
    inner = id(node) in inner_nodes
    src = lines[node.lineno - 1]
    targets = _targets(node, package, known)
    if not targets and inner:
      every.append((None, node.lineno, True, src))
    for t in targets:
      if t != name:
        every.append((t, node.lineno, inner, src))
        if not inner:
          top.add(t)
  return top, every


def floor_of(name: str) -> int | None:
  parts = name.split(".")
  return FLOOR.get(parts[1]) if len(parts) > 1 else None


def graph():
  mods = modules()
  known = set(mods)
  edges, found = collections.defaultdict(set), {}
  for name, path in mods.items():
    _, every = imports(path, name, known)
    found[name] = every
    for t, *_ in every:
      if t:
        edges[name].add(t)
  # an import of a package means its __init__: drop a package whose submodule is also named
  return mods, edges, found


def circles(edges) -> list[list[str]]:
  index, low, stack, on, out = {}, {}, [], set(), []
  counter = [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in sorted(edges.get(v, ())):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))

  for v in sorted(edges):
    if v not in index:
      visit(v)
  return out


def test_every_module_sits_in_a_floor():
  mods = modules()
  loose = [m for m in mods if m != "fbjax" and floor_of(m) is None]
  assert not loose, f"modules outside the floors' folders {sorted(FLOOR)}: {loose}"


def test_no_import_runs_back_up_a_floor():
  _, edges, _ = graph()
  up = [(a, b) for a, bs in edges.items() for b in bs
        if floor_of(a) is not None and floor_of(b) is not None and floor_of(b) > floor_of(a)]
  assert not up, f"imports that run back up a floor: {sorted(up)}"


def test_no_import_circle():
  _, edges, _ = graph()
  assert not circles(edges)


def test_imports_inside_functions_say_why():
  files = [p for d in ("fbjax", "launch", "benchmarks") for p in (ROOT / d).rglob("*.py")]
  bare = []
  for p in files:
    tree = ast.parse(p.read_text())
    lines = p.read_text().splitlines()
    for fn in ast.walk(tree):
      if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
        for sub in ast.walk(fn):
          if isinstance(sub, (ast.Import, ast.ImportFrom)):
            if not says_why(" ".join(lines[sub.lineno - 1:sub.end_lineno])):
              bare.append(f"{p.relative_to(ROOT)}:{sub.lineno}: {lines[sub.lineno - 1].strip()}")
  assert not bare, "imports inside functions without a reason beside them:\n" + "\n".join(bare)


def test_modules_stay_short():
  long = {m: n for m, p in modules().items()
          if (n := len(p.read_text().splitlines())) > MAX_LINES and m not in LONG}
  assert not long, f"modules above {MAX_LINES} lines (split them, or say why in LONG): {long}"


def test_benchmarks_import_no_benchmark_and_nothing_edits_sys_path():
  offenders = []
  for d in ("benchmarks", "launch", "tests", "configs", "fbjax"):
    for p in (ROOT / d).rglob("*.py"):
      if p == pathlib.Path(__file__):
        continue
      text = p.read_text()
      if re.search(r"sys\.path\.(insert|append)", text):
        offenders.append(f"{p.relative_to(ROOT)}: edits sys.path")
      if re.search(
          r"^\s*(from benchmarks\b|import benchmarks\b)", text, re.M):
        offenders.append(f"{p.relative_to(ROOT)}: imports a benchmark")
  assert not offenders, offenders


def test_the_checks_catch_what_they_look_for(tmp_path):
  # An upward import, a circle and a bare inner import, each found on a made-up graph.
  assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
  assert floor_of("fbjax.core.schema") < floor_of("fbjax.evaluation.inference")
  assert floor_of("fbjax.loose") is None
  assert says_why("  import wandb  # noqa: PLC0415 (slow to import)")
  assert says_why("  import wandb  # lazy: slow to import")
  assert not says_why("  import wandb  # noqa: PLC0415")
  assert not says_why("  import wandb")
  f = tmp_path / "m.py"
  f.write_text("def f():\n  from fbjax.core import schema\n  return schema\n")
  _, every = imports(f, "fbjax.jobs.m", {"fbjax.core.schema", "fbjax.core"})
  assert every == [("fbjax.core.schema", 2, True, "  from fbjax.core import schema")]


def report() -> dict:
  mods, edges, _ = graph()
  by_floor = collections.defaultdict(list)
  for m in mods:
    f = floor_of(m)
    by_floor["top" if f is None else f"{f} {'/'.join(FLOORS[f])}"].append(m)
  lines = {m: len(p.read_text().splitlines()) for m, p in mods.items()}
  largest = max(lines, key=lines.get)
  return {"modules": len(mods), "floors": len(FLOORS),
          "circles": circles(edges),
          "imports_up": sum(1 for a, bs in edges.items() for b in bs
                            if None not in (floor_of(a), floor_of(b))
                            and floor_of(b) > floor_of(a)),
          "largest": [largest, lines[largest]],
          "above_400_lines": {m: n for m, n in lines.items() if n > 400},
          "floors_modules": {k: sorted(v) for k, v in sorted(by_floor.items())},
          "imports": {m: sorted(edges[m]) for m in sorted(edges)}}


if __name__ == "__main__":
  json.dump(report(), sys.stdout, indent=1)
  print()
