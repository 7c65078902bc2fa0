"""Dry runs of the launch/ scripts: the commands they print, their errors, and that they run nothing.

Commands are parsed from the `+ ` lines with shlex (the scripts quote with printf %q). Where a
command string is meant for another shell (the TPU `--command`, the sbatch script), the test
runs that string in bash against fake programs and checks what those programs receive, so the
quoting is checked end to end rather than by reading it.
"""

from __future__ import annotations

import os
import pathlib
import shlex
import stat
import subprocess
import sys

import pytest

from okdhp_jax.tools import tpu_program

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / 'launch'

# Everything the scripts would call in a real run; in a dry run none may start.
FAKED_PROGRAMS = ('gcloud', 'gsutil', 'sbatch', 'srun', 'scontrol', 'tar', 'python3', 'python',
                  'mkdir', 'env', 'git', 'rm')

# Records its argv, so a test can see what a command string really passes.
ARGV_RECORDER = """#!/bin/bash
out="$OKDHP_TEST_OUT/$(basename "$0")_${JAX_PROCESS_ID:-none}.txt"
{
  for k in JAX_COORDINATOR_ADDRESS JAX_NUM_PROCESSES JAX_PROCESS_ID JAX_LOCAL_DEVICE_IDS \\
           CUDA_VISIBLE_DEVICES; do
    echo "$k=${!k-<unset>}"
  done
  for a in "$@"; do echo "ARG=$a"; done
} > "$out"
"""


def _write_executable(path: pathlib.Path, text: str) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def sandbox(tmp_path):
  """PATH with fakes of every external program; any fake that starts writes `marker`."""
  fake_bin = tmp_path / 'fake_bin'
  marker = tmp_path / 'marker'
  for program in FAKED_PROGRAMS:
    _write_executable(fake_bin / program, f'#!/bin/sh\necho "{program} $*" >> "{marker}"\n')
  env = dict(os.environ, PATH=f'{fake_bin}:{os.environ["PATH"]}', TMPDIR=str(tmp_path))
  return {'env': env, 'marker': marker, 'tmp': tmp_path}


def launch(script: str, *args: str, env: dict[str, str], cwd=None) -> subprocess.CompletedProcess:
  return subprocess.run(['bash', str(LAUNCH / script), *args], capture_output=True, text=True,
                        env=env, cwd=cwd, timeout=30)


def plus_commands(stdout: str) -> list[list[str]]:
  """argv of every `+ ` line, in order."""
  return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith('+ ')]


def flag_value(argv: list[str], flag: str) -> str:
  values = [a.split('=', 1)[1] for a in argv if a.startswith(flag + '=')]
  assert len(values) == 1, (flag, argv)
  return values[0]


def recorded(out_dir: pathlib.Path, name: str) -> tuple[dict[str, str], list[str]]:
  """(environment, argv) that the recorder called `name` saw."""
  env, argv = {}, []
  for line in (out_dir / name).read_text().splitlines():
    if line.startswith('ARG='):
      argv.append(line[4:])
    else:
      key, value = line.split('=', 1)
      env[key] = value
  return env, argv


def assert_nothing_ran(sandbox) -> None:
  assert not sandbox['marker'].exists(), sandbox['marker'].read_text()


# ---------------------------------------------------------------- tpu_vm.sh

TPU_ALL = ('--step', 'all', '--name', 'okdhp-v4', '--zone', 'us-central2-b',
           '--project', 'my-proj', '--accelerator-type', 'v4-32', '--version', 'tpu-ubuntu2204-base',
           '--source', str(REPO), '--bucket', 'gs://my-bucket/mpii_records/',
           '--config', 'configs/hg4.py', '--workdir', 'gs://my-bucket/runs/hg4', '--dry-run',
           '--no-compile-check', '--', '--config.train.num_epochs=10', '--config.seed=1 2 $x')


def test_tpu_all_steps_in_order(sandbox):
  result = launch('tpu_vm.sh', *TPU_ALL, env=sandbox['env'])
  assert result.returncode == 0, result.stderr
  commands = plus_commands(result.stdout)
  kinds = [c[0] if c[0] != 'gcloud' else ' '.join(c[:5]) for c in commands]
  ssh, scp = 'gcloud compute tpus tpu-vm ssh', 'gcloud compute tpus tpu-vm scp'
  assert kinds == ['gcloud compute tpus tpu-vm create', 'tar', scp, ssh, ssh, ssh, ssh,
                   'gcloud compute tpus tpu-vm delete']
  for command in commands:
    if command[0] == 'gcloud':
      assert command[5] == 'okdhp-v4' or command[5].endswith('.tar.gz'), command
      assert flag_value(command, '--zone') == 'us-central2-b'
      assert flag_value(command, '--project') == 'my-proj'

  create = commands[0]
  assert flag_value(create, '--accelerator-type') == 'v4-32'
  assert flag_value(create, '--version') == 'tpu-ubuntu2204-base'

  tar, copy = commands[1], commands[2]
  tarball = tar[tar.index('-czf') + 1]
  assert tar[tar.index('-C') + 1] == str(REPO) and '--exclude=.git' in tar
  assert copy[5] == tarball and copy[6].startswith('okdhp-v4:')
  assert flag_value(copy, '--worker') == 'all'
  assert not pathlib.Path(tarball).exists()

  for command in commands[3:7]:
    assert flag_value(command, '--worker') == 'all'
  install = flag_value(commands[4], '--command')
  assert "-e . 'jax[tpu]'" in install
  copy_data = flag_value(commands[5], '--command')
  assert 'gcloud storage rsync --recursive gs://my-bucket/mpii_records ' in copy_data
  train = flag_value(commands[6], '--command')
  assert '-m okdhp_jax.main --config configs/hg4.py --workdir gs://my-bucket/runs/hg4' in train
  assert commands[7][-1] == '--quiet'
  assert_nothing_ran(sandbox)


def test_tpu_remote_commands_expand_on_the_worker(sandbox):
  """Runs the printed copy-data and run command strings as the worker's shell would."""
  commands = plus_commands(launch('tpu_vm.sh', *TPU_ALL, env=sandbox['env']).stdout)
  home, out = sandbox['tmp'] / 'home', sandbox['tmp'] / 'out'
  (home / 'okdhp_jax').mkdir(parents=True)
  out.mkdir()
  _write_executable(home / 'okdhp_venv/bin/python', ARGV_RECORDER)
  worker_bin = sandbox['tmp'] / 'worker_bin'
  _write_executable(worker_bin / 'gcloud', ARGV_RECORDER)
  env = dict(os.environ, HOME=str(home), OKDHP_TEST_OUT=str(out),
             PATH=f'{worker_bin}:{os.environ["PATH"]}')
  for command in commands[5:7]:
    subprocess.run(['bash', '-c', flag_value(command, '--command')], env=env, check=True,
                   timeout=30)

  _, gcloud_argv = recorded(out, 'gcloud_none.txt')
  assert gcloud_argv == ['storage', 'rsync', '--recursive', 'gs://my-bucket/mpii_records',
                         f'{home}/okdhp_data']
  assert (home / 'okdhp_data').is_dir()
  _, python_argv = recorded(out, 'python_none.txt')
  assert python_argv == [
      '-m', 'okdhp_jax.main', '--config', 'configs/hg4.py',
      '--workdir', 'gs://my-bucket/runs/hg4', '--distributed=on',
      f'--config.data.records_dir={home}/okdhp_data',
      f'--config.data.eval_annotations={home}/okdhp_data/gt_valid.mat',
      '--config.train.num_epochs=10', '--config.seed=1 2 $x']


def test_tpu_multislice_is_one_queued_resource_of_nodes(sandbox):
  result = launch('tpu_vm.sh', '--step', 'create,install,run,delete', '--name', 'ms', '--zone',
                  'z', '--accelerator-type', 'v5litepod-16', '--version', 'v2-alpha-tpuv5-lite',
                  '--slices', '2', '--source', str(REPO), '--config', 'configs/hg4.py',
                  '--workdir', 'gs://b/w', '--dry-run', '--no-compile-check',
                  env=sandbox['env'])
  assert result.returncode == 0, result.stderr
  commands = plus_commands(result.stdout)
  create = commands[0]
  assert create[:5] == ['gcloud', 'compute', 'tpus', 'queued-resources', 'create']
  assert flag_value(create, '--node-count') == '2' and flag_value(create, '--node-prefix') == 'ms'
  assert flag_value(create, '--runtime-version') == 'v2-alpha-tpuv5-lite'
  nodes = [c[5] for c in commands if c[:5] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh']]
  assert nodes == ['ms-0', 'ms-1'] * 3  # unpack, install, run: on every worker of both.
  assert commands[-1][:5] == ['gcloud', 'compute', 'tpus', 'queued-resources', 'delete']
  assert_nothing_ran(sandbox)


def test_tpu_bad_slice_count_is_a_usage_error(sandbox):
  result = launch('tpu_vm.sh', *TPU_BASE, '--step', 'delete', '--slices', '0',
                  env=sandbox['env'])
  assert result.returncode == 2 and '--slices' in result.stderr


def test_tpu_compile_check_needs_libtpu_else_says_so(sandbox):
  if tpu_program.check_libtpu() is None:
    pytest.skip('libtpu is installed here: the check would compile')
  env = dict(sandbox['env'], OKDHP_PYTHON=sys.executable)
  result = launch('tpu_vm.sh', *TPU_BASE, '--step', 'create', '--accelerator-type',
                  'v5litepod-4', '--config', 'configs/hg4.py', '--dry-run', env=env)
  assert result.returncode == 0, result.stderr
  assert 'compile check skipped' in result.stderr and 'tpu-aot' in result.stderr


@pytest.mark.skipif(tpu_program.check_libtpu() is not None, reason='needs the tpu-aot extra')
def test_tpu_dry_run_refuses_a_batch_that_does_not_divide(sandbox):
  env = dict(sandbox['env'], OKDHP_PYTHON=sys.executable)
  result = launch('tpu_vm.sh', *TPU_BASE, '--step', 'create,run', '--accelerator-type',
                  'v5litepod-4', '--config', 'configs/hg2_baseline.py:runlocal', '--workdir',
                  'gs://b/w', '--dry-run', '--', '--config.train.batch_size=6', env=env)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      'tpu_vm.sh: error: configs/hg2_baseline.py:runlocal: v5e:2x2 (4 chips): global batch 6 '
      'does not divide over 4 chips; use 4 or 8')
  assert not plus_commands(result.stdout)  # nothing printed to create or run.


# What tools/tpu_program --check writes when a batch does not fit: libtpu's notices and the
# search's lines on stderr, the verdict on stdout.
FAKE_TPU_PROGRAM = """#!/bin/bash
[[ "$1" == -c ]] && exit 0  # the launcher's 'import libtpu'
echo "ARGS $*" > "$OKDHP_TEST_OUT/tpu_program_args.txt"
echo 'W0000 00:00:1796667260 libtpu notice' >&2
echo '  batch 1024 (256 per chip): needs 31.22 GiB of temporaries per chip' >&2
echo '  batch 508 (127 per chip): fits, 15.84 GiB per chip (212 s)' >&2
echo 'configs/hg4.py: v5e:2x2 (4 chips): global batch 1024 needs 31.22 GiB; 508 fits'
exit 1
"""


def test_tpu_dry_run_shows_the_search_and_refuses_in_one_line(sandbox):
  """The compiles of the search for a batch that fits reach the user as they end; libtpu's
  notices do not; the refusal is the last line, and nothing is created."""
  _write_executable(sandbox['tmp'] / 'python_with_libtpu', FAKE_TPU_PROGRAM)
  env = dict(sandbox['env'], OKDHP_PYTHON=str(sandbox['tmp'] / 'python_with_libtpu'),
             OKDHP_TEST_OUT=str(sandbox['tmp']))
  result = launch('tpu_vm.sh', *TPU_BASE, '--step', 'create', '--accelerator-type',
                  'v5litepod-4', '--config', 'configs/hg4.py', '--dry-run', '--',
                  '--config.train.batch_size=1024', env=env)
  assert result.returncode == 1
  lines = result.stderr.strip().splitlines()
  assert lines[-3:] == [
      '  batch 1024 (256 per chip): needs 31.22 GiB of temporaries per chip',
      '  batch 508 (127 per chip): fits, 15.84 GiB per chip (212 s)',
      'tpu_vm.sh: error: configs/hg4.py: v5e:2x2 (4 chips): global batch 1024 needs 31.22 GiB; '
      '508 fits']
  assert 'libtpu notice' not in result.stderr
  args = (sandbox['tmp'] / 'tpu_program_args.txt').read_text()
  assert '--check --accelerator-type v5litepod-4' in args
  assert args.strip().endswith('--config.train.batch_size=1024')
  assert not plus_commands(result.stdout)


def test_tpu_install_from_git_and_background_run(sandbox):
  result = launch('tpu_vm.sh', '--step', 'install,run', '--name', 't', '--zone', 'z',
                  '--repo-url', 'https://example.com/okdhp_jax.git', '--ref', 'v1',
                  '--config', 'configs/hg2.py', '--workdir', 'gs://b/w', '--data', 'gs://b/recs',
                  '--background', '--dry-run', env=sandbox['env'])
  assert result.returncode == 0, result.stderr
  clone, install, train = [flag_value(c, '--command') for c in plus_commands(result.stdout)]
  assert 'git clone --depth 1 --branch v1 https://example.com/okdhp_jax.git' in clone
  assert "'jax[tpu]'" in install
  assert train.split(' && ', 1)[1].startswith('nohup ')
  assert '--config.data.records_dir=gs://b/recs ' in train
  assert train.endswith('< /dev/null &')
  assert_nothing_ran(sandbox)


# ---------------------------------------------------------------- gpu_node.sh

def test_gpu_node_install_and_run(sandbox):
  venv = sandbox['tmp'] / 'venv'
  result = launch('gpu_node.sh', '--step', 'all', '--gpus', '4', '--config', 'configs/hg4.py',
                  '--workdir', '/runs/hg4', '--data', '/data/mpii/', '--venv', str(venv),
                  '--dry-run', '--', '--config.train.batch_size=64', env=sandbox['env'])
  assert result.returncode == 0, result.stderr
  make_venv, upgrade_pip, install, train = plus_commands(result.stdout)
  assert make_venv == ['python3', '-m', 'venv', str(venv)]
  assert upgrade_pip[:4] == [f'{venv}/bin/python', '-m', 'pip', 'install']
  assert install == [f'{venv}/bin/python', '-m', 'pip', 'install', '-e', str(REPO), 'jax[cuda13]']
  assert train[:2] == ['env', 'CUDA_VISIBLE_DEVICES=0,1,2,3']
  assert train[2:] == [f'{venv}/bin/python', '-m', 'okdhp_jax.main', '--config', 'configs/hg4.py',
                       '--workdir', '/runs/hg4', '--config.data.records_dir=/data/mpii',
                       '--config.data.eval_annotations=/data/mpii/gt_valid.mat',
                       '--config.train.batch_size=64']
  assert not venv.exists()
  assert_nothing_ran(sandbox)

  # The printed run line, executed for real against a recording python, sets the GPUs.
  out = sandbox['tmp'] / 'out'
  out.mkdir()
  _write_executable(venv / 'bin/python', ARGV_RECORDER)
  subprocess.run(train, env=dict(os.environ, OKDHP_TEST_OUT=str(out)), check=True, timeout=30)
  seen_env, seen_argv = recorded(out, 'python_none.txt')
  assert seen_env['CUDA_VISIBLE_DEVICES'] == '0,1,2,3'
  assert seen_argv == train[3:]


def test_gpu_node_cuda12_install_only(sandbox):
  result = launch('gpu_node.sh', '--step', 'install', '--cuda', '12', '--dry-run',
                  env=sandbox['env'])
  assert result.returncode == 0, result.stderr
  assert plus_commands(result.stdout)[-1][-2:] == [str(REPO), 'jax[cuda12]']
  assert_nothing_ran(sandbox)


# ---------------------------------------------------------------- slurm.sh

def _sbatch_script(stdout: str) -> tuple[str, str]:
  """(path in the header, script text) from a slurm.sh dry run."""
  lines = stdout.splitlines()
  begin = next(i for i, l in enumerate(lines) if l.startswith('#### sbatch script '))
  end = lines.index('#### end of sbatch script')
  return lines[begin].removeprefix('#### sbatch script '), '\n'.join(lines[begin + 1:end]) + '\n'


def test_slurm_script_and_submission(sandbox):
  workdir = sandbox['tmp'] / 'runs/hg4'
  venv = sandbox['tmp'] / 'venv'
  result = launch('slurm.sh', '--nodes', '2', '--gpus-per-node', '4', '--partition', 'gpu',
                  '--time', '1-00:00:00', '--config', 'configs/hg4.py', '--workdir', str(workdir),
                  '--data', '/shared/mpii', '--venv', str(venv), '--dry-run',
                  '--', '--config.train.batch_size=128', env=sandbox['env'])
  assert result.returncode == 0, result.stderr
  script_path, script = _sbatch_script(result.stdout)
  assert script_path == f'{workdir}/slurm_job.sbatch'
  assert plus_commands(result.stdout) == [['mkdir', '-p', str(workdir)], ['sbatch', script_path]]
  directives = [l for l in script.splitlines() if l.startswith('#SBATCH ')]
  for expected in ('--nodes=2', '--ntasks-per-node=1', '--gpus-per-node=4', '--partition=gpu',
                   '--time=1-00:00:00', f'--output={workdir}/slurm-%j.out'):
    assert f'#SBATCH {expected}' in directives
  assert 'srun ' in script
  assert not workdir.exists()
  assert_nothing_ran(sandbox)
  subprocess.run(['bash', '-n'], input=script, text=True, check=True, timeout=30)

  # Run the job script on two fake nodes: a fake srun starts one task per node.
  out, job_bin = sandbox['tmp'] / 'out', sandbox['tmp'] / 'job_bin'
  out.mkdir()
  _write_executable(venv / 'bin/python', ARGV_RECORDER)
  _write_executable(job_bin / 'scontrol', '#!/bin/sh\nprintf "gpu-a07\\ngpu-b11\\n"\n')
  _write_executable(job_bin / 'srun', """#!/bin/bash
while [[ "$1" == --* ]]; do shift; done
for ((task = 0; task < SLURM_NNODES; task++)); do
  SLURM_PROCID=$task SLURM_LOCALID=0 "$@" || exit 1
done
""")
  job_env = dict(os.environ, PATH=f'{job_bin}:{os.environ["PATH"]}', OKDHP_TEST_OUT=str(out),
                 SLURM_JOB_ID='5000', SLURM_NNODES='2', SLURM_JOB_NODELIST='gpu-[a07,b11]')
  subprocess.run(['bash', '-c', script], env=job_env, check=True, timeout=30, capture_output=True)
  for process_id in (0, 1):
    seen_env, seen_argv = recorded(out, f'python_{process_id}.txt')
    assert seen_env['JAX_COORDINATOR_ADDRESS'] == f'gpu-a07:{61440 + 5000 % 4096}'
    assert seen_env['JAX_NUM_PROCESSES'] == '2'
    assert seen_env['JAX_PROCESS_ID'] == str(process_id)
    assert seen_env['JAX_LOCAL_DEVICE_IDS'] == '0,1,2,3'
    assert seen_argv == ['-m', 'okdhp_jax.main', '--config', 'configs/hg4.py',
                         '--workdir', str(workdir), '--config.data.records_dir=/shared/mpii',
                         '--config.data.eval_annotations=/shared/mpii/gt_valid.mat',
                         '--config.train.batch_size=128']


def test_slurm_fixed_port(sandbox):
  result = launch('slurm.sh', '--nodes', '1', '--gpus-per-node', '8', '--config', 'c.py',
                  '--workdir', str(sandbox['tmp'] / 'w'), '--port', '12345', '--dry-run',
                  env=sandbox['env'])
  assert result.returncode == 0, result.stderr
  _, script = _sbatch_script(result.stdout)
  assert 'export JAX_COORDINATOR_ADDRESS="${head_node}:12345"' in script
  assert 'export JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7' in script


# ---------------------------------------------------------------- without --dry-run

def test_real_runs_call_the_programs_they_print(sandbox):
  """Without --dry-run the same commands reach the (fake) programs, echoed to stderr."""
  (sandbox['tmp'] / 'fake_bin/mkdir').unlink()  # the real one, so the script can be written
  workdir = sandbox['tmp'] / 'w'
  slurm = launch('slurm.sh', '--nodes', '2', '--gpus-per-node', '4', '--config', 'c.py',
                 '--workdir', str(workdir), env=sandbox['env'])
  tpu = launch('tpu_vm.sh', '--step', 'delete', '--name', 't', '--zone', 'z', env=sandbox['env'])
  assert slurm.returncode == 0 and tpu.returncode == 0, (slurm.stderr, tpu.stderr)
  assert slurm.stdout == tpu.stdout == ''
  assert sandbox['marker'].read_text().splitlines() == [
      f'sbatch {workdir}/slurm_job.sbatch',
      'gcloud compute tpus tpu-vm delete t --zone=z --quiet']
  dry = launch('slurm.sh', '--nodes', '2', '--gpus-per-node', '4', '--config', 'c.py',
               '--workdir', str(workdir), '--dry-run', env=sandbox['env'])
  assert (workdir / 'slurm_job.sbatch').read_text() == _sbatch_script(dry.stdout)[1]
  assert f'+ sbatch {workdir}/slurm_job.sbatch' in slurm.stderr.splitlines()


# ---------------------------------------------------------------- errors and help

TPU_BASE = ('--name', 't', '--zone', 'z')


@pytest.mark.parametrize('script, args, option', [
    ('tpu_vm.sh', ('--zone', 'z', '--step', 'delete'), '--name'),
    ('tpu_vm.sh', ('--name', 't', '--step', 'delete'), '--zone'),
    ('tpu_vm.sh', TPU_BASE, '--step'),
    ('tpu_vm.sh', (*TPU_BASE, '--step', 'create'), '--accelerator-type'),
    ('tpu_vm.sh', (*TPU_BASE, '--step', 'install'), '--source or --repo-url'),
    ('tpu_vm.sh', (*TPU_BASE, '--step', 'copy-data'), '--bucket'),
    ('tpu_vm.sh', (*TPU_BASE, '--step', 'copy-data', '--bucket', '/local'), '--bucket'),
    ('tpu_vm.sh', (*TPU_BASE, '--step', 'run', '--workdir', 'w'), '--config'),
    ('tpu_vm.sh', (*TPU_BASE, '--step', 'run', '--config', 'c'), '--workdir'),
    ('tpu_vm.sh', (*TPU_BASE, '--step', 'reboot'), '--step'),
    ('tpu_vm.sh', (*TPU_BASE, '--step', 'delete', '--flavour', 'x'), '--flavour'),
    ('tpu_vm.sh', (*TPU_BASE, '--step', 'run,delete', '--config', 'c', '--workdir', 'w',
                   '--background'), '--background'),
    ('gpu_node.sh', ('--workdir', 'w'), '--config'),
    ('gpu_node.sh', ('--config', 'c'), '--workdir'),
    ('gpu_node.sh', ('--config', 'c', '--workdir', 'w', '--gpus', 'two'), '--gpus'),
    ('gpu_node.sh', ('--step', 'install', '--cuda', '11'), '--cuda'),
    ('slurm.sh', ('--gpus-per-node', '4', '--config', 'c', '--workdir', 'w'), '--nodes'),
    ('slurm.sh', ('--nodes', '2', '--config', 'c', '--workdir', 'w'), '--gpus-per-node'),
    ('slurm.sh', ('--nodes', '2', '--gpus-per-node', '4', '--workdir', 'w'), '--config'),
    ('slurm.sh', ('--nodes', '2', '--gpus-per-node', '4', '--config', 'c'), '--workdir'),
    ('slurm.sh', ('--nodes', '0', '--gpus-per-node', '4', '--config', 'c', '--workdir', 'w'),
     '--nodes'),
    ('slurm.sh', ('--nodes', '2', '--gpus-per-node', '4', '--config', 'c', '--workdir', 'w',
                  '--partition', 'a b'), '--partition'),
])
def test_bad_options_exit_2_naming_the_option(sandbox, script, args, option):
  result = launch(script, *args, '--dry-run', env=sandbox['env'], cwd=sandbox['tmp'])
  assert result.returncode == 2, (result.stdout, result.stderr)
  assert option in result.stderr
  assert not plus_commands(result.stdout)
  assert_nothing_ran(sandbox)


@pytest.mark.parametrize('script', ['tpu_vm.sh', 'gpu_node.sh', 'slurm.sh'])
def test_help(sandbox, script):
  result = launch(script, '--help', env=sandbox['env'])
  assert result.returncode == 0
  assert result.stdout.startswith('Usage: launch/') and '--dry-run' in result.stdout
  assert_nothing_ran(sandbox)
