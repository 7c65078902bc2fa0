"""A non-editable install carries the bundled samples the README's first command converts."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from main_runs import ROOT, clean_env


@pytest.mark.slow
def test_wheel_holds_the_samples_and_finds_them_installed(tmp_path):
  # Built from a copy: setuptools writes build/ and *.egg-info/ into the source folder.
  source = tmp_path / 'source'
  shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
      '.git', 'build', '*.egg-info', '__pycache__', '.pytest_cache'))
  build = subprocess.run(
      [sys.executable, '-m', 'pip', 'wheel', '--quiet', '--no-deps', '--no-build-isolation',
       '--wheel-dir', str(tmp_path / 'wheel'), str(source)],
      capture_output=True, text=True, timeout=300, env=clean_env())
  assert build.returncode == 0, build.stderr[-3000:]
  (wheel,) = glob.glob(str(tmp_path / 'wheel' / '*.whl'))
  names = set(zipfile.ZipFile(wheel).namelist())
  samples = sorted(os.path.relpath(path, ROOT) for path in glob.glob(
      os.path.join(ROOT, 'data_prep', 'samples', '**', '*.*'), recursive=True))
  assert samples and not set(samples) - names
  assert not any(name.startswith('tests/') for name in names)
  # Installed elsewhere and imported from outside the checkout, data_prep finds its samples.
  site = tmp_path / 'site'
  subprocess.run([sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps', '--target',
                  str(site), wheel], check=True, capture_output=True, timeout=300)
  probe = subprocess.run(
      [sys.executable, '-c', 'import os, data_prep.bundled as b; print(b.SAMPLES_DIR); '
       'print(os.path.exists(os.path.join(b.SAMPLES_DIR, "mpii", "gt_valid_first5.mat")))'],
      cwd=str(tmp_path), capture_output=True, text=True, timeout=120,
      env=dict(clean_env(), PYTHONPATH=str(site)))
  assert probe.returncode == 0, probe.stderr[-2000:]
  location, found = probe.stdout.split()
  assert location.startswith(str(site)) and found == 'True'
