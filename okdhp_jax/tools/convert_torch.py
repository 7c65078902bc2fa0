r"""Converts a PyTorch (pytorch-pose `hg`) hourglass checkpoint into an okdhp_jax export.

  python -m okdhp_jax.tools.convert_torch --checkpoint model.pth.tar --num-stacks 8 \
      --out /tmp/hg8_export

The checkpoint is read with torch.load(weights_only=True) (no pickled code runs). The export
(Orbax variables + model.json) loads with `okdhp_jax.export.store.load_exported` and
`okdhp_jax.models.build_model`, e.g. as the FPD teacher.
"""

from __future__ import annotations

import argparse
import os
import sys



def convert_checkpoint(checkpoint: str, num_stacks: int, out_dir: str) -> str:
  """Reads `checkpoint`, writes the export to `out_dir`, returns its absolute path."""
  from okdhp_jax.export.branch import plain_hourglass_config
  from okdhp_jax.export.store import save_exported
  from okdhp_jax.models.torch_import import (infer_hourglass_dims, load_torch_state_dict,
                                             state_dict_to_variables)
  state_dict = load_torch_state_dict(checkpoint)
  features, num_joints, depth = infer_hourglass_dims(state_dict)
  variables = state_dict_to_variables(state_dict, num_stacks)
  description = {
      'model': plain_hourglass_config(num_stacks, features=features, depth=depth),
      'num_joints': num_joints,
      'source': os.path.abspath(checkpoint),
  }
  return save_exported(out_dir, variables, description)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--checkpoint', required=True, help='.pth or .pth.tar file')
  parser.add_argument('--num-stacks', type=int, required=True, help='stacks of the model')
  parser.add_argument('--out', required=True, help='export directory to write')
  args = parser.parse_args(argv)
  if args.num_stacks < 1:
    parser.error(f'--num-stacks must be >= 1, got {args.num_stacks}')
  try:
    print(f'wrote {convert_checkpoint(args.checkpoint, args.num_stacks, args.out)}')
  except (FileNotFoundError, ValueError) as error:
    print(f'convert_torch: error: {error}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  main(sys.argv[1:])
