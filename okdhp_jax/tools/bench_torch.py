r"""The JAX train step against PyTorch eager on the same device, same network, same losses.

  python -m okdhp_jax.tools.bench_torch                      # HG4 and OKDHP-HG4, batch 4
  python -m okdhp_jax.tools.bench_torch --config configs/hg2_baseline.py --batch 8 --steps 5
  # On a GPU: JAX's times from a bench_step sweep's --results file, PyTorch's measured here.
  python -m okdhp_jax.tools.bench_torch --batch 32 --dtype bfloat16 --jax-results rows.jsonl
  # PyTorch alone, in bfloat16 autocast with channels_last, each row kept as a JSON line.
  python -m okdhp_jax.tools.bench_torch --device cuda --batch 64 --dtype bfloat16 \
      --channels-last --torch-only --jax-results rows.jsonl --json torch.jsonl

For each config, one row: PyTorch's ms per step, JAX's (bench_step's row in a fresh process,
or its row in --jax-results) and JAX's speed relative to PyTorch (above 1: JAX is faster).
Needs PyTorch (pip install -e '.[torch]'); the networks are
okdhp_jax/models/torch_reference.py, which the weight-import tests hold to the JAX models
output for output.

The PyTorch step does the work of ours: forward in training mode, then the method's loss as
okdhp_jax/methods/okdhp.py defines it (MSE on every stack; for OKDHP also the ensemble's MSE
and the pixel-wise KL from the ensemble to every stack at the full KD weight, the teacher not
detached, so the FAU is trained), backward and an Adam update, on random images and target
heatmaps. Our step also renders its target heatmaps from joints, which is small. Only
hourglass configs with the released FAU (or none) have a PyTorch twin here.

PyTorch runs in this process, after the JAX row's process has finished: on a CPU with one
thread per core this process may use; on a CUDA GPU as the released code trains (float32,
NCHW, `cudnn.benchmark`). `--dtype bfloat16` computes JAX's step in bfloat16 and runs
PyTorch's forward and loss under `torch.autocast` in bfloat16, PyTorch's mixed precision;
`--channels-last` stores the network's weights and the images NHWC (torch.channels_last), the
layout cuDNN's tensor-core convolutions prefer. Both are timed after warm-up steps, a GPU's
from an idle device to an idle device. `--torch-only` never runs JAX: its column comes from
--jax-results where that has the row, else it says 'not measured'. `--json FILE` appends each
row, with its precision and device, to FILE as one JSON line as soon as it is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

DEFAULT_CONFIGS = ('configs/hg4_baseline.py', 'configs/hg4.py')


def is_plain(model_config) -> bool:
  """config.model has a PyTorch twin (ValueError naming the key if not); True for a plain
  hourglass, False for a multi-branch network with the released FAU."""
  if model_config.name != 'hourglass':
    raise ValueError(f'config.model.name={model_config.name!r}: only hourglass networks have a '
                     f'PyTorch twin here')
  hourglass = model_config.hourglass
  if (len(hourglass.branch_stacks) == 1 and hourglass.num_shared_stacks == 0
      and model_config.fau == 'none'):
    return True
  if model_config.fau != 'released':
    raise ValueError(f'config.model.fau={model_config.fau!r}: the PyTorch twin of a '
                     f"multi-branch network has the released FAU only (set 'released')")
  return False


def torch_network(model_config, num_joints: int):
  """(network, is_multi_branch) of okdhp_jax/models/torch_reference.py for config.model."""
  from okdhp_jax.models import torch_reference
  plain = is_plain(model_config)
  hourglass = model_config.hourglass
  stacks = tuple(hourglass.branch_stacks)
  if plain:
    return torch_reference.HourglassNet(stacks[0], hourglass.features, num_joints,
                                        hourglass.depth), False
  return torch_reference.OKDHPNet(hourglass.num_shared_stacks, stacks, hourglass.features,
                                  num_joints, hourglass.depth, model_config.fau_hidden), True


def torch_train_step(config, batch_size: int, *, device: str = 'cpu',
                     dtype: str = 'float32', channels_last: bool = False):
  """(network, step): `step()` runs one PyTorch eager train step of config's network on fixed
  random inputs on `device` (see the module doc); dtype 'bfloat16' autocasts its forward, and
  `channels_last` keeps the weights and images NHWC in memory."""
  import torch
  from torch.nn import functional as F
  from okdhp_jax.data.meta import get_meta

  torch.manual_seed(config.seed)
  num_joints = get_meta(config.data.dataset).num_joints
  net, multi_branch = torch_network(config.model, num_joints)
  net.to(device).train()
  optimizer = torch.optim.Adam(net.parameters(), lr=config.optim.learning_rate)
  height, width = config.data.input_size
  heat_h, heat_w = config.data.heatmap_size
  images = torch.randn(batch_size, 3, height, width, device=device)
  if channels_last:
    net.to(memory_format=torch.channels_last)
    images = images.contiguous(memory_format=torch.channels_last)
  target = torch.rand(batch_size, num_joints, heat_h, heat_w, device=device)
  loss_config = config.loss
  temperature = loss_config.kd_temperature
  autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16,
                            enabled=dtype == 'bfloat16')

  def log_p(heatmaps):  # [b, j, h, w] -> per joint, a log-distribution over the pixels
    return F.log_softmax(heatmaps.flatten(2) / temperature, dim=-1)

  def step():
    optimizer.zero_grad(set_to_none=True)
    with autocast:
      out = net(images)
      stacks = out[0] if multi_branch else out
      loss = sum(F.mse_loss(h, target) * 0.5 for h in stacks)
      if multi_branch:
        ensemble = out[2]
        loss = loss + loss_config.ensemble_weight * 0.5 * F.mse_loss(ensemble, target)
        if loss_config.kd_weight:
          teacher = log_p(ensemble)
          kl = sum((teacher.exp() * (teacher - log_p(h))).sum(-1).mean() for h in stacks)
          loss = loss + loss_config.kd_weight * kl
    loss.backward()
    optimizer.step()

  return net, step


def torch_step_ms(config, batch_size: int, *, steps: int, warmup: int, device: str = 'cpu',
                  dtype: str = 'float32', channels_last: bool = False) -> float:
  """Milliseconds per PyTorch eager train step of config's network, after `warmup` steps."""
  import torch
  _, step = torch_train_step(config, batch_size, device=device, dtype=dtype,
                             channels_last=channels_last)
  # A GPU runs the steps asynchronously: time from an idle device to an idle device.
  sync = torch.cuda.synchronize if torch.device(device).type == 'cuda' else lambda: None
  for _ in range(warmup):
    step()
  sync()
  start = time.perf_counter()
  for _ in range(steps):
    step()
  sync()
  return (time.perf_counter() - start) / steps * 1e3


def jax_row_from_results(path: str, config_spec: str, dtype: str, batch: int) -> dict | None:
  """bench_step's row in its --results file `path` for this config, compute dtype and global
  batch under the current XLA_FLAGS (the most timed steps if several), or None."""
  from okdhp_jax.tools import bench_step
  flags = os.environ.get('XLA_FLAGS', '').strip()
  rows = [row for row in bench_step.load_results(path).values()
          if row['request']['config'] == config_spec and row.get('dtype') == dtype
          and row.get('batch') == batch and row['request']['xla_flags'] == flags]
  return max(rows, key=lambda row: row['request']['steps'], default=None)


def format_table(rows: list[dict]) -> str:
  lines = ['| config | input | global batch | PyTorch ms/step | JAX ms/step | JAX speed / '
           'PyTorch |', '|---|---|---:|---:|---:|---:|']
  for row in rows:
    jax_ms = row.get('jax_ms')
    if jax_ms:
      jax_cell = f'{jax_ms:.0f}'
    else:
      jax_cell = f'failed: {row["jax_error"]}' if 'jax_error' in row else 'not measured'
    cells = [row['config'], row['input'], str(row['batch']), f'{row["torch_ms"]:.0f}',
             jax_cell, f'{row["torch_ms"] / jax_ms:.2f}x' if jax_ms else '']
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', action='append', default=[],
                      help=f'config file[:arg], repeatable (default: {", ".join(DEFAULT_CONFIGS)})')
  parser.add_argument('--batch', type=int, default=4, help='global batch')
  parser.add_argument('--steps', type=int, default=3, help='timed steps per row')
  parser.add_argument('--warmup', type=int, default=1, help='untimed steps first')
  parser.add_argument('--dtype', choices=('float32', 'bfloat16'), default='float32',
                      help="JAX's compute dtype; PyTorch autocasts to bfloat16 for bfloat16")
  parser.add_argument('--device', choices=('auto', 'cpu', 'cuda'), default='auto',
                      help="PyTorch's device (auto: CUDA when PyTorch sees a GPU)")
  parser.add_argument('--channels-last', '--channels_last', action='store_true',
                      help="PyTorch's weights and images in channels_last (NHWC) memory")
  parser.add_argument('--torch-only', '--torch_only', action='store_true',
                      help='never run JAX: take its time from --jax-results where that has the '
                           "row, else leave it 'not measured'")
  parser.add_argument('--json', default='', metavar='FILE',
                      help='append each row to FILE as a JSON line as soon as it is measured')
  parser.add_argument('--jax-results', default='', metavar='FILE',
                      help="take JAX's step time from this bench_step --results file when it "
                           'has the row (same config, dtype, batch and XLA_FLAGS)')
  args = parser.parse_args(argv)
  for name in ('batch', 'steps'):
    if getattr(args, name) < 1:
      parser.error(f'--{name} must be >= 1, got {getattr(args, name)}')
  if args.jax_results and not os.path.isfile(args.jax_results):
    parser.error(f'--jax-results {args.jax_results} is not a file')
  if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
    parser.error(f'--json {args.json}: its folder does not exist')
  try:
    import torch
  except ImportError:
    sys.exit("bench_torch: error: PyTorch is not installed (pip install -e '.[torch]')")
  from okdhp_jax.tools import bench_step
  from okdhp_jax.tools.config_file import load_config

  device = args.device
  if device == 'auto':
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
  if device == 'cuda':
    if not torch.cuda.is_available():
      sys.exit('bench_torch: error: --device cuda, but PyTorch sees no CUDA GPU')
    torch.backends.cudnn.benchmark = True  # as the released code's config sets it
    torch_device = f'1 x {torch.cuda.get_device_name()}'
  else:
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    torch_device = f'{torch.get_num_threads()} CPU threads'
  rows, jax_devices = [], set()
  for spec in args.config or list(DEFAULT_CONFIGS):
    config = load_config(spec)
    try:
      is_plain(config.model)  # refuse a config without a twin before timing anything
    except ValueError as error:
      sys.exit(f'bench_torch: error: {spec}: {error}')
    jax_row = (jax_row_from_results(args.jax_results, spec, args.dtype, args.batch)
               if args.jax_results else None)
    if jax_row is None and not args.torch_only:
      print(f'{spec}: JAX ...', flush=True)
      options = argparse.Namespace(steps=args.steps, warmup=args.warmup, profile='')
      jax_row = bench_step.measure_in_child(options, spec, args.dtype, args.batch)
    elif jax_row is not None:
      print(f'{spec}: JAX from {args.jax_results}', flush=True)
    print(f'{spec}: PyTorch ({torch_device}) ...', flush=True)
    row = {'config': spec, 'batch': args.batch,
           'input': 'x'.join(str(s) for s in config.data.input_size),
           'torch_ms': torch_step_ms(config, args.batch, steps=args.steps,
                                     warmup=args.warmup, device=device, dtype=args.dtype,
                                     channels_last=args.channels_last)}
    # No JAX row (--torch-only, none in --jax-results): the table says 'not measured'.
    if jax_row is not None and 'error' in jax_row:
      row['jax_error'] = jax_row['error']
    elif jax_row is not None:
      row['jax_ms'] = jax_row['step_ms']
      jax_devices.add(jax_row['devices'])
    rows.append(row)
    if args.json:
      _append_json(args.json, dict(
          row, dtype=args.dtype, channels_last=args.channels_last, steps=args.steps,
          warmup=args.warmup, torch_device=torch_device, torch_version=torch.__version__,
          jax_devices=None if jax_row is None else jax_row.get('devices')))
  precision = ('float32' if args.dtype == 'float32'
               else 'bfloat16 (PyTorch: torch.autocast)')
  if args.channels_last:
    precision += ', channels_last'
  print(f'\n{precision} train step: PyTorch {torch.__version__} eager on {torch_device}, '
        f'{args.steps} timed steps after {args.warmup} warm-up, against JAX (bench_step) on '
        f'{", ".join(sorted(jax_devices)) or "no device"}')
  print(format_table(rows))


def _append_json(path: str, row: dict) -> None:
  """One measured row as a JSON line, written and flushed at once (a later kill keeps it)."""
  with open(path, 'a', encoding='utf-8') as f:
    f.write(json.dumps(row) + '\n')
    f.flush()
    os.fsync(f.fileno())


if __name__ == '__main__':
  main()
