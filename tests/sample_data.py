"""The bundled MPII samples (5 real people, data_prep/samples/mpii) as a converter's input."""

from __future__ import annotations

import json
import os
import shutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPII_SAMPLES = os.path.join(REPO, 'data_prep', 'samples', 'mpii')


def mpii_people() -> list[dict]:
  """The 5 people of the samples' HRNet-style json."""
  with open(os.path.join(MPII_SAMPLES, 'test_mpii.json')) as f:
    return json.load(f)


def mpii_annotations(folder, train=None, valid=None) -> str:
  """An HRNet annotations folder at `folder`: train.json and valid.json (the samples unless
  given) and the samples' gt_valid.mat."""
  os.makedirs(folder, exist_ok=True)
  for name, people in (('train.json', train), ('valid.json', valid)):
    with open(os.path.join(folder, name), 'w') as f:
      json.dump(mpii_people() if people is None else people, f)
  shutil.copy(os.path.join(MPII_SAMPLES, 'gt_valid_first5.mat'),
              os.path.join(folder, 'gt_valid.mat'))
  return str(folder)
