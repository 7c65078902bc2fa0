"""Makes sure the records a config points at exist, building the bundled samples on demand."""

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
                 '--config configs/hg4.py:runlocal --workdir /tmp/okdhp')


def _prepare_bundled(data: ml_collections.ConfigDict) -> None:
  """Builds the bundled records; with several processes, process 0 first.

  Processes that share a filesystem then find the records current and return at once, instead
  of converting into the same folder at the same time; hosts with their own disks build their
  own copy after process 0.
  """
  import jax
  from jax.experimental import multihost_utils
  from data_prep import bundled  # the converters live beside the samples they convert.
  build = bundled.prepare_bundled_coco if data.bundled == 'coco' else bundled.prepare_bundled
  if jax.process_count() == 1:
    build(data.records_dir)
    return
  if jax.process_index() == 0:
    build(data.records_dir)
  multihost_utils.sync_global_devices('okdhp: bundled records built by process 0')
  if jax.process_index() != 0:
    build(data.records_dir)


def ensure_data(config: ml_collections.ConfigDict) -> None:
  """Builds bundled records if asked, else checks that config.data.records_dir holds records.

  Raises:
    FileNotFoundError: naming config.data.records_dir and the data_prep command that fills it.
  """
  data = config.data
  if data.bundled:
    _prepare_bundled(data)
    return
  _check_converted(data)


def _check_converted(data: ml_collections.ConfigDict) -> None:
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
