"""Export: the deployed student as a plain network in a self-describing folder.

  branch.py   one branch of a multi-branch hourglass re-keyed as a plain StackedHourglass.
  store.py    the export folder format: Orbax variables + model.json (save and load).
  trained.py  `--mode export`: picks the branch of a trained run and writes its folder.

The PyTorch converter (tools/convert_torch.py) and the FPD teacher use the same folder format.
"""
