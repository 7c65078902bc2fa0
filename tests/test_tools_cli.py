"""Every command-line tool alike: fast --help, dashed flags (underscores kept), clear extras."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from main_runs import ROOT, clean_env

TOOLS = ('okdhp_jax.main', 'okdhp_jax.tools.model_stats', 'okdhp_jax.tools.bench_step',
         'okdhp_jax.tools.convert_torch', 'okdhp_jax.tools.eval_mpii', 'okdhp_jax.tools.eval_coco',
         'okdhp_jax.tools.predict', 'okdhp_jax.tools.bench_predict', 'okdhp_jax.tools.study',
         'data_prep.mpii',
         'data_prep.coco', 'data_prep.synthetic', 'data_prep.bench', 'data_prep.bench_training',
         'okdhp_jax.tools.bench_loop', 'okdhp_jax.tools.bench_precision',
         'okdhp_jax.tools.bench_torch', 'okdhp_jax.tools.profile_summary',
         'okdhp_jax.tools.gpu_program', 'okdhp_jax.tools.browse_data',
         'okdhp_jax.tools.gpu_report', 'okdhp_jax.tools.tpu_program',
         'okdhp_jax.tools.bench_deploy')
# Runs a tool's --help, then says which heavy frameworks it imported on the way.
HELP_PROBE = '''
import runpy, sys
sys.argv = [{tool!r}, '--help']
try:
  runpy.run_module({tool!r}, run_name='__main__')
except SystemExit:
  pass
print('imported:', sorted(m for m in ('jax', 'tensorflow', 'torch') if m in sys.modules))
'''


@pytest.mark.parametrize('tool', TOOLS)
def test_help_imports_no_framework(tool):
  """--help answers before JAX or TensorFlow load (they take seconds to import)."""
  result = subprocess.run([sys.executable, '-c', HELP_PROBE.format(tool=tool)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=clean_env())
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'usage' in result.stdout.lower() or 'flags' in result.stdout.lower()
  assert result.stdout.strip().splitlines()[-1] == 'imported: []'


@pytest.mark.parametrize('spelling', ['--num-valid', '--num_valid'])
def test_dashed_flags_with_underscore_aliases(tmp_path, spelling):
  from data_prep import synthetic
  out = str(tmp_path / 'records')
  synthetic.main(['--out', out, '--num', '2', spelling, '1', '--size', '64'])
  with open(os.path.join(out, 'dataset_info.json')) as f:
    assert json.load(f)['splits'] == {'train': 2, 'valid': 1}


def test_convert_torch_without_torch_names_the_extra(tmp_path, monkeypatch, capsys):
  from okdhp_jax.tools import convert_torch
  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` now fails, as uninstalled.
  with pytest.raises(SystemExit) as exit_info:
    convert_torch.main(['--checkpoint', str(tmp_path / 'hg.pth'), '--num-stacks', '2',
                        '--out', str(tmp_path / 'out')])
  assert exit_info.value.code == 1
  error = capsys.readouterr().err
  assert 'okdhp_jax[torch]' in error and 'Traceback' not in error
