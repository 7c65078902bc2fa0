r"""Converts a PyTorch hourglass checkpoint (pytorch-pose or released OKDHP) into an export.

  # A plain pytorch-pose / HRNet-style hourglass (e.g. an FPD teacher):
  python -m okdhp_jax.tools.convert_torch --checkpoint hg8.pth.tar --out /tmp/hg8_export
  # A released OKDHP multi-branch checkpoint: the whole network (every branch, FAU, ensemble),
  python -m okdhp_jax.tools.convert_torch --checkpoint okdhp_hg4.pth.tar --out /tmp/okdhp_hg4
  # or one branch, deployable: a plain hourglass with that branch's outputs.
  python -m okdhp_jax.tools.convert_torch --checkpoint okdhp_hg4.pth.tar --branch 0 \
      --out /tmp/okdhp_hg4_branch0

The layout and every size (stacks shared and private, features, depth, joints, FAU) are read
off the keys. The checkpoint is read with torch.load(weights_only=True) plus a numpy allow-list
(okdhp_jax/models/torch_checkpoint.py): no pickled code runs. The export (Orbax variables +
model.json) loads with `okdhp_jax.export.store.load_exported` and `okdhp_jax.models.build_model`.
"""

from __future__ import annotations

import argparse
import os
import sys

# Joint count -> the dataset whose meta (joint names, flip pairs) the export should use.
DATASET_BY_JOINTS = {16: 'mpii', 17: 'coco'}


def convert_checkpoint(checkpoint: str, out_dir: str, *, num_stacks: int | None = None,
                       branch: int | None = None) -> tuple[str, dict]:
  """Reads `checkpoint`, writes the export to `out_dir`; returns (absolute path, model.json)."""
  from okdhp_jax import models
  from okdhp_jax.export.store import save_exported
  from okdhp_jax.models import torch_import

  state_dict = torch_import.load_state_dict(checkpoint)
  layout, model_config, num_joints = torch_import.describe_state_dict(state_dict, num_stacks)
  variables = torch_import.state_dict_to_variables(state_dict)
  if branch is not None:
    if layout != 'okdhp':
      raise ValueError(f'--branch picks a branch of a multi-branch (OKDHP) checkpoint; '
                       f'{checkpoint} is a plain {layout} hourglass')
    variables = models.export_student(variables, branch, model_config)  # checks the range.
    branch %= models.num_branches(model_config)
    model_config = models.deployed_model_config(model_config, branch)
  description = {'model': model_config, 'num_joints': num_joints, 'layout': layout,
                 'source': os.path.abspath(checkpoint)}
  if branch is not None:
    description['branch'] = branch
  if num_joints in DATASET_BY_JOINTS:
    description['dataset'] = DATASET_BY_JOINTS[num_joints]
  return save_exported(out_dir, variables, description), description


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--checkpoint', required=True, help='.pth or .pth.tar file')
  parser.add_argument('--num-stacks', type=int, default=None,
                      help='plain hourglass: the stacks you expect (checked against the file)')
  parser.add_argument('--branch', type=int, default=None,
                      help='OKDHP checkpoint: write only this branch, as a plain hourglass')
  parser.add_argument('--out', required=True, help='export directory to write')
  args = parser.parse_args(argv)
  if args.num_stacks is not None and args.num_stacks < 1:
    parser.error(f'--num-stacks must be >= 1, got {args.num_stacks}')
  try:
    path, description = convert_checkpoint(args.checkpoint, args.out,
                                           num_stacks=args.num_stacks, branch=args.branch)
  except (FileNotFoundError, ValueError) as error:
    print(f'convert_torch: error: {error}', file=sys.stderr)
    sys.exit(1)
  model, hourglass = description['model'], description['model']['hourglass']
  stacks = tuple(hourglass['branch_stacks'])
  what = (f'{hourglass["num_shared_stacks"]} shared + branches of {stacks} stacks, FAU '
          f'{model["fau"]}' if len(stacks) > 1 else f'plain {stacks[0]}-stack hourglass')
  print(f'{description["layout"]} checkpoint -> {what}, {description["num_joints"]} joints '
        f'({description.get("dataset", "dataset unknown")}), features {hourglass["features"]}')
  print(f'wrote {path}')


if __name__ == '__main__':
  main(sys.argv[1:])
