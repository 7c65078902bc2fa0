"""The package layout: the library never reaches into the offline converters, names never clash."""

from __future__ import annotations

import ast
import os
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / 'okdhp_jax'
# The program users run builds the bundled records (data_prep) before the library starts.
PROGRAM = PACKAGE / 'main.py'


def imported_modules(path: pathlib.Path) -> set[str]:
  names = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names.add(node.module)
  return names


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
