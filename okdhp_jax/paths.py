"""Workdir and export paths that may live on a local disk or in a bucket (gs://...)."""

from __future__ import annotations

import os

from etils import epath


def resolve(path: str | os.PathLike) -> epath.Path:
  """Local paths made absolute; cloud paths (gs://...) kept as they are.

  Every host of a multi-host slice must name the same folder, so a bucket path is never
  rewritten; a local one is made absolute so that logs and messages say where files went.
  """
  text = os.fspath(path)
  return epath.Path(text if '://' in text else os.path.abspath(text))
