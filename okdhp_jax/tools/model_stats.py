r"""Prints parameters and MACs of a config's networks and (with --all) of every paper variant.

  python -m okdhp_jax.tools.model_stats --config configs/hg4.py      # training + deployed
  python -m okdhp_jax.tools.model_stats --all                        # every paper variant
  python -m okdhp_jax.tools.model_stats --config configs/hg4.py:runlocal --all

A multi-branch network is what trains; one branch of it (the student) is what is deployed.
MACs are per image at the config's input size (--all: 256x256, 16 joints, as the paper reports).
"""

from __future__ import annotations

import argparse
import os
import sys

PAPER_INPUT = (256, 256)
PAPER_JOINTS = 16


def paper_variants() -> list[tuple[str, str, object]]:
  """(name, 'training' or 'deployed', module) of every network the paper sizes, and MobilePose."""
  from okdhp_jax.models import MobilePose, MultiBranchHourglass
  from okdhp_jax.models.mobilepose import ENCODERS
  j = PAPER_JOINTS
  rows = [(f'HG{n}', 'deployed', MultiBranchHourglass(j, 0, (n,), fau='none')) for n in (2, 4, 8)]
  for label, stacks in (('balanced', (2, 2, 2)), ('unbalanced', (2, 4, 6))):
    for fau in ('none', 'released', 'paper'):
      rows.append((f'OKDHP-HG4 {label} fau={fau}', 'training',
                   MultiBranchHourglass(j, 2, stacks, fau=fau)))
  for backbone in ENCODERS:
    rows.append((f'MobilePose-{backbone}', 'deployed', MobilePose(j, backbone)))
    for fau in ('released', 'paper'):
      rows.append((f'OKDHP-MobilePose-{backbone} x3 fau={fau}', 'training',
                   MobilePose(j, backbone, num_branches=3, fau=fau)))
  return rows


def config_networks(config, config_name: str) -> list[tuple[str, str, object]]:
  """(name, kind, module) of the config's training network and of its deployed student."""
  import ml_collections
  from okdhp_jax.data.meta import get_meta
  from okdhp_jax.models import build_model, deployed_model_config, num_branches
  num_joints = get_meta(config.data.dataset).num_joints
  input_size = tuple(config.data.input_size)
  name = f'config: {config.model.name} {config_name} {input_size}'
  training = build_model(config.model, num_joints, input_size)
  student_config = deployed_model_config(config.model)
  if num_branches(config.model) == 1 and config.model.fau == 'none':
    return [(name, 'both', training)]  # a plain network trains what it deploys.
  student = build_model(ml_collections.ConfigDict(student_config), num_joints, input_size)
  return [(name, 'training', training), (f'{name} student', 'deployed', student)]


def format_row(name: str, kind: str, stats) -> str:
  return f'{name:<52} {kind:<9} {stats.params / 1e6:>10.2f} {stats.macs / 1e9:>8.2f}'


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default=None, help='config file, optionally with :arg')
  parser.add_argument('--all', action='store_true', help='every paper variant')
  args = parser.parse_args(argv)
  if not args.config and not args.all:
    parser.error('give --config FILE, --all, or both')

  from okdhp_jax.models.stats import model_stats
  from okdhp_jax.tools.config_file import load_config
  print(f'{"network":<52} {"kind":<9} {"params (M)":>10} {"GMACs":>8}')
  if args.config:
    config = load_config(args.config)
    input_shape = (*config.data.input_size, 3)
    for name, kind, network in config_networks(config, os.path.basename(args.config)):
      print(format_row(name, kind, model_stats(network, input_shape)), flush=True)
  if args.all:
    for name, kind, network in paper_variants():
      print(format_row(name, kind, model_stats(network, (*PAPER_INPUT, 3))), flush=True)


if __name__ == '__main__':
  main(sys.argv[1:])
