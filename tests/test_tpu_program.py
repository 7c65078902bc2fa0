"""The TPU program tool: collectives and replica groups read from HLO text, the accelerator
types, the batch checks that need no compile, and, where the tpu-aot extra (libtpu) is
installed, one compile of a tiny step for a 4-chip slice and for two slices."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest

from main_runs import ROOT, clean_env
from okdhp_jax.tools import tpu_program

NEEDS_EXTRA = tpu_program.check_libtpu()

# Trimmed from a v5e compile: an asynchronous all-reduce pair over named mesh axes, a
# synchronous one with an iota group list, an all-gather with explicit groups.
HLO = '''\
HloModule jit_train_step, is_scheduled=true

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %sum = f32[] add(%a, %b)
}

ENTRY %main (p0: f32[3,3,256,256], p1: bf16[64], p2: f32[16]) -> f32[3,3,256,256] {
  %p0 = f32[3,3,256,256]{3,2,1,0} parameter(0)
  %p1 = bf16[64]{0} parameter(1)
  %p2 = f32[16]{0} parameter(2)
  %all-reduce-start = (f32[3,3,256,256]{3,2,1,0}, f32[3,3,256,256]{3,2,1,0}) all-reduce-start(%p0), channel_id=1, replica_groups=mesh['axis_0'=4,'axis_1'=2]{'axis_0','axis_1'}, use_global_device_ids=true, to_apply=%add
  %all-reduce-done = f32[3,3,256,256]{3,2,1,0} all-reduce-done(%all-reduce-start)
  %all-reduce.1 = bf16[64]{0} all-reduce(%p1), channel_id=2, replica_groups=[2,4]<=[8], use_global_device_ids=true, to_apply=%add
  %all-reduce.2 = f32[16]{0} all-reduce(%p2), channel_id=3, replica_groups=[2,4]<=[8], use_global_device_ids=true, to_apply=%add
  %all-gather = f32[32]{0} all-gather(%p2), channel_id=4, replica_groups={{0,4},{1,5},{2,6},{3,7}}, dimensions={0}
  %after-all = token[] after-all(), frontend_attributes={MegascaleRendezvousKeyName="psum.1_0"}
  %send = (f32[16]{0}, u32[], token[]) send(%all-reduce.2, %after-all), channel_id=6, is_host_transfer=true, frontend_attributes={_xla_host_transfer_handler_name="xla_megascale_runtime",_xla_megascale_reduce_operation="SUM",_xla_megascale_transfer_type="ALL_REDUCE"}
  %recv = (f32[16]{0}, u32[], token[]) recv(%after-all), channel_id=5, is_host_transfer=true, frontend_attributes={_xla_host_transfer_handler_name="xla_megascale_runtime",_xla_megascale_reduce_operation="SUM",_xla_megascale_transfer_type="ALL_REDUCE"}
  ROOT %out = f32[3,3,256,256]{3,2,1,0} copy(%all-reduce-done)
}
'''


def test_collectives_by_kind_dtype_and_group():
  rows = tpu_program.collective_counts(HLO, num_devices=8)
  table = {(r['kind'], r['dtype'], r['group'], r['size']): (r['count'], r['mib'])
           for r in rows}
  assert table == {
      ('all-reduce', 'f32', 8, 'large'): (1, 3 * 3 * 256 * 256 * 4 / 2**20),  # async, once.
      ('all-reduce', 'bf16', 4, 'small'): (1, 64 * 2 / 2**20),
      ('all-reduce', 'f32', 4, 'small'): (1, 16 * 4 / 2**20),
      ('all-gather', 'f32', 2, 'small'): (1, 32 * 4 / 2**20),
      # Between slices: the Multislice runtime's send (its recv moves the same data back).
      ('DCN all-reduce', 'f32', tpu_program.ACROSS_SLICES, 'small'): (1, 16 * 4 / 2**20),
  }


def test_accelerator_types_and_chips():
  assert tpu_program.topology_of('v5litepod-16') == 'v5e:4x4'
  assert tpu_program.topology_of('v5p-16') == 'v5p:2x2x2'
  assert tpu_program.chip_of('v5e:4x4').hbm_gib == 16
  with pytest.raises(ValueError, match='v5litepod-3'):
    tpu_program.topology_of('v5litepod-3')
  with pytest.raises(ValueError, match='v9x:2x2'):
    tpu_program.chip_of('v9x:2x2')


class _Mesh:  # what check_batch reads of a mesh before it compiles anything.

  class devices:  # pylint: disable=invalid-name
    size = 16


def test_a_batch_that_does_not_divide_is_refused_before_compiling():
  problem = tpu_program.check_batch('configs/hg4.py', 'bfloat16', 100, _Mesh, None, 1, [],
                                    'v5e:4x4')
  assert problem == ('v5e:4x4 (16 chips): global batch 100 does not divide over 16 chips; '
                     'use 96 or 112')


def test_table_has_memory_collectives_and_flops():
  row = {'config': 'configs/hg4.py', 'dtype': 'bfloat16', 'batch': 128, 'chips': 16,
         'slices': 1, 'hbm_gib': 16, 'argument_gib': 0.35, 'output_gib': 0.35, 'alias_gib': 0.35,
         'temp_gib': 1.93, 'flops_per_chip': 2.5e12, 'compute_ms_at_peak': 12.7,
         'collectives': tpu_program.collective_counts(HLO, 8), 'lower_s': 9.0,
         'compile_s': 183.0}
  text = tpu_program.format_table([row])
  assert '| peak GiB per chip / HBM | 2.28 / 16 |' in text
  assert '| all-reduce bf16, each < 1 MiB, groups of 4 chips | 1 (0.00 MiB) |' in text
  assert '| GFLOPs per chip per step | 2,500.0 |' in text


@pytest.mark.skipif(NEEDS_EXTRA is not None, reason=f'needs the tpu-aot extra: {NEEDS_EXTRA}')
@pytest.mark.parametrize('slices', [1, 2])
def test_a_tiny_step_compiles_for_a_described_slice(tmp_path, slices):
  """A 4-chip v5e slice, and two of them joined by DCN (a hybrid mesh): the gradients and
  BatchNorm statistics cross the chips in float32, over all of them."""
  counts = tmp_path / 'counts.json'
  result = subprocess.run(
      [sys.executable, '-m', 'okdhp_jax.tools.tpu_program', '--config',
       'configs/hg2_baseline.py:runlocal', '--batch', str(8 * slices), '--dtype', 'bfloat16',
       '--tpu', 'v5e:2x2', '--slices', str(slices), '--json', str(counts)],
      cwd=ROOT, capture_output=True, text=True, timeout=600, env=clean_env())
  assert result.returncode == 0, result.stderr[-3000:]
  row = json.loads(counts.read_text())['rows'][0]
  assert row['chips'] == 4 * slices and row['slices'] == slices
  assert 0 < row['temp_gib'] < row['hbm_gib'] and row['flops_per_chip'] > 0
  reduces = [c for c in row['collectives'] if c['kind'].endswith('all-reduce')]
  assert reduces and {c['dtype'] for c in reduces} == {'f32'}
  across = [c for c in row['collectives'] if c['group'] == tpu_program.ACROSS_SLICES]
  assert bool(across) == (slices > 1)  # the gradients cross the data-centre network too.
  assert '| peak GiB per chip / HBM |' in result.stdout


def test_a_batch_that_does_not_fit_names_the_one_that_does(monkeypatch):
  """The decision on compiled memory, with the compiles replaced by a linear memory model
  (0.5 GiB + 0.5 GiB per row on each chip): 32 rows per chip miss the 16 GiB; 31 fit."""
  chip = tpu_program.chip_of('v5e:4x4')

  def compiled(spec, dtype, batch, mesh, chip, slices, overrides):
    del spec, dtype, mesh, chip, slices, overrides
    rows = batch // 16
    return {'batch': batch, 'argument_gib': 0.25, 'output_gib': 0.25, 'alias_gib': 0.25,
            'temp_gib': 0.25 + 0.5 * rows}

  monkeypatch.setattr(tpu_program, 'try_batch', compiled)
  problem = tpu_program.check_batch('configs/hg4.py', 'bfloat16', 512, _Mesh, chip, 1, [],
                                    'v5e:4x4')
  assert problem == ('v5e:4x4 (16 chips): global batch 512 needs 16.5 GiB per chip, 0.5 GiB '
                     'over the TPU v5e HBM of 16 GiB; 496 fits')
  assert tpu_program.check_batch('configs/hg4.py', 'bfloat16', 480, _Mesh, chip, 1, [],
                                 'v5e:4x4') is None


# libtpu's words when it refuses a program for memory (a v5e compile of MobilePose-ResNet18).
REFUSED = ('RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO '
           'temporaries (21.59G) exceeds available HBM (15.75G).')


def test_a_refusal_says_what_the_program_needed():
  row = tpu_program.refusal(8192, RuntimeError(REFUSED))
  assert row == {'batch': 8192, 'refused': True, 'required_temp_gib': 21.59,
                 'available_temp_gib': 15.75}
  chip = tpu_program.chip_of('v5e:2x2')
  assert tpu_program.over_memory(row, chip) == (
      'needs 21.59 GiB of temporaries per chip, 5.84 GiB over the 15.75 GiB that libtpu leaves '
      'them of the TPU v5e HBM of 16 GiB')
  unsaid = tpu_program.refusal(8, RuntimeError('RESOURCE_EXHAUSTED: out of memory'))
  assert unsaid['required_temp_gib'] is None
  assert tpu_program.over_memory(unsaid, chip) == (
      'does not fit the TPU v5e HBM of 16 GiB (libtpu ran out of memory compiling it)')


AVAILABLE_GIB = 15.75


def _memory_model(monkeypatch, gib_per_chip, chips=4):
  """Compiles replaced by `gib_per_chip(rows)` of temporaries, refused as libtpu refuses them
  beyond AVAILABLE_GIB; returns {'fit': [...], 'refused': [...]}, the batches compiled."""
  compiled = {'fit': [], 'refused': []}

  def fake(spec, dtype, batch, mesh, chip, slices, overrides):
    del spec, dtype, mesh, chip, slices, overrides
    need = gib_per_chip(batch // chips)
    if need > AVAILABLE_GIB:
      compiled['refused'].append(batch)
      return tpu_program.refusal(batch, RuntimeError(
          f'RESOURCE_EXHAUSTED: ... HLO temporaries ({need:.2f}G) exceeds available HBM '
          f'({AVAILABLE_GIB}G).'))
    compiled['fit'].append(batch)
    return {'batch': batch, 'argument_gib': 0.1, 'output_gib': 0.0, 'alias_gib': 0.0,
            'temp_gib': need}

  monkeypatch.setattr(tpu_program, 'try_batch', fake)
  return compiled


class _FourChips:
  devices = np.zeros(4)


def test_fit_reaches_the_limit_mostly_through_refusals(monkeypatch):
  """Memory per chip as measured for MobilePose on v5e, growing slower at many rows (0.73 GiB
  at 8, 1.64 at 32, 8.65 at 411): the search finds the limit exactly (the next multiple is
  refused), and spends few of its compiles on programs that fit (minutes each, where a refusal
  takes seconds)."""
  def gib(rows):
    return 0.7 + 0.04 * rows ** 0.86

  limit = max(r for r in range(1, 5000) if gib(r) <= AVAILABLE_GIB)
  compiled = _memory_model(monkeypatch, gib)
  chip = tpu_program.chip_of('v5e:2x2')
  found = tpu_program.largest_fitting_batch('configs/hg4.py', 'bfloat16', 32, _FourChips, chip,
                                            1, [])
  assert found['exact'] and found['fits'] == 4 * limit, (found['fits'], limit, compiled)
  assert found['fitted']['temp_gib'] <= AVAILABLE_GIB < gib(limit + 1)
  assert len(compiled['fit']) <= 4, compiled
  assert len(compiled['refused']) <= tpu_program.MAX_REFUSED_COMPILES


def test_fit_from_a_refused_batch_comes_down_to_the_limit(monkeypatch, capsys):
  """Memory linear in the rows, the search started far above the limit (what --check does with
  a batch that does not fit): down through refusals, one program that fits, a line for each."""
  compiled = _memory_model(monkeypatch, lambda rows: 0.5 + 0.12 * rows)
  chip = tpu_program.chip_of('v5e:2x2')
  found = tpu_program.largest_fitting_batch('configs/hg4.py', 'bfloat16', 4096, _FourChips,
                                            chip, 1, [])
  assert found['exact'] and found['fits'] == 4 * 127, compiled
  assert compiled['fit'] == [4 * 127], compiled
  lines = capsys.readouterr().err.splitlines()
  assert len(lines) == len(compiled['fit']) + len(compiled['refused'])
  assert lines[0].startswith('  batch 4096 (1024 per chip): needs 123.38 GiB of temporaries')
  assert any(l.startswith('  batch 508 (127 per chip): fits, 15.84 GiB per chip (') for l in lines)


def test_fit_comes_down_a_step_in_memory_in_few_refusals(monkeypatch):
  """Memory that rises in a step, as OKDHP-HG4's did on v5e (127 rows per chip took 14.39 GiB,
  137 to 139 needed 15.93): the aim keeps landing just under the smallest refusal, so after
  three refusals in a row the search bisects, rather than coming down a few rows per refusal
  across a bracket of 240 rows."""
  def gib(rows):
    return 4.0 + 0.08 * rows if rows <= 131 else 15.93 + 0.001 * rows

  compiled = _memory_model(monkeypatch, gib)
  found = tpu_program.largest_fitting_batch('configs/hg4.py', 'bfloat16', 8 * 4, _FourChips,
                                            tpu_program.chip_of('v5e:2x2'), 1, [])
  assert found['exact'] and found['fits'] == 4 * 131, compiled
  assert len(compiled['fit']) <= 6 and len(compiled['refused']) <= 12, compiled


def test_a_refused_batch_is_one_line_naming_the_batch_that_fits(monkeypatch):
  _memory_model(monkeypatch, lambda rows: 0.5 + 0.12 * rows)
  problem = tpu_program.check_batch('configs/hg4.py', 'bfloat16', 1024, _FourChips,
                                    tpu_program.chip_of('v5e:2x2'), 1, [], 'v5e:2x2')
  assert problem == ('v5e:2x2 (4 chips): global batch 1024 needs 31.22 GiB of temporaries per '
                     'chip, 15.47 GiB over the 15.75 GiB that libtpu leaves them of the TPU v5e '
                     'HBM of 16 GiB; 508 fits')


def test_fit_says_when_its_compiles_ran_out(monkeypatch):
  """A limit far beyond what the compile budget can climb to is reported as a batch that fits,
  not as the largest."""
  compiled = _memory_model(monkeypatch, lambda rows: 1.0 + 1e-6 * rows)
  monkeypatch.setattr(tpu_program, 'MAX_SEARCH_COMPILES', 2)
  found = tpu_program.largest_fitting_batch('configs/hg4.py', 'bfloat16', 4, _FourChips,
                                            tpu_program.chip_of('v5e:2x2'), 1, [])
  assert not found['exact'] and found['fits'] == max(compiled['fit'])
  assert len(compiled['fit']) == 3  # the first, then the budget's two


def test_a_refused_table_batch_is_one_line(monkeypatch, capsys):
  """Without --fit, a batch libtpu refuses ends the tool with one line, not a traceback."""
  def refused(*args, **kwargs):
    raise RuntimeError(REFUSED)

  monkeypatch.setattr(tpu_program, 'measure', refused)
  args = argparse.Namespace(check=False, config=['configs/mobilepose_resnet18.py'], batch=8192,
                            dtype='bfloat16', fit=False, save_hlo=None, json=None, slices=1)
  with pytest.raises(SystemExit) as stop:
    tpu_program._run(args, 'v5e:2x2', tpu_program.chip_of('v5e:2x2'), _FourChips, [])
  assert stop.value.code == 1
  assert capsys.readouterr().err.splitlines()[-1] == (
      'tpu_program: error: configs/mobilepose_resnet18.py: global batch 8192 needs 21.59 GiB of '
      'temporaries per chip, 5.84 GiB over the 15.75 GiB that libtpu leaves them of the TPU v5e '
      'HBM of 16 GiB; --fit finds the largest that fits')
