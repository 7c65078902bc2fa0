"""The study (issue 15): its hard figures, its config family, its table and its resuming."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import study as study_configs
from data_prep import bundled
from data_prep import synthetic
from main_runs import ROOT, clean_env
from okdhp_jax.evaluation import pckh
from okdhp_jax.models import deployed_model_config
from okdhp_jax.tools import study

HARD = synthetic.Difficulty(num_figures=3, occluders=2, occluder_prob=0.4, background_shapes=10,
                            lean_std=25.0, height_range=(0.35, 0.95))
# Joints at the end of a limb, and the colours of the limbs that meet there.
LIMB_COLOURS = {}
for _a, _b, _, _colour in synthetic.LIMBS:
  LIMB_COLOURS.setdefault(_a, []).append(_colour)
  LIMB_COLOURS.setdefault(_b, []).append(_colour)


def _inside(joints, size):
  return np.all((joints >= 0) & (joints <= size - 1), axis=1)


def test_default_difficulty_draws_the_original_figures():
  assert synthetic.Difficulty().changed() == {}
  plain, head = synthetic.figure_example(3, 5, 96)
  same, same_head = synthetic.figure_example(3, 5, 96, difficulty=synthetic.Difficulty())
  assert plain.image_bytes == same.image_bytes and np.array_equal(head, same_head)
  assert HARD.changed() == {'num_figures': 3, 'occluders': 2, 'occluder_prob': 0.4,
                            'background_shapes': 10, 'lean_std': 25.0,
                            'height_range': [0.35, 0.95]}
  with pytest.raises(ValueError, match='num_figures'):
    synthetic.Difficulty(num_figures=0)


def test_hard_figures_are_drawn_where_their_joints_say():
  """Every visible limb joint of the labelled figure shows its own limb's colour, distractors,
  occluders and busy backgrounds notwithstanding; hidden joints are common."""
  shown = visible = hidden = in_frame = 0
  for i in range(30):
    image, joints, vis, _ = synthetic.render(np.random.default_rng([9, i]), 128, True, HARD)
    # The target's pose comes first from the generator, whatever else the image holds.
    pose, _ = synthetic.make_pose(np.random.default_rng([9, i]), 128, HARD)
    np.testing.assert_array_equal(joints, pose)
    assert np.all(vis[~_inside(joints, 128)] == 0)
    for joint, colours in LIMB_COLOURS.items():
      x, y = np.round(joints[joint]).astype(int)
      if not (0 <= x < 128 and 0 <= y < 128):
        continue
      in_frame += 1
      if not vis[joint]:
        hidden += 1
        continue
      visible += 1
      # Colours are jittered by at most 25 per channel (43 in RGB distance).
      shown += min(np.linalg.norm(image[y, x] - np.array(c, float)) for c in colours) < 75
  assert shown >= 0.93 * visible
  assert 0.05 * in_frame < hidden < 0.4 * in_frame


def test_several_figures_and_a_distractor_in_front_hides_joints():
  size, seeds = 128, range(25)
  def render(**knobs):
    return [synthetic.render(np.random.default_rng([4, i]), size, False,
                             synthetic.Difficulty(**knobs)) for i in seeds]
  alone, behind, in_front = render(), render(num_figures=3, front_prob=0.0), render(
      num_figures=3, front_prob=1.0)
  for (image_1, joints_1, vis_1, _), (image_3, joints_3, vis_3, _) in zip(alone, behind):
    np.testing.assert_array_equal(joints_1, joints_3)  # the same labelled figure...
    background = image_1[0, 0]
    painted = lambda image: int(np.any(image != background, axis=-1).sum())
    assert painted(image_3) > painted(image_1)  # ...with more figures around it,
    # and figures behind it hide nothing: only the frame does.
    np.testing.assert_array_equal(vis_3, _inside(joints_3, size).astype(np.float32))
  hidden_in_front = np.mean([1 - v.mean() for _, _, v, _ in in_front])
  hidden_behind = np.mean([1 - v.mean() for _, _, v, _ in behind])
  assert hidden_in_front > hidden_behind + 0.1


def test_a_figure_covers_its_own_joints():
  """The mask that hides joints covers every joint of the figure painted into it, nothing far."""
  from PIL import Image, ImageDraw
  rng = np.random.default_rng(0)
  joints, unit = synthetic.make_pose(rng, 128)
  mask = Image.new('L', (128, 128), 0)
  synthetic._paint(ImageDraw.Draw(mask), synthetic._figure_shapes(rng, joints, unit), fill=255)
  inside = _inside(joints, 128)
  assert synthetic._covered(mask, joints)[inside].all()
  far = np.array([[2.0, 2.0]] * 16) if joints[:, 0].min() > 20 else np.array([[125.0, 2.0]] * 16)
  assert not synthetic._covered(mask, far).any()


def test_hard_records_are_built_once_and_remember_their_difficulty(tmp_path):
  knobs = dict(HARD.changed(), height_range=(0.35, 0.95))
  out = bundled.prepare_synthetic(str(tmp_path / 'hard'), num_train=6, num_valid=2,
                                  image_size=64, clutter=True, **knobs)
  info = json.loads((tmp_path / 'hard' / 'dataset_info.json').read_text())
  assert info['bundled']['difficulty'] == HARD.changed()
  assert info['difficulty'] == HARD.changed() and info['splits'] == {'train': 6, 'valid': 2}
  stamp = os.path.getmtime(os.path.join(out, 'dataset_info.json'))
  bundled.prepare_synthetic(out, num_train=6, num_valid=2, image_size=64, clutter=True, **knobs)
  assert os.path.getmtime(os.path.join(out, 'dataset_info.json')) == stamp
  # The default knobs leave the parameters as they were before the knobs existed.
  plain = bundled.prepare_synthetic(str(tmp_path / 'plain'), num_train=2, num_valid=1,
                                    image_size=64, clutter=False,
                                    **{k: getattr(synthetic.Difficulty(), k)
                                       for k in synthetic.DIFFICULTY_FIELDS})
  info = json.loads((tmp_path / 'plain' / 'dataset_info.json').read_text())
  assert 'difficulty' not in info['bundled'] and 'difficulty' not in info
  assert plain
  # The converter's flags set the same knobs.
  assert synthetic.main(['--out', str(tmp_path / 'cli'), '--num', '2', '--num-valid', '1',
                         '--size', '64', '--figures', '3', '--occluders', '2',
                         '--height-range', '0.3', '0.9']) == 0
  info = json.loads((tmp_path / 'cli' / 'dataset_info.json').read_text())
  assert info['difficulty'] == {'num_figures': 3, 'occluders': 2, 'height_range': [0.3, 0.9]}


def test_every_variant_trains_the_same_student_for_the_same_updates():
  configs = {v: study_configs.get_config(f'variant={v}') for v in study_configs.VARIANTS}
  student = deployed_model_config(configs['plain'].model.to_dict(), 0)
  for variant, config in configs.items():
    assert config.data.synthetic.to_dict() == configs['plain'].data.synthetic.to_dict()
    assert (config.train.batch_size, config.train.num_epochs) == (8, 8)
    assert config.optim.to_dict() == configs['plain'].optim.to_dict()
    assert config.export.branch == 0
    if variant != 'fpd_teacher':
      assert deployed_model_config(config.model.to_dict(), 0) == student, variant
  assert student['hourglass']['branch_stacks'] == (2,)
  assert student['hourglass']['num_shared_stacks'] == 0
  assert tuple(configs['balanced'].model.hourglass.branch_stacks) == (1, 1, 1)
  assert configs['balanced'].model.hourglass.num_shared_stacks == 1
  assert tuple(configs['unbalanced'].model.hourglass.branch_stacks) == (1, 2, 3)
  assert tuple(configs['fpd_teacher'].model.hourglass.branch_stacks) == (4,)
  assert configs['fpd'].method == 'fpd' and configs['fpd'].fpd.teacher_num_stacks == 4
  assert configs['plain'].model.fau == 'none' and configs['plain'].loss.kd_weight == 0
  with pytest.raises(ValueError, match=r"variant=okddip: choose one of \('plain'"):
    study_configs.get_config('variant=okddip')
  with pytest.raises(ValueError, match=r"config argument 'plain': expected one of"):
    study_configs.get_config('plain')


def _record(variant, seed, student, ensemble=None, fau=None, wall=60.0, gmacs=0.01):
  return {'variant': variant, 'seed': seed, 'finished': True, 'wall_s': wall,
          'train_gmacs': gmacs, 'student_gmacs': 0.01, 'fau_weights': fau,
          'metrics': {'branch_0': _pckh_table(student),
                      'ensemble': _pckh_table(ensemble or student)}}


def _pckh_table(mean):
  """A table as okdhp_jax.evaluation.pckh writes it: every group at `mean`, Mean@0.1 a tenth."""
  return {**{key: mean for key in pckh.TABLE_KEYS}, 'Mean@0.1': mean / 10}


def test_mean_and_std_over_seeds():
  values = [50.0, 52.0, 57.0]
  mean, std = study.mean_std(values)
  assert mean == pytest.approx(np.mean(values)) and std == pytest.approx(np.std(values, ddof=1))
  assert math.isnan(study.mean_std([3.0])[1])
  assert study._pm([50.0, 52.0, 54.0]) == '52.00 +- 2.00'
  # FAU spread: std over branches (population) per joint, averaged over seeds.
  records = [{'fau_weights': [[0.5, 1 / 3], [0.25, 1 / 3], [0.25, 1 / 3]]},
             {'fau_weights': [[0.7, 1 / 3], [0.2, 1 / 3], [0.1, 1 / 3]]}]
  spread, mean_weights = study.fau_spread(records)
  expected = (np.std([0.5, 0.25, 0.25]) + np.std([0.7, 0.2, 0.1])) / 2
  assert spread[0] == pytest.approx(expected) and spread[1] == pytest.approx(0.0)
  assert mean_weights[0][0] == pytest.approx(0.6)


def _finished_study(workdir, runs):
  scores = {'plain': [50.0, 52.0, 54.0], 'balanced': [55.0, 56.0, 60.0],
            'unbalanced': [58.0, 58.0, 58.0], 'fpd_teacher': [61.0, 62.0, 63.0],
            'fpd': [51.0, 53.0, 55.0]}
  fau = [[0.5] * 16, [0.3] * 16, [0.2] * 16]
  for run in runs:
    okdhp = run.variant in ('balanced', 'unbalanced')
    study.write_record(str(workdir), run, _record(
        run.variant, run.seed, scores[run.variant][run.seed], ensemble=70.0 if okdhp else None,
        fau=fau if okdhp else None, wall=120.0 if run.variant == 'fpd_teacher' else 60.0,
        gmacs=0.02 if run.variant == 'fpd_teacher' else 0.01))


def test_resume_skips_finished_runs_and_the_table_is_right(tmp_path):
  runs = study.plan(['plain', 'balanced', 'unbalanced', 'fpd'], 3)
  assert [r.variant for r in runs[:5]] == ['plain', 'balanced', 'unbalanced', 'fpd_teacher',
                                           'fpd']  # the teacher comes with FPD, before it.
  assert len(runs) == 15 and {r.seed for r in runs} == {0, 1, 2}
  _finished_study(tmp_path, runs[:7])
  study.write_record(str(tmp_path), runs[7], {'wall_s': 5.0, 'attempts': 1})  # interrupted.
  assert study.pending(str(tmp_path), runs) == runs[7:]
  _finished_study(tmp_path, runs)
  said = []
  study.run_study(str(tmp_path), runs, say=said.append)  # nothing left: nothing runs.
  assert said[0].endswith('15 finished already, 0 to train.')
  text = study.report(str(tmp_path), runs)
  rows = {line.split(' | ')[0][2:]: line.split(' | ') for line in text.splitlines()
          if line.startswith('| ') and ' | 3 | ' in line}
  assert rows['plain student'][2] == '52.00 +- 2.00'
  assert rows['OKDHP balanced'][2] == '57.00 +- 2.65'
  assert rows['OKDHP balanced'][3] == '5.70 +- 0.26'
  assert rows['OKDHP balanced'][4] == '70.00 +- 0.00'
  assert '| OKDHP balanced | 57.00 | 57.00 |' in text  # the per-joint table.
  assert rows['plain student'][4] == '-'  # no ensemble without branches.
  # FPD's cost and time include its teacher's: 0.01 + 0.02 GMACs, 1 + 2 minutes.
  assert rows['FPD (teacher + student)'][6] == '0.0300'
  assert rows['FPD (teacher + student)'][8].startswith('3.0')
  assert '| r_ankle | 0.125 | 0.50 / 0.30 / 0.20 |' in text  # std of (.5, .3, .2) = 0.125.
  assert (tmp_path / 'study.md').read_text() == text
  assert (tmp_path / 'study.png').stat().st_size > 10_000


def test_the_tool_refuses_unknown_variants(capsys):
  with pytest.raises(SystemExit):
    study.main(['--workdir', '/tmp/unused', '--variants', 'plain,okd'])
  assert 'unknown variants' in capsys.readouterr().err


# ml_collections loads config files with the deprecated load_module(), as main does.
@pytest.mark.filterwarnings('ignore:the load_module:DeprecationWarning')
def test_fpd_trains_its_teacher_first_and_reads_the_teachers_export(tmp_path):
  """The FPD student's config points at the export its teacher's run writes (main exports to
  WORKDIR/export), and the teacher is planned before it, seed by seed."""
  runs = study.plan(['fpd'], 2)
  assert [r.name for r in runs] == ['fpd_teacher seed 0', 'fpd seed 0', 'fpd_teacher seed 1',
                                    'fpd seed 1']
  workdir = str(tmp_path)
  student = study.load_run_config(workdir, runs[3], config='configs/study.py', runlocal=True,
                                  overrides=['model.hourglass.features=8'])
  teacher = study.load_run_config(workdir, runs[2], config='configs/study.py', runlocal=True,
                                  overrides=[])
  assert student.fpd.teacher_checkpoint == os.path.join(runs[2].folder(workdir), 'export')
  assert (student.seed, student.model.hourglass.features, teacher.seed) == (1, 8, 1)
  assert student.method == 'fpd' and teacher.method == 'okdhp' and 'fpd' not in teacher
  assert student.data.records_dir == teacher.data.records_dir == f'{workdir}/records'
  command = study.main_command(workdir, runs[3], config='configs/study.py', runlocal=True,
                               overrides=[])
  assert command[1:3] == ['-m', 'okdhp_jax.main']
  assert '--config=configs/study.py:variant=fpd,runlocal' in command


@pytest.mark.slow
def test_the_tool_trains_a_variant_and_resumes(tmp_path):
  """End to end on a few steps: OKDHP balanced, one seed, then again: the second call finds the
  run finished and only prints the table. (FPD's teacher-then-student order is checked above
  without training; tests/test_method_fpd.py trains from an exported teacher.)"""
  command = [sys.executable, '-m', 'okdhp_jax.tools.study', '--workdir', str(tmp_path),
             '--seeds', '1', '--variants', 'balanced', '--runlocal',
             '--set', 'model.hourglass.features=8', '--set', 'model.hourglass.depth=1',
             '--set', 'data.synthetic.num_train=32', '--set', 'data.synthetic.num_valid=8']
  first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env=clean_env())
  assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
  assert '1 to train' in first.stdout and '[run 1/1] balanced seed 0' in first.stdout
  record = json.loads((tmp_path / 'runs' / 'balanced' / 'seed_0' / 'study_run.json').read_text())
  weights = np.array(record['fau_weights'])
  assert weights.shape == (3, 16)
  np.testing.assert_allclose(weights.sum(0), 1.0, atol=1e-4)
  assert record['finished'] and record['attempts'] == 1 and record['wall_s'] > 0
  again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=clean_env())
  assert again.returncode == 0 and '1 finished already, 0 to train.' in again.stdout
  assert '| OKDHP balanced | 1 |' in again.stdout and (tmp_path / 'study.png').exists()
