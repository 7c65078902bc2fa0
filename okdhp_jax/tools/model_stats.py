r"""Prints parameters and MACs of the configured network (and, with --all, of every variant).

  python -m okdhp_jax.tools.model_stats --config configs/default.py
  python -m okdhp_jax.tools.model_stats --config configs/default.py:runlocal --all

MACs are per image at the config's input size (--all: 256x256, 16 joints, as the paper reports).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

import ml_collections

from okdhp_jax.data.meta import get_meta
from okdhp_jax.models import MobilePose, MultiBranchHourglass, StackedHourglass, build_model
from okdhp_jax.models.stats import model_stats

PAPER_INPUT = (256, 256)
PAPER_JOINTS = 16


def load_config(spec: str) -> ml_collections.ConfigDict:
  """'configs/x.py' or 'configs/x.py:arg' -> get_config(arg) of that file."""
  path, _, arg = spec.partition(':')
  if not os.path.exists(path):
    raise FileNotFoundError(f'--config file {path} does not exist')
  module_spec = importlib.util.spec_from_file_location('_okdhp_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise ValueError(f'--config file {path} has no get_config(arg) function')
  return module.get_config(arg or None)


def paper_variants() -> list[tuple[str, object]]:
  """(name, module) of every network the paper reports sizes for, plus MobilePose."""
  j = PAPER_JOINTS
  rows = [(f'HG{n}', StackedHourglass(n, num_joints=j)) for n in (2, 4, 8)]
  for label, stacks in (('balanced', (2, 2, 2)), ('unbalanced', (2, 4, 6))):
    for fau in ('none', 'released', 'paper'):
      rows.append((f'OKDHP-HG4 {label} fau={fau}', MultiBranchHourglass(j, 2, stacks, fau=fau)))
  for backbone in ('resnet18', 'mobilenetv2', 'shufflenetv2'):
    rows.append((f'MobilePose-{backbone}', MobilePose(j, backbone)))
    for fau in ('released', 'paper'):
      rows.append((f'OKDHP-MobilePose-{backbone} x3 fau={fau}',
                   MobilePose(j, backbone, num_branches=3, fau=fau)))
  return rows


def format_row(name: str, stats) -> str:
  return f'{name:<48} {stats.params / 1e6:>10.2f} {stats.macs / 1e9:>8.2f}'


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True, help='config file, optionally with :arg')
  parser.add_argument('--all', action='store_true', help='also every paper variant')
  args = parser.parse_args(argv)

  config = load_config(args.config)
  num_joints = len(get_meta(config.data.dataset).joint_names)
  input_size = tuple(config.data.input_size)
  model = build_model(config.model, num_joints, input_size)
  print(f'{"model":<48} {"params (M)":>10} {"GMACs":>8}')
  name = f'config: {config.model.name} {os.path.basename(args.config)} {input_size}'
  print(format_row(name, model_stats(model, (*input_size, 3))), flush=True)
  if args.all:
    for name, variant in paper_variants():
      print(format_row(name, model_stats(variant, (*PAPER_INPUT, 3))), flush=True)


if __name__ == '__main__':
  main(sys.argv[1:])
