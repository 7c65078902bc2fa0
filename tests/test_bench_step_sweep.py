"""bench_step's sweep bookkeeping: rows kept as they finish, a rerun measuring only what is
missing, and an interrupted sweep printing what it has (measurement itself: test_bench_step)."""

from __future__ import annotations

import argparse
import json
import subprocess

import pytest

from okdhp_jax.tools import bench_step


def fake_row(config_spec, dtype, batch):
  return {'config': config_spec, 'devices': '1 x cpu', 'dtype': dtype, 'batch': batch,
          'img_per_s': 10.0 * batch, 'step_ms': 100.0, 'tflops': 0.5, 'mfu': None,
          'first_call_s': 1.0, 'peak_gib': None, 'loss': 1.0, 'profile': None}


@pytest.fixture
def measured(monkeypatch):
  """The (config, dtype, batch) of every row measured, in order; rows are made up. No
  XLA_FLAGS (conftest's compile flag would join every request)."""
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  calls = []

  def fake_measure_in_child(args, config_spec, dtype, batch):
    calls.append((config_spec, dtype, batch))
    return fake_row(config_spec, dtype, batch)

  monkeypatch.setattr(bench_step, 'measure_in_child', fake_measure_in_child)
  return calls


ARGS = ['--config', 'configs/quickstart.py', '--dtype', 'float32', '--batch', '2', '--batch', '4']


def table_rows(out: str) -> list[list[str]]:
  return [[c.strip() for c in line.strip('|').split('|')] for line in out.splitlines()
          if line.startswith('| configs/')]


def test_a_rerun_measures_only_the_rows_the_results_file_lacks(measured, tmp_path, capsys):
  results = tmp_path / 'sweep.jsonl'
  bench_step.main(ARGS[:-1] + ['8', '--results', str(results)])  # batches 2 and 8
  assert [b for _, _, b in measured] == [2, 8]
  capsys.readouterr()
  bench_step.main(ARGS + ['--results', str(results)])  # batches 2 and 4
  assert [b for _, _, b in measured[2:]] == [4]
  out, err = capsys.readouterr()
  assert [r[3] for r in table_rows(out)] == ['2', '4']  # the rows asked for, in grid order
  assert 'measured earlier' in err and 'about 0.0 min left' in err
  kept = [json.loads(line)['request'] for line in results.read_text().splitlines()]
  assert [r['batch'] for r in kept] == [2, 8, 4]
  assert kept[0] == {'config': 'configs/quickstart.py', 'dtype': 'float32', 'batch': 2,
                     'steps': 10, 'warmup': 2, 'profile': False, 'xla_flags': ''}


def test_rows_measured_another_way_are_measured_again(measured, tmp_path, capsys):
  results = tmp_path / 'sweep.jsonl'
  bench_step.main(ARGS + ['--results', str(results)])
  bench_step.main(ARGS + ['--results', str(results), '--steps', '20'])
  bench_step.main(ARGS + ['--results', str(results), '--steps', '20'])
  # Rows without a profile do not answer a request for one.
  bench_step.main(ARGS + ['--results', str(results), '--profile', str(tmp_path / 'prof')])
  assert [b for _, _, b in measured] == [2, 4, 2, 4, 2, 4]
  capsys.readouterr()


def test_rows_measured_under_other_xla_flags_are_measured_again(measured, monkeypatch, tmp_path,
                                                               capsys):
  results = tmp_path / 'sweep.jsonl'
  bench_step.main(ARGS + ['--results', str(results)])
  flags = '--xla_gpu_enable_command_buffer=FUSION,CONVOLUTION'
  monkeypatch.setenv('XLA_FLAGS', flags)
  bench_step.main(ARGS + ['--results', str(results)])
  bench_step.main(ARGS + ['--results', str(results)])
  assert [b for _, _, b in measured] == [2, 4, 2, 4]
  out = capsys.readouterr().out.split('| config |')[-1]
  assert f'Rows 1, 2: XLA_FLAGS={flags}' in out


def test_a_row_asked_for_twice_is_measured_once(measured, capsys):
  bench_step.main(ARGS + ['--config', 'configs/quickstart.py'])
  assert [b for _, _, b in measured] == [2, 4]
  assert len(table_rows(capsys.readouterr().out)) == 2


def test_a_single_row_is_kept_too(monkeypatch, tmp_path, capsys):
  # One row is measured in this process (measure, not measure_in_child).
  calls = []
  monkeypatch.setattr(bench_step, 'measure', lambda c, d, b, **kwargs: (
      calls.append(b), fake_row(c, d, b))[1])
  results = tmp_path / 'sweep.jsonl'
  for _ in range(2):
    bench_step.main(ARGS[:-2] + ['--results', str(results)])
  assert calls == [2] and len(results.read_text().splitlines()) == 1
  assert 'measured earlier on 1 x cpu' in capsys.readouterr().err


def test_failed_rows_are_measured_again(monkeypatch, tmp_path, capsys):
  results = tmp_path / 'sweep.jsonl'
  monkeypatch.setattr(bench_step, 'measure_in_child',
                      lambda args, c, d, b: {'config': c, 'dtype': d, 'batch': b,
                                             'error': 'exit 1: out of memory'})
  bench_step.main(ARGS + ['--results', str(results)])
  assert 'failed: exit 1: out of memory' in capsys.readouterr().out
  assert not results.exists() or not results.read_text().strip()


def test_a_row_cut_off_mid_write_is_measured_again(measured, tmp_path, capsys):
  results = tmp_path / 'sweep.jsonl'
  bench_step.main(ARGS[:-1] + ['8', '--results', str(results)])  # batches 2 and 8
  lines = results.read_text().splitlines()
  results.write_text(lines[0] + '\n' + lines[1][:40])  # killed while writing the second row
  bench_step.main(ARGS + ['--results', str(results)])
  assert [b for _, _, b in measured] == [2, 8, 4]
  lines = results.read_text().splitlines()
  assert [json.loads(line)['request']['batch'] for line in lines] == [2, 4]  # fragment dropped
  bench_step.main(ARGS + ['--results', str(results)])  # and the file reads cleanly again
  assert len(measured) == 3
  capsys.readouterr()
  results.write_text(lines[0] + '\n{"not": "a row"}\n' + lines[1] + '\n')
  with pytest.raises(SystemExit, match=r'sweep.jsonl, line 2 is not a bench_step row'):
    bench_step.main(ARGS + ['--results', str(results)])  # a damaged line in the middle


def test_an_interrupted_sweep_prints_the_rows_it_has(monkeypatch, tmp_path, capsys):
  results = tmp_path / 'sweep.jsonl'

  def second_row_interrupted(args, config_spec, dtype, batch):
    if batch == 4:
      raise KeyboardInterrupt
    return fake_row(config_spec, dtype, batch)

  monkeypatch.setattr(bench_step, 'measure_in_child', second_row_interrupted)
  with pytest.raises(SystemExit) as stop:
    bench_step.main(ARGS + ['--results', str(results)])
  assert stop.value.code == 130
  out, err = capsys.readouterr()
  assert [r[3] for r in table_rows(out)] == ['2']
  assert f'1 of 2 rows done (kept in {results}; run again to go on)' in err
  assert len(results.read_text().splitlines()) == 1


@pytest.mark.parametrize('where, problem', [
    ('no_such_folder/sweep.jsonl', 'its folder does not exist'), ('.', 'is a folder')])
def test_a_results_path_that_cannot_take_rows_is_refused_before_measuring(
    measured, tmp_path, capsys, where, problem):
  with pytest.raises(SystemExit):
    bench_step.main(ARGS + ['--results', str(tmp_path / where)])
  assert problem in capsys.readouterr().err and measured == []


def test_a_childs_warnings_reach_the_user(monkeypatch, capsys):
  row = fake_row('configs/quickstart.py', 'float32', 2)
  done = subprocess.CompletedProcess(
      [], 0, stdout=json.dumps(row) + '\n',
      stderr='I1127 some framework log line\nwarning: the trace in /tmp/p could not be read\n')
  monkeypatch.setattr(bench_step.subprocess, 'run', lambda *a, **k: done)
  args = argparse.Namespace(steps=1, warmup=0, profile='/tmp/p')
  assert bench_step.measure_in_child(args, 'configs/quickstart.py', 'float32', 2) == row
  err = capsys.readouterr().err
  assert 'warning: the trace in /tmp/p could not be read' in err and 'framework' not in err
