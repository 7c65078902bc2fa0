"""Two JAX processes on this machine run one training job, as the hosts of a slice do.

Each process is started the way launch/slurm.sh starts a node (JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID) and owns one CPU device; the mesh spans both, so every
collective (gradient and BatchNorm reductions, the evaluation gather, Orbax's checkpoint
barriers) crosses the process boundary.
"""

from __future__ import annotations

import glob
import json
import os
import socket
import subprocess

import numpy as np
import pytest

from main_runs import ROOT, TINY, clean_env, main_command, restored_params, run_main

pytestmark = pytest.mark.slow  # minutes on 2 cores: not in the fast tier.

NUM_PROCESSES = 2
# Gloo's CPU all-reduces cost about 2 s per step here (one per gradient and BatchNorm tensor,
# whatever their size), so the run takes 5 steps of a global batch of 64 (32 per process)
# rather than TINY's 33 of 8. The state is flat, as a multi-node GPU job keeps it
# (training/flat_state.py): its gradients cross as one vector, and evaluation, checkpoints and
# the export cut the per-array trees out of vectors that span both processes.
FLAGS = (*TINY, '--config.train.batch_size=64', '--config.eval.batch_size=16',
         '--config.train.flat_state=always')
STEPS = 5  # ceil(261 / 64): the global batch, not a per-process one, sets the steps.


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def two_process_run(tmp_path_factory):
  """Both processes' (returncode, stdout, stderr), the workdir and the records folder."""
  root = tmp_path_factory.mktemp('multihost')
  workdir, records = str(root / 'run'), str(root / 'records')
  port = _free_port()
  processes = []
  for index in range(NUM_PROCESSES):
    env = dict(clean_env(), JAX_COORDINATOR_ADDRESS=f'localhost:{port}',
               JAX_NUM_PROCESSES=str(NUM_PROCESSES), JAX_PROCESS_ID=str(index))
    # Files, not pipes: a process blocked on a full pipe would stall the other in a collective.
    # The child keeps its own copies of the file descriptors once started.
    with open(root / f'p{index}.out', 'w') as out, open(root / f'p{index}.err', 'w') as err:
      processes.append(subprocess.Popen(main_command(workdir, *FLAGS, records=records),
                                        cwd=ROOT, stdout=out, stderr=err, env=env))
  try:
    for process in processes:
      process.wait(timeout=300)  # about 1 minute when nothing hangs
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
        process.wait()
  results = [(process.returncode, (root / f'p{index}.out').read_text(),
              (root / f'p{index}.err').read_text())
             for index, process in enumerate(processes)]
  return results, workdir, records


def test_both_processes_finish(two_process_run):
  results, _, _ = two_process_run
  for index, (code, _, err) in enumerate(results):
    assert code == 0, f'process {index} exited with {code}:\n{err[-4000:]}'
  for index, (_, _, err) in enumerate(results):
    assert f'JAX process {index}/{NUM_PROCESSES}' in err


def test_each_process_reads_its_own_shard(two_process_run):
  results, _, _ = two_process_run
  for index, (_, _, err) in enumerate(results):
    # 261 bundled train records in one shard file: records i with i % 2 == index.
    expected = 131 if index == 0 else 130
    assert (f'Process {index}/{NUM_PROCESSES} reads the records i with i % {NUM_PROCESSES} == '
            f"{index} of 'train' ({expected} examples)") in err


def test_only_process_0_writes_logs_exports_and_the_report(two_process_run):
  results, workdir, _ = two_process_run
  assert len(glob.glob(os.path.join(workdir, 'events.out.tfevents.*'))) == 1
  assert os.path.exists(os.path.join(workdir, 'export', 'model.json'))
  assert glob.glob(os.path.join(workdir, 'samples', '*.png'))
  assert 'Training finished' in results[0][1]
  assert 'Training finished' not in results[1][1]


def test_collective_checkpoint_restores_in_one_process(two_process_run):
  _, workdir, _ = two_process_run
  step, params = restored_params(workdir)
  assert step == STEPS
  assert all(np.isfinite(v).all() for v in params.values())


def test_gathered_evaluation_equals_one_process_evaluation(two_process_run):
  """Each process scored half of the validation people; the gathered result is the whole."""
  _, workdir, records = two_process_run
  history = json.load(open(os.path.join(workdir, 'eval_results.json')))['history']
  result = run_main(workdir, '--mode=eval', *FLAGS, records=records)
  assert result.returncode == 0, result.stderr[-4000:]
  single = json.load(open(os.path.join(workdir, 'eval', 'metrics.json')))['metrics']
  gathered = history[-1]['metrics']
  assert gathered.keys() == single.keys() == {'branch_0', 'branch_1', 'ensemble'}
  for name in single:
    for metric, value in single[name].items():
      np.testing.assert_allclose(gathered[name][metric], value, err_msg=f'{name} {metric}')
