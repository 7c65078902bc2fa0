"""bench_step's sweep bookkeeping: rows kept as they finish, a rerun measuring only what is
missing, and an interrupted sweep printing what it has (measurement itself: test_bench_step)."""

from __future__ import annotations

import json

import pytest

from okdhp_jax.tools import bench_step


def fake_row(config_spec, dtype, batch):
  return {'config': config_spec, 'devices': '1 x cpu', 'dtype': dtype, 'batch': batch,
          'img_per_s': 10.0 * batch, 'step_ms': 100.0, 'tflops': 0.5, 'mfu': None,
          'first_call_s': 1.0, 'peak_gib': None, 'loss': 1.0, 'profile': None}


@pytest.fixture
def measured(monkeypatch):
  """The (config, dtype, batch) of every row measured, in order; rows are made up."""
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
  kept = [json.loads(line)['request'][2] for line in results.read_text().splitlines()]
  assert kept == [2, 8, 4]


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
  row = dict(fake_row('configs/quickstart.py', 'float32', 2),
             request=['configs/quickstart.py', 'float32', 2])
  results.write_text(json.dumps(row) + '\n' + json.dumps(row)[:40])  # killed while writing
  bench_step.main(ARGS + ['--results', str(results)])
  assert measured == [('configs/quickstart.py', 'float32', 4)]
  lines = results.read_text().splitlines()
  assert json.loads(lines[-1])['request'] == ['configs/quickstart.py', 'float32', 4]
  capsys.readouterr()
  with pytest.raises(SystemExit, match=r'sweep.jsonl, line 2 is not a bench_step row'):
    bench_step.main(ARGS + ['--results', str(results)])  # now a damaged line in the middle


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


def test_a_results_file_in_a_missing_folder_is_refused_before_measuring(measured, tmp_path,
                                                                         capsys):
  with pytest.raises(SystemExit):
    bench_step.main(ARGS + ['--results', str(tmp_path / 'no_such_folder' / 'sweep.jsonl')])
  assert 'its folder does not exist' in capsys.readouterr().err and measured == []
