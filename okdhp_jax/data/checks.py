"""Checks that the records a config points at exist and fit it, before anything is built.

Making records is data_prep's job (offline converters; `python -m okdhp_jax.main` has the
bundled samples built before the trainer). These checks only read what the converters wrote
and say which command makes what is missing.
"""

from __future__ import annotations

import os

import ml_collections

from okdhp_jax.data import records

_HOW_TO_BUILD = {
    'mpii': ('python -m data_prep.mpii --annotations MPII/annot --images MPII/images '
             '--out {records_dir}'),
    'coco': ('python -m data_prep.coco --annotations COCO/annotations/person_keypoints_train2017.json '
             'COCO/annotations/person_keypoints_val2017.json --images COCO/images --out {records_dir} '
             '[--detections COCO_val2017_detections_AP_H_56_person.json]'),
}
_BUNDLED_HINT = ('or try the bundled samples on a CPU first: python -m okdhp_jax.main '
                 '--config configs/quickstart.py --workdir /tmp/okdhp')


def check_records(config: ml_collections.ConfigDict) -> None:
  """Raises unless config.data.records_dir holds converted records that `config` can use.

  Raises:
    FileNotFoundError: naming config.data.records_dir (or eval_annotations) and the data_prep
      command that fills it.
    ValueError: flips asked of records that cannot be flipped (see check_flips).
  """
  check_converted(config.data)
  check_flips(config)


def check_flips(config: ml_collections.ConfigDict) -> None:
  """Refuses flip augmentation and the flip test on records whose sides are told by colour.

  Raises:
    ValueError: naming the config key to turn off.
  """
  info = records.read_dataset_info(config.data.records_dir)
  if not info.get(records.SIDES_BY_COLOUR):
    return
  for key, value in (('config.data.flip', config.data.flip),
                     ('config.eval.flip_test', config.eval.flip_test)):
    if value:
      raise ValueError(
          f'{key}=True, but config.data.records_dir={config.data.records_dir!r} holds synthetic '
          'figures whose right limbs are told from the left ones by colour: mirrored, they '
          f'would be labelled the wrong way round. Set {key}=False for these records.')


def check_converted(data: ml_collections.ConfigDict) -> None:
  """Raises FileNotFoundError unless config.data's records and evaluation annotations exist
  (a file check: main runs it before JAX and TensorFlow load)."""
  info = os.path.join(data.records_dir, records.DATASET_INFO)
  if not os.path.exists(info):
    command = _HOW_TO_BUILD.get(data.dataset, _HOW_TO_BUILD['mpii']).format(
        records_dir=data.records_dir)
    raise FileNotFoundError(
        f'config.data.records_dir={data.records_dir!r} holds no converted dataset '
        f'({info} is missing). Build it with\n  {command}\n(see data_prep/README.md), then pass '
        f'--config.data.records_dir=DIR; {_BUNDLED_HINT}')
  if not os.path.exists(data.eval_annotations):
    raise FileNotFoundError(
        f'config.data.eval_annotations={data.eval_annotations!r} does not exist; the converter '
        f'writes it into the records folder (gt_valid.mat for MPII, annotations_valid.json for '
        f'COCO)')
