"""The person record: one tf.train.Example per person (or detection box), both directions.

Every converter (MPII, COCO, synthetic) writes this schema and the tf.data pipeline parses it,
so the layout lives in one place. Keys follow TFDS naming (`image/encoded`, `image/id`, ...).

  image/encoded    bytes   the whole source image, JPEG (progressive ones rewritten as baseline
                           without loss; other formats re-encoded)
  image/filename   bytes   file name relative to the images folder (for messages and drawing)
  image/id         int64   MPII: the file-name digits; COCO: image id; synthetic: figure index
  image/height     int64   source image height in pixels
  image/width      int64   source image width in pixels
  image/restart_layout  int64 [6]  where the JPEG's restart intervals are (zeros: not indexed)
  image/restart_offsets int64 [n]  and where each starts (okdhp_jax/data/jpeg_window.py)
  person/index     int64   MPII: column in gt_valid.mat; COCO: annotation id (GT) or the
                           detection's position in the detection json; synthetic: figure index
  person/center    float   [2] (x, y) in 0-based image pixels, final (MPII adjustments applied)
  person/scale     float   [2] (sw, sh) in units of 200 px, final (padding applied)
  person/joints    float   [J * 2] (x, y) in 0-based image pixels, row-major [J, 2]
  person/joints_vis float  [J] 1 annotated/visible, 0 otherwise
  person/box       float   [4] (x, y, w, h) in image pixels
  person/score     float   box score (1 for ground truth)
  person/area      float   COCO segment area; else box area

Files are named `{split}-{i:05d}-of-{n:05d}.tfrecord` (the TFDS shard suffix convention) and a
`dataset_info.json` beside them holds the split sizes and per-shard lengths.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os

import numpy as np

from okdhp_jax.data import jpeg_window
from okdhp_jax.data.tf_host import tf

DATASET_INFO = 'dataset_info.json'
# dataset_info.json key, true when some people's left and right are told apart only by colour
# (data_prep.synthetic figures): a horizontal flip would then give them wrong labels.
SIDES_BY_COLOUR = 'sides_by_colour'
# dataset_info.json key: parts of the valid split scored apart, as a list of
# {'name', 'person_index': [first, stop), 'in_training_set'}; the first one ranks the branches.
# The bundled quick-start data uses it to keep held-out figures apart from real people it
# also trains on.
EVAL_GROUPS = 'eval_groups'
# dataset_info.json key: one line saying what the data is, printed when training starts.
DESCRIPTION = 'description'
# dataset_info.json key: split -> how many progressive source JPEGs the converter stored as
# lossless baseline rewrites (data_prep/jpeg_baseline.py).
BASELINE_REWRITES = 'progressive_jpegs_stored_as_baseline'
# dataset_info.json key: split -> how many photos are stored with restart markers, so that a
# crop decodes only its region (data_prep/jpeg_restart.py).
RESTART_MARKERS = 'photos_with_restart_markers'


@dataclasses.dataclass
class PersonExample:
  """One record before serialisation (numpy side, used by the converters)."""

  image_bytes: bytes
  image_filename: str
  image_id: int
  image_height: int
  image_width: int
  person_index: int
  center: np.ndarray        # [2]
  scale: np.ndarray         # [2]
  joints: np.ndarray        # [J, 2]
  joints_vis: np.ndarray    # [J]
  box: np.ndarray           # [4] xywh
  score: float = 1.0
  area: float = 0.0


def _bytes(values):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _ints(values):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _floats(values):
  values = np.asarray(values, np.float32).reshape(-1)
  return tf.train.Feature(float_list=tf.train.FloatList(value=values.tolist()))


def serialize(example: PersonExample) -> bytes:
  """PersonExample -> serialised tf.train.Example."""
  feature = {
      'image/encoded': _bytes([example.image_bytes]),
      'image/filename': _bytes([example.image_filename.encode('utf-8')]),
      'image/id': _ints([example.image_id]),
      'image/height': _ints([example.image_height]),
      'image/width': _ints([example.image_width]),
      'person/index': _ints([example.person_index]),
      'person/center': _floats(example.center),
      'person/scale': _floats(example.scale),
      'person/joints': _floats(example.joints),
      'person/joints_vis': _floats(example.joints_vis),
      'person/box': _floats(example.box),
      'person/score': _floats([example.score]),
      'person/area': _floats([example.area]),
  }
  # JPEGs the converters rewrote with restart markers (data_prep/jpeg_restart.py) are indexed
  # from their bytes here, so the index always matches the image.
  index = jpeg_window.restart_index(example.image_bytes)
  if index is not None:
    feature['image/restart_layout'] = _ints(index[0])
    feature['image/restart_offsets'] = _ints(index[1])
  # Deterministic: the feature map's keys in sorted order. Otherwise protobuf writes them in an
  # order that changes from process to process, and two conversions of the same data give
  # records with the same content but different bytes (and checksums).
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(
      deterministic=True)


def feature_spec(num_joints: int) -> dict:
  """The parsing spec for `tf.io.parse_single_example` (an image without a restart index
  parses with a zero layout and no offsets)."""
  f = tf.io.FixedLenFeature
  return {
      'image/restart_layout': f([jpeg_window.LAYOUT_SIZE], tf.int64,
                                default_value=[0] * jpeg_window.LAYOUT_SIZE),
      'image/restart_offsets': tf.io.RaggedFeature(tf.int64),
      'image/encoded': f([], tf.string),
      'image/filename': f([], tf.string, default_value=''),
      'image/id': f([], tf.int64),
      'image/height': f([], tf.int64),
      'image/width': f([], tf.int64),
      'person/index': f([], tf.int64, default_value=-1),
      'person/center': f([2], tf.float32),
      'person/scale': f([2], tf.float32),
      'person/joints': f([num_joints * 2], tf.float32),
      'person/joints_vis': f([num_joints], tf.float32),
      'person/box': f([4], tf.float32),
      'person/score': f([], tf.float32, default_value=1.0),
      'person/area': f([], tf.float32, default_value=0.0),
  }


def parse(serialized: tf.Tensor, num_joints: int) -> dict[str, tf.Tensor]:
  """Serialised example -> dict of tensors; 'person/joints' reshaped to [J, 2]."""
  parsed = tf.io.parse_single_example(serialized, feature_spec(num_joints))
  parsed['person/joints'] = tf.reshape(parsed['person/joints'], [num_joints, 2])
  return parsed


def shard_name(split: str, index: int, count: int) -> str:
  return f'{split}-{index:05d}-of-{count:05d}.tfrecord'


def read_dataset_info(records_dir: str) -> dict:
  """Loads DIR/dataset_info.json; FileNotFoundError says how to create it."""
  path = os.path.join(records_dir, DATASET_INFO)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'no {DATASET_INFO} in config.data.records_dir={records_dir!r}: the records are missing '
        'or their conversion did not finish. Create them with `python -m data_prep.mpii`, '
        '`python -m data_prep.coco` or `python -m data_prep.synthetic` (see data_prep/README.md).'
    )
  with open(path) as f:
    return json.load(f)


def split_files(records_dir: str, split: str) -> list[str]:
  """The shard files of a split in order, checked against dataset_info.json."""
  info = read_dataset_info(records_dir)
  if split not in info.get('splits', {}):
    raise ValueError(
        f'split {split!r} is not in {os.path.join(records_dir, DATASET_INFO)}; it has '
        f'{sorted(info.get("splits", {}))}'
    )
  files = sorted(glob.glob(os.path.join(records_dir, f'{split}-*-of-*.tfrecord')))
  expected = len(info.get('shard_lengths', {}).get(split, ()))
  if len(files) != expected:
    raise ValueError(
        f'{records_dir!r} holds {len(files)} {split} shards but {DATASET_INFO} lists {expected}; '
        're-run the converter.'
    )
  return files
