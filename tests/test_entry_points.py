"""The fast tier's share of the entry points: main's helpers, the compile cache, the predict
tool's input checks, the pipeline benchmark and the curve plot (the full runs are `slow`)."""

from __future__ import annotations

import json
import logging
import os

import jax
import pytest
from absl import app

from data_prep import bench, bundled
from okdhp_jax import compile_cache, console, main
from okdhp_jax.tools import predict
from okdhp_jax.experiment import curves
from okdhp_jax.experiment.run_progress import RunProgress

SAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data_prep',
                       'samples')


def test_multi_host_launch_is_told_from_the_environment(monkeypatch):
  for key in ('JAX_COORDINATOR_ADDRESS', 'SLURM_NTASKS', 'TPU_WORKER_HOSTNAMES',
              'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID'):
    monkeypatch.delenv(key, raising=False)
  assert not main._is_multi_host_launch() and main._distributed_args() == {}
  monkeypatch.setenv('SLURM_NTASKS', '4')
  assert main._is_multi_host_launch()
  monkeypatch.setenv('JAX_NUM_PROCESSES', '2')
  monkeypatch.setenv('JAX_PROCESS_ID', '1')
  assert main._distributed_args() == {'num_processes': 2, 'process_id': 1}
  monkeypatch.setenv('JAX_PROCESS_ID', 'one')
  with pytest.raises(app.UsageError, match="JAX_PROCESS_ID='one'"):
    main._distributed_args()


def test_console_keeps_orbax_file_lines_off():
  def record(path, level, message):
    return logging.LogRecord('x', level, path, 1, message, None, None)
  orbax = os.path.join('site-packages', 'orbax', 'checkpoint', 'x.py')
  assert not console.console_filter(record(orbax, logging.INFO, 'wrote file'))
  assert not console.console_filter(record(orbax, logging.WARNING, 'Waiting for previous save'))
  assert console.console_filter(record(orbax, logging.WARNING, 'something else'))
  # Background-thread errors (one per thread when a disk fills) go to a file, not the console.
  assert not console.console_filter(record(orbax, logging.ERROR, 'disk full'))
  assert console.console_filter(record('train_loop.py', logging.INFO, 'step 10/99'))
  assert console.console_filter(record('train_loop.py', logging.ERROR, 'bad'))
  from_asyncio = record('base_events.py', logging.ERROR, 'exception was never retrieved')
  from_asyncio.name = 'asyncio'
  assert not console.console_filter(from_asyncio)


def test_compile_cache_on_by_default_off_with_one_switch(tmp_path, monkeypatch):
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', str(tmp_path / 'jax_says'))
  assert compile_cache.default_dir() == str(tmp_path / 'jax_says')  # JAX's variable first.
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR')
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
  assert compile_cache.default_dir() == str(tmp_path / 'xdg' / 'okdhp_jax' /
                                            'jax_compilation_cache')
  from configs import default
  config = default.get_config()
  assert config.compile_cache.enabled and config.compile_cache.dir == ''
  config.compile_cache.enabled = False
  assert compile_cache.enable(config.compile_cache) is None
  before = jax.config.jax_compilation_cache_dir
  config.compile_cache.update(enabled=True, dir=str(tmp_path / 'cache'))
  try:
    assert compile_cache.enable(config.compile_cache) == str(tmp_path / 'cache')
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / 'cache')
  finally:
    jax.config.update('jax_compilation_cache_dir', before)


def test_predict_checks_its_inputs(tmp_path):
  assert predict.parse_box('10,20,30,40') == (10.0, 20.0, 30.0, 40.0)
  with pytest.raises(ValueError, match='four numbers'):
    predict.parse_box('10,20,30')
  with pytest.raises(ValueError, match='positive width'):
    predict.parse_box('10,20,0,40')
  image = os.path.join(SAMPLES, 'mpii', '004645041.jpg')
  data, pixels = predict.read_jpeg(image)
  assert data[:2] == b'\xff\xd8' and pixels.ndim == 3 and pixels.shape[2] == 3
  (tmp_path / 'notes.txt').write_text('not an image')
  with pytest.raises(ValueError, match='not a readable image'):
    predict.read_jpeg(str(tmp_path / 'notes.txt'))
  with pytest.raises(FileNotFoundError, match='does not exist'):
    predict.read_jpeg(str(tmp_path / 'missing.jpg'))


def test_pipeline_benchmark_builds_full_size_records_and_splits_the_time(tmp_path, capsys):
  from okdhp_jax.data import records
  folders = bench.build_realistic_records(str(tmp_path), people=10)
  assert [os.path.basename(f) for f in folders] == ['mpii_10', 'coco_10']
  for folder in folders:
    assert records.read_dataset_info(folder)['splits']['train'] == 10
  row = bench.measure(folders[0], input_size=(64, 64), batch_size=4, seconds=0.3,
                      one_core=True, resume_step=7)
  assert row['crops_per_s'] > 0 and set(row['ms']) == set(bench.STAGES) and row['resume_s'] > 0
  row.update(name='mpii_10', one_core=True)
  bench.print_table([row], cores=2)
  assert '| mpii_10 | 64x64 | 1 |' in capsys.readouterr().out


def test_training_curves_png(tmp_path):
  progress = RunProgress.from_json(
      {'train_loss': [[10, 0.5], [20, 0.25]],
       'history': [{'step': 10, 'metrics': {'branch_0': {'Mean': 40.0},
                                             'ensemble': {'Mean': 45.0}}},
                   {'step': 20, 'metrics': {'branch_0': {'Mean': 60.0},
                                             'ensemble': {'Mean': 65.0}}}]})
  path = curves.plot_training_curves(progress, 'Mean', str(tmp_path / 'curves.png'))
  from PIL import Image
  assert Image.open(path).size[0] > 0


def test_errors_leave_their_traceback_in_the_workdir(tmp_path):
  try:
    raise RuntimeError('disk on fire')
  except RuntimeError:
    path = main._save_traceback(str(tmp_path / 'run'))
  assert path == str(tmp_path / 'run' / 'error_traceback.txt')
  text = open(path).read()
  assert 'RuntimeError: disk on fire' in text and 'Traceback' in text


def test_tensorflow_imports_without_its_notices():
  """TensorFlow's import-time C++ notices (oneDNN, CPU instructions) stay off the console."""
  import subprocess
  import sys
  result = subprocess.run(
      [sys.executable, '-c', 'from okdhp_jax.data import tf_host; tf_host.hide_accelerators()'],
      capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert 'oneDNN' not in result.stderr and 'absl::InitializeLog' not in result.stderr


def test_precision_bench_reads_finished_runs_and_judges_the_threshold(tmp_path, capsys):
  """Finished runs (eval_results.json present) are read back, not trained again."""
  from okdhp_jax.tools import bench_precision
  for dtype, means in (('float32', (92.0, 93.5, 94.0)), ('bfloat16', (91.0, 89.5, 93.0))):
    metrics = {f'branch_{i}': {'Mean': m} for i, m in enumerate(means[:2])}
    metrics['ensemble'] = {'Mean': means[2]}
    folder = tmp_path / dtype
    folder.mkdir()
    history = {'history': [{'step': 2048, 'metrics': metrics}]}
    (folder / 'eval_results.json').write_text(json.dumps(history))
  assert bench_precision.main(['--workdir', str(tmp_path), '--threshold', '90']) == 1
  out = capsys.readouterr().out
  assert '| float32 | 92.00 | 93.50 | 94.00 | read back | yes |' in out
  assert '| bfloat16 | 91.00 | 89.50 | 93.00 | read back | no |' in out
  assert bench_precision.main(['--workdir', str(tmp_path), '--threshold', '89']) == 0
