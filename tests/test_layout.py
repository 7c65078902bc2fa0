"""The package layout: imports run one way, the library never reaches into the offline
converters, names never clash."""

from __future__ import annotations

import ast
import collections
import os
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / 'okdhp_jax'
# The program users run builds the bundled records (data_prep) before the library starts.
PROGRAM = PACKAGE / 'main.py'

# Small modules with one job each, which any part of the library may use.
UTILITIES = {'paths', 'precision', 'progress', 'console', 'cpu_compiler', 'compile_cache',
             'registry', 'sharding'}
# What each part of okdhp_jax (a package, or a module at the top) may import from the rest,
# bottom-up: a reader can start at data/ and never meet a name from further up.
ALLOWED = {
    **{name: set() for name in UTILITIES},
    'checkpoint_packing': set(),
    'checkpointing': {'checkpoint_packing'},
    'data': set(),
    'codecs': set(),
    'models': set(),
    'export': {'data', 'models'},
    'methods': {'models', 'export'},
    'training': {'data', 'codecs', 'models', 'methods'},
    'evaluation': {'data', 'codecs', 'models'},
    'inference': {'data', 'codecs', 'models', 'export', 'evaluation'},
    'experiment': {'checkpointing', 'data', 'codecs', 'models', 'export', 'methods', 'training',
                   'evaluation'},
    'tools': {'checkpointing', 'data', 'codecs', 'models', 'export', 'methods', 'training',
              'evaluation', 'inference', 'experiment'},
    'main': {'data', 'training', 'evaluation', 'experiment'},
}


def imported_modules(path: pathlib.Path) -> set[str]:
  """Every module `path` imports: at the top, inside functions, and under TYPE_CHECKING."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names.add(node.module)
      # `from okdhp_jax import models` names a part of the library as well.
      names.update(f'{node.module}.{alias.name}' for alias in node.names)
  return names


def part_of(path: pathlib.Path) -> str:
  """'models' for okdhp_jax/models/x.py, 'paths' for okdhp_jax/paths.py."""
  relative = path.relative_to(PACKAGE)
  return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def library_edges() -> dict[tuple[str, str], list[str]]:
  """{(importer, imported): [files]} between parts of okdhp_jax."""
  parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
           if p.suffix == '.py' or (p / '__init__.py').exists()} - {'__init__'}
  edges = collections.defaultdict(list)
  for path in PACKAGE.rglob('*.py'):
    source = part_of(path)
    for module in imported_modules(path):
      pieces = module.split('.')
      if pieces[0] == 'okdhp_jax' and len(pieces) > 1 and pieces[1] in parts:
        if pieces[1] != source:
          edges[(source, pieces[1])].append(str(path.relative_to(PACKAGE)))
  return edges


def test_every_part_of_the_library_has_a_row():
  parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
           if p.suffix == '.py' or (p / '__init__.py').exists()} - {'__init__'}
  assert parts == set(ALLOWED)


def test_imports_follow_the_allowed_edges():
  outside = {f'{a} -> {b}': sorted(set(files)) for (a, b), files in library_edges().items()
             if b not in ALLOWED[a] | UTILITIES}
  assert not outside, f'imports outside the table in tests/test_layout.py: {outside}'


def test_the_allowed_edges_have_no_cycle():
  graph = {a: (allowed | UTILITIES) - {a} for a, allowed in ALLOWED.items()}
  graph.update({u: set() for u in UTILITIES})
  done, visiting = set(), []

  def visit(node):
    assert node not in visiting, f'cycle: {" -> ".join(visiting + [node])}'
    if node in done:
      return
    visiting.append(node)
    for successor in sorted(graph[node]):
      visit(successor)
    visiting.pop()
    done.add(node)

  for node in sorted(graph):
    visit(node)


def test_the_table_catches_a_type_only_import(tmp_path):
  module = tmp_path / 'm.py'
  module.write_text('from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n'
                    '  from okdhp_jax.experiment import Experiment\n')
  assert 'okdhp_jax.experiment' in imported_modules(module)


def test_the_library_never_imports_data_prep():
  offenders = {str(path.relative_to(PACKAGE)): sorted(imported_modules(path))
               for path in PACKAGE.rglob('*.py') if path != PROGRAM}
  offenders = {path: [m for m in modules if m.split('.')[0] == 'data_prep']
               for path, modules in offenders.items()}
  assert not {path: modules for path, modules in offenders.items() if modules}


def test_no_module_shares_a_name_with_a_package_beside_it():
  """`train.py` beside `training/` is the kind of pair a reader confuses."""
  clashes = []
  for folder, subfolders, files in os.walk(PACKAGE):
    packages = {d for d in subfolders if os.path.exists(os.path.join(folder, d, '__init__.py'))}
    for name in files:
      stem = name[:-3] if name.endswith('.py') else None
      if stem and stem != '__init__' and any(
          p == stem or p.startswith(stem) or stem.startswith(p) for p in packages):
        clashes.append(os.path.join(folder, name))
  assert not clashes


def test_readme_and_architecture_name_every_package():
  packages = sorted(p.name for p in PACKAGE.iterdir() if (p / '__init__.py').exists())
  for doc in ('README.md', 'ARCHITECTURE.md'):
    text = (PACKAGE.parent / doc).read_text()
    assert not [p for p in packages if f'okdhp_jax/{p}/' not in text], doc
