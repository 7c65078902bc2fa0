"""launch/gpu_benchmark.sh and its report: the steps in priority order, the budget that skips
what does not fit and stops what runs over, the report from a results folder and the README
region it replaces, the TensorFlow stand-in a lent GPU needs, PyTorch in channels_last."""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import stat
import subprocess
import sys

import pytest

from main_runs import ROOT, clean_env
from okdhp_jax.tools import gpu_program, gpu_report

SCRIPT = os.path.join(ROOT, 'launch', 'gpu_benchmark.sh')
# The okdhp_b64_convs row's config: OKDHP-HG4 without its GPU choices.
CONVS = 'configs/hg4.py:fuse_branches=never,pointwise_matmul=never,remat=never,flat_state=never'
ORDER = ['okdhp_b64', 'okdhp_b64_convs', 'okdhp_b64_flags', 'hg4_b64', 'okdhp_b128',
         'profile', 'torch_bf16', 'torch_f32', 'program', 'okdhp_b64_keep']


def benchmark(*args: str, env=None, timeout=60) -> subprocess.CompletedProcess:
  return subprocess.run(['bash', SCRIPT, *args], capture_output=True, text=True, cwd=ROOT,
                        env=env or clean_env(), timeout=timeout)


def step_lines(stdout: str) -> list[str]:
  return [line for line in stdout.splitlines() if line.startswith('step ')]


def commands(stdout: str, prefix: str = '+ ') -> list[list[str]]:
  return [shlex.split(line[len(prefix):].partition(' > ')[0]) for line in stdout.splitlines()
          if line.startswith(prefix)]


def _executable(path: pathlib.Path, text: str) -> None:
  path.write_text(text)
  path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_the_dry_run_lists_the_steps_in_priority_order(tmp_path):
  marker = tmp_path / 'ran'
  fake = tmp_path / 'python'
  _executable(fake, f'#!/bin/sh\necho "$*" >> {marker}\n')
  result = benchmark('--dry-run', '--budget', '5000', '--python', str(fake), '--out',
                     str(tmp_path / 'results'))
  assert result.returncode == 0, result.stderr
  assert [line.split()[2].rstrip(':') for line in step_lines(result.stdout)] == ORDER
  assert 'skipped' not in result.stdout
  bench = [argv for argv in commands(result.stdout) if 'okdhp_jax.tools.bench_step' in argv]
  asked = [(argv[1], argv[argv.index('--config') + 1], argv[argv.index('--batch') + 1],
            '--profile' in argv) for argv in bench]
  assert asked == [
      ('XLA_FLAGS=', 'configs/hg4.py', '64', False),
      ('XLA_FLAGS=', CONVS, '64', False),
      ('XLA_FLAGS=--xla_gpu_graph_min_graph_size=1', 'configs/hg4.py', '64', False),
      ('XLA_FLAGS=', 'configs/hg4_baseline.py', '64', False),
      ('XLA_FLAGS=', 'configs/hg4.py', '128', False),
      ('XLA_FLAGS=--xla_enable_command_buffers_during_profiling=true', 'configs/hg4.py', '64',
       True),
      ('XLA_FLAGS=', 'configs/hg4.py:remat=never', '64', False)]
  assert all(argv[argv.index('--dtype') + 1] == 'bfloat16' for argv in bench)
  assert all(argv[argv.index('--results') + 1] == str(tmp_path / 'results' / 'rows.jsonl')
             for argv in bench)
  torch = [argv for argv in commands(result.stdout) if 'okdhp_jax.tools.bench_torch' in argv]
  assert [(argv[argv.index('--dtype') + 1], '--channels-last' in argv, argv[argv.index(
      '--device') + 1]) for argv in torch] == [('bfloat16', True, 'cuda'), ('float32', False,
                                                                              'cuda')]
  program = [argv for argv in commands(result.stdout) if 'okdhp_jax.tools.gpu_program' in argv]
  assert len(program) == 1 and program[0][program[0].index('--gpu') + 1] == 'local'
  assert commands(result.stdout)[-1][1:] == ['-m', 'okdhp_jax.tools.gpu_report',
                                             str(tmp_path / 'results')]
  assert not marker.exists() and not (tmp_path / 'results').exists()  # nothing ran


def test_a_small_budget_skips_the_steps_that_do_not_fit():
  # 300 s less the reserve and the machine's first look: 260 s; the first row's 200 s fits,
  # then nothing else does (each skipped step's commands are shown commented out).
  result = benchmark('--dry-run', '--budget', '300', '--estimate', 'torch_f32=40')
  assert result.returncode == 0, result.stderr
  lines = step_lines(result.stdout)
  assert lines[0] == 'step 1/10 okdhp_b64: ~200s of 260s left'
  assert lines[1] == 'step 2/10 okdhp_b64_convs: skipped: needs ~200s, 60s left'
  assert lines[7] == 'step 8/10 torch_f32: ~40s of 60s left'  # a later, shorter step still fits
  assert lines[8] == 'step 9/10 program: skipped: needs ~200s, 20s left'
  assert lines[9] == 'step 10/10 okdhp_b64_keep: skipped: needs ~200s, 20s left'
  ran = [argv[argv.index('-m') + 1] for argv in commands(result.stdout) if '-m' in argv]
  assert [module for module in ran if module.startswith('okdhp_jax')] == [
      'okdhp_jax.tools.bench_step', 'okdhp_jax.tools.bench_torch', 'okdhp_jax.tools.gpu_report']
  # 5 bench rows, 3 profile, torch, program
  assert len(commands(result.stdout, prefix='# + ')) == 10


@pytest.mark.parametrize('args, message', [
    (('--budget', 'soon'), '--budget'), (('--only', 'okdhp_b64,nope'), "no step 'nope'"),
    (('--estimate', 'profile=x'), '--estimate profile=x'), (('--bogus',), 'unknown option')])
def test_bad_options_exit_2_naming_them(args, message):
  result = benchmark('--dry-run', *args)
  assert result.returncode == 2 and message in result.stderr, result.stderr


# Stands for python3 in a real run of the script: answers the machine probe, writes a
# bench_step row (sleeping FAKE_SLEEP_<config basename> seconds first), runs the real report.
FAKE_PYTHON = '''#!{python}
import json, os, sys, time
args = sys.argv[1:]
if args[0].endswith('gpu_benchmark_env.py'):
  with open(args[1], 'a') as f:
    f.write(json.dumps({{'env': {{'date': '2026-12-07T10:00:00+00:00',
                                'versions': {{'jax': '0.11.2'}}}}}}) + '\\n')
  sys.exit(0)
if args[0] == '-c' or args[:2] == ['-m', 'pip']:
  sys.exit(0)  # TensorFlow "is installed": no stand-in; carried wheels "installed"
if args[:2] == ['-m', 'okdhp_jax.tools.gpu_report']:
  os.execv({python!r}, [{python!r}, *args])
value = lambda flag: args[args.index(flag) + 1]
config, flags = value('--config'), os.environ.get('XLA_FLAGS', '')
time.sleep(float(os.environ.get('FAKE_SLEEP_' + ('flags' if flags else 'none'), '0')))
row = {{'config': config, 'devices': '1 x NVIDIA H100 80GB HBM3', 'dtype': 'bfloat16',
       'batch': int(value('--batch')), 'img_per_s': 500.0, 'step_ms': 128.0, 'tflops': 100.0,
       'mfu': 0.1, 'first_call_s': 90.0, 'peak_gib': 18.0, 'loss': 1.0, 'profile': None,
       'request': {{'config': config, 'dtype': 'bfloat16', 'batch': int(value('--batch')),
                   'steps': 20, 'warmup': 3, 'profile': False, 'xla_flags': flags}}}}
with open(value('--results'), 'a') as f:
  f.write(json.dumps(row) + '\\n')
'''


def test_a_step_over_the_budget_is_stopped_and_the_rest_skipped(tmp_path):
  """A real run with a stand-in Python: the first row is kept, the second (which hangs) is
  stopped when the budget ends, the rest are skipped, and the report says so."""
  fake = tmp_path / 'python3'
  _executable(fake, FAKE_PYTHON.format(python=sys.executable))
  out = tmp_path / 'results'
  env = dict(clean_env(), FAKE_SLEEP_flags='600')
  # 26 s less the 20 s reserve: 6 s for the steps, each expected to take 2 s.
  estimates = [arg for name in ORDER for arg in ('--estimate', f'{name}=2')]
  result = benchmark('--budget', '26', '--out', str(out), '--python', str(fake), *estimates,
                     env=env)
  assert result.returncode == 0, result.stdout + result.stderr
  statuses = {r['step']: r['status'] for r in gpu_report.read_jsonl(str(out / 'run.jsonl'))
              if 'step' in r}
  assert statuses == dict(okdhp_b64='ran', okdhp_b64_convs='ran', okdhp_b64_flags='timeout',
                          **dict.fromkeys(ORDER[3:], 'skipped'))
  rows = gpu_report.read_jsonl(str(out / 'rows.jsonl'))
  assert [(row['config'], row['request']['xla_flags']) for row in rows] == [
      ('configs/hg4.py', ''), (CONVS, '')]
  log = (out / 'log.txt').read_text()
  assert 'step 4/10 hg4_b64: skipped: needs ~' in log
  assert '| configs/hg4.py | 1 x NVIDIA H100 80GB HBM3 | bfloat16 | 64 | 500.0 |' in result.stdout
  assert 'Not measured: okdhp_b64_flags (timeout: exit 124), hg4_b64 (skipped' in result.stdout


def write_results(folder: pathlib.Path) -> None:
  """A results folder as the script leaves it: two rows and a profiled one, PyTorch's rows,
  the GPU's own program counts; one step skipped."""
  folder.mkdir()
  env = {'date': '2026-12-07T10:00:00+00:00', 'versions': {'jax': '0.11.2', 'torch': '2.11.0'}}
  steps = [{'step': name, 'status': 'ran', 'seconds': 100, 'estimate': 200, 'note': ''}
           for name in ('okdhp_b64', 'okdhp_b64_flags', 'profile', 'torch_bf16', 'program')]
  steps.append({'step': 'hg4_b64', 'status': 'skipped', 'seconds': 0, 'estimate': 110,
                'note': 'needs ~110s, 20s left'})
  (folder / 'run.jsonl').write_text('\n'.join(json.dumps(r) for r in [{'env': env}, *steps])
                                    + '\n')

  def row(flags, img_per_s, profile=None):
    return {'config': 'configs/hg4.py', 'devices': '1 x NVIDIA H100 80GB HBM3',
            'dtype': 'bfloat16', 'batch': 64, 'img_per_s': img_per_s,
            'step_ms': 64e3 / img_per_s, 'tflops': 150.0, 'mfu': 0.152, 'first_call_s': 95.5,
            'peak_gib': 18.4, 'loss': 1.0, 'profile': profile,
            'request': {'config': 'configs/hg4.py', 'dtype': 'bfloat16', 'batch': 64,
                        'steps': 20, 'warmup': 3, 'profile': bool(profile), 'xla_flags': flags}}
  summary = {'source': 'the GPU', 'devices': 1, 'steps': 3, 'op_ms': 100.0, 'busy_ms': 90.0,
             'launch_ms': 40.0, 'kinds': [{'kind': 'convolution', 'ms': 44.0, 'share': 0.44,
                                           'ops': 1130, 'largest': 'cudnn-conv'}]}
  rows = [row('', 500.0), row('--xla_gpu_graph_min_graph_size=1', 640.0),
          row('--xla_enable_command_buffers_during_profiling=true', 505.0, summary)]
  # The last line was cut off by a kill: left out.
  (folder / 'rows.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows) + '{"con')
  torch_rows = [{'config': 'configs/hg4.py', 'input': '256x256', 'batch': 64, 'torch_ms': 160.0,
                 'jax_ms': 128.0, 'dtype': 'bfloat16', 'channels_last': True,
                 'torch_device': '1 x NVIDIA H100 80GB HBM3', 'torch_version': '2.11.0'},
                {'config': 'configs/hg4_baseline.py', 'input': '256x256', 'batch': 64,
                 'torch_ms': 80.0, 'dtype': 'float32', 'channels_last': False}]
  (folder / 'torch.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in torch_rows))
  program = dict(gpu_program.hlo_counts(HLO_STUB), config='configs/hg4.py', dtype='bfloat16',
                 batch=64, temp_gib=12.0, argument_gib=0.36, output_gib=0.36, lower_s=5.0,
                 compile_s=60.0, command_buffers=None, thunks_in_command_buffers=None,
                 thunks_outside=None, launches=None)  # no thunk sequence found on the device
  (folder / 'program_local.json').write_text(json.dumps(
      {'gpu': 'local', 'device': 'NVIDIA H100 80GB HBM3', 'xla_flags': '', 'rows': [program]}))


HLO_STUB = '''\
%fused_reduce (p: f32[8]) -> f32[] {
  %p = f32[8]{0} parameter(0)
  ROOT %r = f32[] reduce(%p, %p), dimensions={0}, to_apply=%add
}

ENTRY %main (x: f32[8]) -> f32[] {
  %x = f32[8]{0} parameter(0)
  ROOT %input_reduce_fusion = f32[] fusion(%x), kind=kInput, calls=%fused_reduce
}
'''


def test_the_report_sets_every_result_beside_the_goals(tmp_path):
  write_results(tmp_path / 'results')
  described = tmp_path / 'described.json'
  described_row = dict(json.loads((tmp_path / 'results' / 'program_local.json').read_text())
                       ['rows'][0], command_buffers=583, thunks_in_command_buffers={},
                       thunks_outside={}, launches={'total': 2803, 'graphs': 583,
                                                    'library_calls': 1130, 'kernels': 1090,
                                                    'copies_and_other': 0})
  described.write_text(json.dumps({'gpu': 'h100', 'device': 'NVIDIA H100 80GB HBM3',
                                   'xla_flags': '', 'rows': [described_row]}))
  text = gpu_report.report(gpu_report.load_folder(str(tmp_path / 'results'), str(described)))
  assert text.startswith('On 1 x NVIDIA H100 80GB HBM3 (2026-12-07; jax 0.11.2, torch 2.11.0;')
  assert ('| configs/hg4.py | 1 x NVIDIA H100 80GB HBM3 | bfloat16 | 64 | 500.0 | 128.0 | '
          '150.000 | 15.2% | 95.5 | 18.40 |') in text
  assert '| configs/hg4.py (profiled) | 1 x NVIDIA H100 80GB HBM3 | bfloat16 | 64 | 505.0 |' in text
  assert 'Row 2: XLA_FLAGS=--xla_gpu_graph_min_graph_size=1' in text
  assert 'Not measured: hg4_b64 (skipped: needs ~110s, 20s left).' in text
  assert 'The host spent 40.0 ms of each step launching' in text
  assert '| configs/hg4.py | bfloat16 autocast, channels_last | 64 | 160.0 | 400.0 | 128.0 | 1.25x |' in text
  assert '| configs/hg4_baseline.py | float32 | 64 | 80.0 | 800.0 | not measured |  |' in text
  assert ('| configs/hg4.py bfloat16 b64 | NVIDIA H100 80GB HBM3 (on the GPU) | '
          'NVIDIA H100 80GB HBM3 (described: h100) |') in text
  assert '| host launches per step | n/a | 2,803 |' in text
  assert '| &nbsp;&nbsp;reductions | 1 | 1 |' in text
  # The best row (with the flag) against 930 img/s, and against PyTorch's 160 ms at batch 64.
  assert '- 640.0 img/s (--xla_gpu_graph_min_graph_size=1) against the goal of at least 930 (69% of it).' in text
  assert '- First call 95.5 s against the goal of under 60 s.' in text
  assert '- 1.60x PyTorch under bfloat16 autocast + channels_last (160.0 ms/step)' in text


def test_readme_region_between_the_markers_is_replaced_and_nothing_else(tmp_path, capsys):
  write_results(tmp_path / 'results')
  original = pathlib.Path(ROOT, 'README.md').read_text()
  readme = tmp_path / 'README.md'
  readme.write_text(original)
  gpu_report.main([str(tmp_path / 'results'), '--readme', str(readme)])
  report = capsys.readouterr().out.split('\n\n(written into')[0]
  updated = readme.read_text()
  head, _, rest = original.partition(gpu_report.BEGIN)
  _, _, tail = rest.partition(gpu_report.END)
  assert updated == f'{head}{gpu_report.BEGIN}\n{report.strip()}\n{gpu_report.END}{tail}'
  assert updated.count('| bfloat16 | 64 | 500.0 |') == 1
  # Again: the region is replaced, not added to.
  gpu_report.main([str(tmp_path / 'results'), '--readme', str(readme)])
  assert readme.read_text() == updated

  readme.write_text(original.replace(gpu_report.END, ''))
  with pytest.raises(SystemExit, match='needs one <!-- gpu-table:begin --> line'):
    gpu_report.main([str(tmp_path / 'results'), '--readme', str(readme)])


def test_the_benchmarks_import_without_tensorflow(tmp_path):
  """As on a lent GPU, where TensorFlow is missing: the machine probe imports what bench_step,
  bench_torch and gpu_program measure with, none of which may start TensorFlow."""
  absent = tmp_path / 'absent' / 'tensorflow'
  absent.mkdir(parents=True)
  (absent / '__init__.py').write_text("raise ImportError('TensorFlow is absent in this test')\n")
  record = tmp_path / 'run.jsonl'
  env = dict(clean_env(), PYTHONPATH=str(tmp_path / 'absent'), JAX_PLATFORMS='cpu')
  probe = subprocess.run([sys.executable, 'launch/gpu_benchmark_env.py', str(record)], cwd=ROOT,
                         capture_output=True, text=True, env=env, timeout=120)
  assert probe.returncode == 0, probe.stderr[-2000:]
  machine = json.loads(record.read_text())['env']
  assert machine['tensorflow'] is None and 'missing' not in machine


def test_pytorch_runs_channels_last_and_keeps_rows_as_json(tmp_path, capsys):
  torch = pytest.importorskip('torch')
  from okdhp_jax.tools import bench_torch  # pylint: disable=g-import-not-at-top
  config = tmp_path / 'tiny.py'
  config.write_text('''
from configs import default
def get_config(arg=None):
  config = default.get_config()
  config.model.hourglass.update(features=16, depth=1, num_shared_stacks=1, branch_stacks=(1, 1))
  config.model.fau_hidden = 4
  config.data.input_size = (32, 32)
  config.data.heatmap_size = (8, 8)
  return config
''')
  from okdhp_jax.tools.config_file import load_config  # pylint: disable=g-import-not-at-top
  net, step = bench_torch.torch_train_step(load_config(str(config)), 2, channels_last=True)
  step()
  weight = net.convs[1][0].weight
  assert weight.is_contiguous(memory_format=torch.channels_last) and weight.grad is not None

  rows = tmp_path / 'torch.jsonl'
  bench_torch.main(['--config', str(config), '--batch', '2', '--steps', '1', '--warmup', '0',
                    '--device', 'cpu', '--channels-last', '--torch-only', '--json', str(rows)])
  out = capsys.readouterr().out
  assert 'float32, channels_last train step' in out and '| not measured |' in out
  row = json.loads(rows.read_text())
  assert (row['config'], row['dtype'], row['channels_last'], row['batch']) == (
      str(config), 'float32', True, 2)
  assert row['torch_ms'] > 0 and 'jax_ms' not in row
