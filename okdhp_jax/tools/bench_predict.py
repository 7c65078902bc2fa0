r"""Inference speed of deployed students through the Python API: per-person latency, people/s.

  python -m okdhp_jax.tools.bench_predict                       # HG4 and MobilePose, batch 1, 32
  python -m okdhp_jax.tools.bench_predict --config configs/hg8.py --batch 8 --calls 5

One row per config x batch. The network is the student an export of that config deploys (one
branch: a plain 4-stack hourglass for configs/hg4.py, a one-decoder ResNet18 MobilePose for
configs/mobilepose_resnet18.py) with random weights: speed does not depend on their values. It
runs as `PosePredictor` runs an export (flip test on, compute dtype 'auto': float32 on a CPU).

Columns: 'compile s' is the predictor's one compile (ahead of time; neither it nor a first
untimed call of each kind is in the other columns). 'network ms' is one device call of `batch`
crops (`PosePredictor.heatmaps`); 'predict ms' one `predict` call with `batch` boxes on a
bundled 640x425 photo: reading and cropping on the host, the network, decoding. 'ms/person'
and 'people/s' are of `predict`. Every time is a mean over --calls calls that end on
`block_until_ready` (or, for predict, on decoded NumPy joints).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

DEFAULT_CONFIGS = ('configs/hg4.py', 'configs/mobilepose_resnet18.py')
SAMPLE_IMAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), 'data_prep', 'samples', 'coco', '000000000785.jpg')
SAMPLE_BOX = (280.0, 45.0, 225.0, 333.0)  # the person on it
COLUMNS = ('model', 'input', 'batch', 'compile s', 'network ms', 'predict ms', 'ms/person',
           'people/s')


def student(config_spec: str):
  """(name, deployed model config as a dict, input size, dataset meta) of a training config."""
  from okdhp_jax.data.meta import get_meta
  from okdhp_jax.models import deployed_model_config, get_spec
  from okdhp_jax.tools.config_file import load_config
  config = load_config(config_spec)
  model_config = deployed_model_config(config.model, 0)
  name = f'{get_spec(model_config["name"]).describe(model_config)} student'
  return name, model_config, tuple(config.data.input_size), get_meta(config.data.dataset)


def timed(fn, calls: int) -> float:
  """Mean seconds per call of fn() (which must block until its result is ready)."""
  start = time.perf_counter()
  for _ in range(calls):
    fn()
  return (time.perf_counter() - start) / calls


def measure(config_spec: str, batch_size: int, *, calls: int, flip_test: bool) -> dict:
  import jax
  import ml_collections

  from okdhp_jax.inference import PosePredictor
  from okdhp_jax.models import build_model
  from okdhp_jax.models.initializers import init_variables

  name, model_config, input_size, meta = student(config_spec)
  model = build_model(ml_collections.ConfigDict(model_config), meta.num_joints, input_size)
  variables = init_variables(model, jax.random.key(0), (1, *input_size, 3))
  predictor = PosePredictor(model, variables, meta, input_size, flip_test=flip_test,
                            batch_size=batch_size)
  crops = np.random.default_rng(0).integers(0, 256, (batch_size, *input_size, 3), np.uint8)
  boxes = np.tile(SAMPLE_BOX, (batch_size, 1))

  def network():
    jax.block_until_ready(predictor.heatmaps(crops))

  def predict():
    predictor.predict(SAMPLE_IMAGE, boxes)  # returns NumPy joints: nothing left in flight.

  compile_s = predictor.compile()
  network()  # the first run of an executable pays for allocations: not timed.
  predict()  # nor TensorFlow's tracing of the crop function.
  network_s = timed(network, calls)
  predict_s = timed(predict, calls)
  return {'model': name, 'input': 'x'.join(str(s) for s in input_size), 'batch': batch_size,
          'compile s': f'{compile_s:.1f}', 'network ms': f'{network_s * 1e3:.1f}',
          'predict ms': f'{predict_s * 1e3:.1f}',
          'ms/person': f'{predict_s * 1e3 / batch_size:.1f}',
          'people/s': f'{batch_size / predict_s:.1f}'}


def format_rows(rows: list[dict]) -> str:
  lines = ['| ' + ' | '.join(COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]
  lines += ['| ' + ' | '.join(str(row[c]) for c in COLUMNS) + ' |' for row in rows]
  return '\n'.join(lines)


def machine() -> str:
  import jax
  devices = jax.devices()
  return (f'{len(devices)} x {devices[0].device_kind} ({jax.default_backend()}), '
          f'{os.cpu_count()} CPU cores, jax {jax.__version__}')


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', action='append', default=[],
                      help=f'training config whose student to time (repeatable; default: '
                           f'{", ".join(DEFAULT_CONFIGS)})')
  parser.add_argument('--batch', action='append', type=int, default=[],
                      help='people per device call (repeatable; default: 1 and 32)')
  parser.add_argument('--calls', type=int, default=5, help='timed calls per column and row')
  parser.add_argument('--no-flip-test', '--no_flip_test', dest='flip_test',
                      action='store_false', help='one pass per person, without the mirror')
  args = parser.parse_args(argv)
  configs = args.config or list(DEFAULT_CONFIGS)
  for spec in configs:
    if not os.path.exists(spec.partition(':')[0]):
      parser.error(f'--config file {spec.partition(":")[0]} does not exist')
  rows = []
  for spec in configs:
    for batch in args.batch or [1, 32]:
      print(f'{spec} batch {batch} ...', file=sys.stderr, flush=True)
      rows.append(measure(spec, batch, calls=args.calls, flip_test=args.flip_test))
  print(f'{machine()}; flip test {"on" if args.flip_test else "off"}; mean of {args.calls} '
        'calls after the first')
  print(format_rows(rows), flush=True)


if __name__ == '__main__':
  main()
