r"""Does the method help here? Every variant of configs/study.py for S seeds, and the table.

  python -m okdhp_jax.tools.study --workdir /tmp/okdhp_study              # 5 variants x 3 seeds
  python -m okdhp_jax.tools.study --workdir DIR --seeds 5 --variants plain,balanced
  python -m okdhp_jax.tools.study --workdir DIR --set train.num_epochs=32  # any override, every run
  python -m okdhp_jax.tools.study --workdir DIR --report-only              # finished runs' table

Each run is the real program, `python -m okdhp_jax.main --config configs/study.py:variant=VARIANT
--workdir DIR/runs/VARIANT/seed_S --config.seed=S` (its log: DIR/runs/VARIANT/seed_S/main.log),
all on the records in DIR/records (built by the first run). FPD's student reads the export of
the teacher of its own seed, so `fpd` brings `fpd_teacher` with it, and FPD's cost and time
include its teacher's. Runs go seed by seed; a run that finished (DIR/runs/.../study_run.json
says so) is skipped, and an interrupted one resumes from its own checkpoints, so stopping and
rerunning the command loses at most the steps since a run's last checkpoint.

What the table holds, per variant, over seeds (mean +- sample standard deviation):
- student: branch 0 of the final evaluation (the target branch; fixed before training, since
  choosing the best branch on the held-out figures would select on the test set), PCKh@0.5
  Mean and Mean@0.1 on the held-out figures; ensemble: the FAU teacher (OKDHP only);
- train GMACs/img: multiply-accumulates of the forward passes one training image costs, summed
  over stages (okdhp_jax/models/stats.py). The paper's "training cost (GFLOPs)" column counts
  the same thing (its FPD 66 = 8-stack teacher training + 4-stack student + teacher forward);
- wall: minutes per seed of the run(s) as this tool timed them (start-up, compilation,
  training, evaluation and export; FPD with its teacher's run).
Then the FAU weights at the end: for each OKDHP seed, the final checkpoint's FAU weight of each
branch and joint, averaged over the held-out figures; its standard deviation over branches per
joint (0: the FAU weighs the branches equally) is averaged over seeds. WORKDIR/study.md gets
the tables, WORKDIR/study.png a plot (every seed's student and its mean +- std per variant).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time

VARIANTS = ('plain', 'balanced', 'unbalanced', 'fpd_teacher', 'fpd')
# What the table compares: the teacher is part of FPD, not a variant of its own.
TABLE_VARIANTS = ('plain', 'fpd', 'balanced', 'unbalanced')
LABELS = {'plain': 'plain student', 'fpd': 'FPD (teacher + student)',
          'balanced': 'OKDHP balanced', 'unbalanced': 'OKDHP unbalanced',
          'fpd_teacher': 'FPD teacher alone'}
RECORD = 'study_run.json'
STUDENT, ENSEMBLE = 'branch_0', 'ensemble'


@dataclasses.dataclass(frozen=True)
class Run:
  variant: str
  seed: int

  @property
  def name(self) -> str:
    return f'{self.variant} seed {self.seed}'

  def folder(self, workdir: str) -> str:
    return os.path.join(workdir, 'runs', self.variant, f'seed_{self.seed}')


class StudyError(Exception):
  """A run failed; the message names it and its log."""


def plan(variants: list[str], seeds: int) -> list[Run]:
  """Every run, seed by seed; FPD's teacher comes with FPD and before it."""
  unknown = [v for v in variants if v not in VARIANTS]
  if unknown:
    raise ValueError(f'unknown variants {unknown}; choose from {VARIANTS}')
  if seeds < 1:
    raise ValueError(f'--seeds must be at least 1, got {seeds}')
  wanted = set(variants) | ({'fpd_teacher'} if 'fpd' in variants else set())
  return [Run(v, s) for s in range(seeds) for v in VARIANTS if v in wanted]


def read_record(workdir: str, run: Run) -> dict:
  path = os.path.join(run.folder(workdir), RECORD)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def write_record(workdir: str, run: Run, record: dict) -> None:
  path = os.path.join(run.folder(workdir), RECORD)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + '.tmp', 'w') as f:
    json.dump(record, f, indent=2)
  os.replace(path + '.tmp', path)


def is_finished(workdir: str, run: Run) -> bool:
  return bool(read_record(workdir, run).get('finished'))


def pending(workdir: str, runs: list[Run]) -> list[Run]:
  """The runs still to do (a finished run is never trained again)."""
  return [run for run in runs if not is_finished(workdir, run)]


def config_spec(config: str, run: Run, runlocal: bool) -> str:
  return f'{config}:variant={run.variant}' + (',runlocal' if runlocal else '')


def run_overrides(workdir: str, run: Run, overrides: list[str]) -> list[str]:
  """The --config.* flags of one run: seed, shared records, FPD's teacher, then the user's."""
  records = os.path.join(workdir, 'records')
  flags = [f'--config.seed={run.seed}', f'--config.data.records_dir={records}',
           f'--config.data.eval_annotations={records}/gt_valid.mat']
  if run.variant == 'fpd':
    teacher = Run('fpd_teacher', run.seed).folder(workdir)
    flags.append(f'--config.fpd.teacher_checkpoint={os.path.join(teacher, "export")}')
  return flags + [f'--config.{o}' for o in overrides]


def main_command(workdir: str, run: Run, *, config: str, runlocal: bool,
                 overrides: list[str]) -> list[str]:
  return [sys.executable, '-m', 'okdhp_jax.main',
          f'--config={config_spec(config, run, runlocal)}',
          f'--workdir={run.folder(workdir)}', *run_overrides(workdir, run, overrides)]


def load_run_config(workdir: str, run: Run, *, config: str, runlocal: bool,
                    overrides: list[str]):
  """The run's config exactly as okdhp_jax.main parses it (same flags, same file)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  argv = ['study', f'--config={config_spec(config, run, runlocal)}',
          *run_overrides(workdir, run, overrides)]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'config', flag_values=values,
                                  lock_config=True, sys_argv=argv)
  values(argv)
  return values.config


# ---------------------------------------------------------------- measuring a finished run


def run_costs(config) -> dict[str, float]:
  """GMACs per image: the deployed student, and the forward passes one training image costs
  in this run (the training network, plus FPD's frozen teacher)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from okdhp_jax.data.meta import get_meta  # pylint: disable=g-import-not-at-top
  from okdhp_jax.models import (  # pylint: disable=g-import-not-at-top
      build_model, deployed_model_config, plain_hourglass_config)
  from okdhp_jax.models.stats import model_stats  # pylint: disable=g-import-not-at-top
  joints = get_meta(config.data.dataset).num_joints
  size = tuple(config.data.input_size)
  macs = lambda model_config: model_stats(
      build_model(ml_collections.ConfigDict(model_config), joints, size), (*size, 3)).macs / 1e9
  train = macs(config.model.to_dict())
  if config.method == 'fpd':
    # The study's teacher is its student's hourglass, deeper.
    train += macs(plain_hourglass_config(config.fpd.teacher_num_stacks,
                                         features=config.model.hourglass.features,
                                         depth=config.model.hourglass.depth))
  return {'student_gmacs': macs(deployed_model_config(config.model.to_dict(), 0)),
          'train_gmacs': train}


def final_evaluation(config, run_folder: str) -> dict:
  """The last evaluation of eval_results.json (the final step: no checkpoint is chosen):
  {'metrics': per-branch tables, 'fau_weights': [branches][joints] FAU weight averaged over the
  held-out figures, or None for a network without an FAU}."""
  with open(os.path.join(run_folder, 'eval_results.json')) as f:
    last = json.load(f)['history'][-1]
  weights = last.get('fau_weights') if config.model.fau != 'none' else None
  if config.model.fau != 'none' and weights is None:
    raise StudyError(f'{run_folder}/eval_results.json holds no FAU weights (a run trained by an '
                     'older version); delete that folder to train the run again')
  return {'metrics': last['metrics'], 'fau_weights': weights}


# ---------------------------------------------------------------- running


def execute(workdir: str, run: Run, command: list[str], *, say) -> float:
  """Runs one training to its end; returns its wall seconds (all attempts so far).

  The time of an interrupted attempt is kept, so a resumed run counts every attempt. Ctrl-C
  stops the run with SIGTERM, which makes it save a checkpoint first.
  """
  folder = run.folder(workdir)
  os.makedirs(folder, exist_ok=True)
  record = read_record(workdir, run)
  log_path = os.path.join(folder, 'main.log')
  start = time.perf_counter()
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)  # one device per run, whatever the caller's environment says.
  with open(log_path, 'a') as log:
    log.write(f'$ {" ".join(command)}\n')
    log.flush()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             bufsize=1, env=env)
    try:
      for line in child.stdout:
        log.write(line)
        if '| ETA ' in line and line.lstrip()[:1] == 'I':  # main's progress line.
          say(f'  {run.name}: {line.split("] ", 1)[-1].strip()}')
      code = child.wait()
    except BaseException:
      child.terminate()  # SIGTERM: main saves a checkpoint and exits.
      child.wait()
      raise
    finally:
      record['wall_s'] = record.get('wall_s', 0.0) + time.perf_counter() - start
      record['attempts'] = record.get('attempts', 0) + 1
      record.update(variant=run.variant, seed=run.seed, command=command)
      write_record(workdir, run, record)
  if code != 0:
    with open(log_path) as f:
      tail = ''.join(f.readlines()[-5:])
    raise StudyError(f'{run.name} failed (exit status {code}); its log: {log_path}\n{tail}')
  return record['wall_s']


def finish(workdir: str, run: Run, config) -> dict:
  """Measures a trained run and marks it finished."""
  folder = run.folder(workdir)
  record = read_record(workdir, run)
  record.update(**final_evaluation(config, folder), **run_costs(config), finished=True)
  write_record(workdir, run, record)
  return record


def estimated_cost(config) -> float:
  """Relative time of a run: training steps x training GMACs per image (for the ETA)."""
  return run_costs(config)['train_gmacs'] * config.train.num_epochs * (
      config.data.synthetic.num_train or 1)


def run_study(workdir: str, runs: list[Run], *, config: str = 'configs/study.py',
              runlocal: bool = False, overrides: list[str] | None = None,
              say=print) -> None:
  """Trains every run not finished yet, then writes the tables and the plot."""
  overrides = overrides or []
  todo = pending(workdir, runs)
  say(f'Study in {workdir}: {len(runs)} runs, {len(runs) - len(todo)} finished already, '
      f'{len(todo)} to train.')
  configs = {run: load_run_config(workdir, run, config=config, runlocal=runlocal,
                                  overrides=overrides) for run in todo}
  by_variant = {}  # a variant costs the same for every seed: count its MACs once.
  for run in todo:
    if run.variant not in by_variant:
      by_variant[run.variant] = estimated_cost(configs[run])
  weights = {run: by_variant[run.variant] for run in todo}
  done_weight, start = 0.0, time.perf_counter()
  for i, run in enumerate(todo):
    remaining = sum(weights[r] for r in todo[i:])
    elapsed = time.perf_counter() - start
    eta = elapsed / done_weight * remaining if done_weight else math.nan
    say(f'[run {i + 1}/{len(todo)}] {run.name} | elapsed {_clock(elapsed)} | '
        f'ETA {_clock(eta)}')
    command = main_command(workdir, run, config=config, runlocal=runlocal, overrides=overrides)
    wall = execute(workdir, run, command, say=say)
    record = finish(workdir, run, configs[run])
    done_weight += weights[run]
    student = record['metrics'][STUDENT]
    say(f'  {run.name}: student PCKh@0.5 {student["Mean"]:.2f}, Mean@0.1 '
        f'{student["Mean@0.1"]:.2f} ({wall / 60:.1f} min)')
  say(f'All runs finished in {_clock(time.perf_counter() - start)}.')


def _clock(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  return time.strftime('%H:%M:%S', time.gmtime(seconds))


# ---------------------------------------------------------------- the table


def mean_std(values: list[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (n - 1; nan for one value)."""
  n = len(values)
  mean = sum(values) / n
  std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
  return mean, std


def _pm(values: list[float], digits: int = 2) -> str:
  if not values:
    return '-'
  mean, std = mean_std(values)
  return f'{mean:.{digits}f}' if math.isnan(std) else f'{mean:.{digits}f} +- {std:.{digits}f}'


def collect(workdir: str, runs: list[Run]) -> dict[str, list[dict]]:
  """{variant: finished records, by seed}; FPD's records carry their teacher's cost and time."""
  records = {}
  for run in runs:
    record = read_record(workdir, run)
    if record.get('finished'):
      records.setdefault(run.variant, []).append(record)
  teachers = {r['seed']: r for r in records.get('fpd_teacher', [])}
  for record in records.get('fpd', []):
    teacher = teachers.get(record['seed'])
    record['teacher_wall_s'] = teacher['wall_s'] if teacher else math.nan
    record['teacher_gmacs'] = teacher['train_gmacs'] if teacher else math.nan
  return records


def results_table(records: dict[str, list[dict]]) -> str:
  """The headline table: student and ensemble scores, cost, time; one row per variant."""
  lines = ['| method | seeds | student PCKh@0.5 | student Mean@0.1 | ensemble PCKh@0.5 | '
           'ensemble Mean@0.1 | train GMACs/img | student GMACs | wall min/seed |',
           '|---|---|---|---|---|---|---|---|---|']
  for variant in [*TABLE_VARIANTS, 'fpd_teacher']:
    rows = records.get(variant, [])
    if not rows:
      continue
    okdhp = rows[0].get('fau_weights') is not None
    student = [r['metrics'][STUDENT] for r in rows]
    ensemble = [r['metrics'][ENSEMBLE] for r in rows] if okdhp else []
    extra = lambda r, key: r.get(key, 0.0) if variant == 'fpd' else 0.0
    cost = [r['train_gmacs'] + extra(r, 'teacher_gmacs') for r in rows]
    wall = [(r['wall_s'] + extra(r, 'teacher_wall_s')) / 60 for r in rows]
    lines.append(
        f'| {LABELS[variant]} | {len(rows)} | {_pm([m["Mean"] for m in student])} | '
        f'{_pm([m["Mean@0.1"] for m in student])} | {_pm([m["Mean"] for m in ensemble])} | '
        f'{_pm([m["Mean@0.1"] for m in ensemble])} | {sum(cost) / len(cost):.4f} | '
        f'{rows[0]["student_gmacs"]:.4f} | {_pm(wall, 1)} |')
  return '\n'.join(lines)


def joints_table(records: dict[str, list[dict]]) -> str:
  """The paper's per-joint PCKh@0.5 of the student (mean over seeds)."""
  from okdhp_jax.evaluation import pckh  # pylint: disable=g-import-not-at-top
  columns = pckh.TABLE_KEYS[:-1]
  lines = ['| method | ' + ' | '.join(pckh.SHORT_HEADERS.get(c, c) for c in columns) + ' |',
           '|---|' + '---|' * len(columns)]
  for variant in TABLE_VARIANTS:
    rows = records.get(variant, [])
    if rows:
      cells = [f'{mean_std([r["metrics"][STUDENT][c] for r in rows])[0]:.2f}' for c in columns]
      lines.append(f'| {LABELS[variant]} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def fau_spread(records: list[dict]) -> tuple[list[float], list[list[float]]]:
  """(per joint: std over branches of the mean FAU weight, averaged over seeds;
  [branches][joints] mean weight averaged over seeds)."""
  weights = [r['fau_weights'] for r in records]
  branches, joints = len(weights[0]), len(weights[0][0])
  spread = [sum(mean_std_population([w[b][j] for b in range(branches)]) for w in weights)
            / len(weights) for j in range(joints)]
  mean = [[sum(w[b][j] for w in weights) / len(weights) for j in range(joints)]
          for b in range(branches)]
  return spread, mean


def mean_std_population(values: list[float]) -> float:
  mean = sum(values) / len(values)
  return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def fau_table(records: dict[str, list[dict]], joint_names: list[str]) -> str:
  variants = [v for v in TABLE_VARIANTS if records.get(v) and records[v][0].get('fau_weights')]
  if not variants:
    return ''
  header = '| joint | ' + ' | '.join(
      f'{LABELS[v]}: std over branches | {LABELS[v]}: weight per branch' for v in variants) + ' |'
  lines = [header, '|---|' + '---|---|' * len(variants)]
  spreads = {v: fau_spread(records[v]) for v in variants}
  for j, name in enumerate(joint_names):
    cells = []
    for v in variants:
      spread, mean = spreads[v]
      cells += [f'{spread[j]:.3f}', ' / '.join(f'{mean[b][j]:.2f}' for b in range(len(mean)))]
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def report(workdir: str, runs: list[Run], *, joint_names: list[str] | None = None) -> str:
  """The tables as markdown; written to WORKDIR/study.md, with the plot in WORKDIR/study.png."""
  records = collect(workdir, runs)
  if not records:
    return 'No run has finished yet.'
  if joint_names is None:
    from okdhp_jax.data.meta import MPII  # pylint: disable=g-import-not-at-top
    joint_names = list(MPII.joint_names)
  seeds = sorted({r['seed'] for rows in records.values() for r in rows})
  parts = [
      f'## Study results ({workdir})',
      '',
      f'Held-out figures, final step; mean +- std over seeds {seeds} (sample std); student = '
      'branch 0; train GMACs/img = forward MACs per training image over all stages; wall = '
      'minutes per seed, FPD with its teacher.',
      '',
      results_table(records),
      '',
      'Student PCKh@0.5 per joint (mean over seeds):',
      '',
      joints_table(records),
  ]
  fau = fau_table(records, joint_names)
  if fau:
    parts += ['', 'FAU weights at the end (final checkpoint, mean over the held-out figures; '
              'std over branches per joint, averaged over seeds; weights averaged over seeds, '
              'branch 0 first):', '', fau]
  text = '\n'.join(parts) + '\n'
  with open(os.path.join(workdir, 'study.md'), 'w') as f:
    f.write(text)
  plot(records, os.path.join(workdir, 'study.png'))
  return text


def plot(records: dict[str, list[dict]], path: str) -> None:
  """Student PCKh@0.5 of every seed (dots) and the mean +- std (bar) per variant, with the
  ensemble (hollow) for OKDHP; wall minutes per seed on the right (FPD: teacher hatched)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  variants = [v for v in TABLE_VARIANTS if records.get(v)]
  short = {'plain': 'plain', 'fpd': 'FPD', 'balanced': 'OKDHP\nbalanced',
           'unbalanced': 'OKDHP\nunbalanced'}
  figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4),
                                       gridspec_kw={'width_ratios': [2, 1]})
  for x, variant in enumerate(variants):
    rows, colour = records[variant], f'C{TABLE_VARIANTS.index(variant)}'
    for key, offset, style in ((STUDENT, -0.1, 'o'), (ENSEMBLE, 0.1, 'D')):
      if key == ENSEMBLE and rows[0].get('fau_weights') is None:
        continue
      values = [r['metrics'][key]['Mean'] for r in rows]
      mean, std = mean_std(values)
      filled = key == STUDENT
      left.errorbar(x + offset, mean, yerr=0 if math.isnan(std) else std, fmt='_', color='k',
                    capsize=6, markersize=14)
      left.scatter([x + offset] * len(values), values, marker=style,
                   facecolors=colour if filled else 'none', edgecolors=colour)
    own = sum(r['wall_s'] for r in rows) / len(rows) / 60
    teacher = (sum(r.get('teacher_wall_s', 0.0) for r in rows) / len(rows) / 60
               if variant == 'fpd' else 0.0)
    right.bar(x, own, color=colour)
    if teacher:
      right.bar(x, teacher, bottom=own, color=colour, hatch='//', alpha=0.5,
                label='FPD teacher')
  for axis in (left, right):
    axis.set_xticks(range(len(variants)))
    axis.set_xticklabels([short[v] for v in variants], fontsize=9)
  left.set_ylabel('PCKh@0.5 on held-out figures (%)')
  left.set_title('student (filled) and ensemble (hollow): each seed, mean \u00b1 std',
                 fontsize=10)
  right.set_ylabel('wall minutes per seed')
  right.set_title('training time', fontsize=10)
  if any(v == 'fpd' for v in variants):
    right.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True, help='where runs, study.md and study.png go')
  parser.add_argument('--seeds', type=int, default=3, help='seeds 0..S-1 of every variant')
  parser.add_argument('--variants', default=','.join(VARIANTS),
                      help=f'comma-separated, of {",".join(VARIANTS)}')
  parser.add_argument('--config', default='configs/study.py', help='the config family')
  parser.add_argument('--runlocal', action='store_true',
                      help='configs/study.py:variant=VARIANT,runlocal: a few steps on a small set')
  parser.add_argument('--set', action='append', default=[], metavar='FIELD=VALUE',
                      dest='overrides',
                      help='a config override for every run, e.g. train.num_epochs=16')
  parser.add_argument('--report-only', '--report_only', dest='report_only',
                      action='store_true', help='print the table of the finished runs only')
  args = parser.parse_args(argv)
  try:
    runs = plan([v.strip() for v in args.variants.split(',') if v.strip()], args.seeds)
  except ValueError as error:
    parser.error(str(error))
  workdir = os.path.abspath(args.workdir)
  os.makedirs(workdir, exist_ok=True)
  try:
    if not args.report_only:
      run_study(workdir, runs, config=args.config, runlocal=args.runlocal,
                overrides=args.overrides, say=lambda text: print(text, flush=True))
  except StudyError as error:
    print(f'error: {error}', file=sys.stderr)
    print(report(workdir, runs))
    return 1
  except KeyboardInterrupt:
    print('Stopped; rerun the same command to resume (finished runs are kept).',
          file=sys.stderr)
    return 130
  print(report(workdir, runs))
  print(f'Tables: {os.path.join(workdir, "study.md")}; plot: {os.path.join(workdir, "study.png")}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
