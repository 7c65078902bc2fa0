"""What reaches the console during a run, and where the rest goes.

The console shows the progress lines and one line per problem. Two sources would flood it:
Orbax logs every file it writes, and when a checkpoint write fails (a full disk) each of its
background threads logs the error with a traceback and TensorStore's callbacks raise
'Event loop is closed' into `sys.unraisablehook`, and asyncio reports every failed write task
(hundreds of tracebacks for one failure). Those go to WORKDIR/background_errors.log instead; the error that stops the run says where it is.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

BACKGROUND_LOG = 'background_errors.log'


def _from_orbax(record: logging.LogRecord) -> bool:
  return f'{os.sep}orbax{os.sep}' in record.pathname


def _background(record: logging.LogRecord) -> bool:
  """Orbax's errors, and asyncio's 'exception was never retrieved' for Orbax's failed writes."""
  return record.levelno >= logging.ERROR and (_from_orbax(record) or record.name == 'asyncio')


def console_filter(record: logging.LogRecord) -> bool:
  """Keeps Orbax's file-by-file INFO lines, its background-thread errors and JAX's backend
  probing off the console.

  Also Orbax's 'Waiting for previous save' warning: the loop saves at every evaluation, and
  waiting a few seconds for the previous asynchronous save is expected, not a fault (the
  progress line's img/s shows what it costs). Orbax's other warnings stay.
  """
  if _background(record):
    return False
  if _from_orbax(record):
    return (record.levelno == logging.WARNING
            and 'Waiting for previous save' not in record.getMessage())
  return not record.getMessage().startswith('Unable to initialize backend')


class _QuietFileHandler(logging.FileHandler):
  """A file handler that drops what it cannot write: the disk it writes to may be the full one,
  and logging's own error report would be one more traceback on the console."""

  def handleError(self, record: logging.LogRecord) -> None:
    del record


class BackgroundErrors:
  """Collects Orbax's error records and unraisable exceptions in WORKDIR/background_errors.log.

  The file is only created when something is written to it.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, BACKGROUND_LOG)
    self.count = 0
    self.handler = _QuietFileHandler(self.path, delay=True)
    self.handler.setLevel(logging.ERROR)
    self.handler.addFilter(_background)
    self.handler.setFormatter(logging.Formatter('%(asctime)s %(threadName)s %(message)s'))
    self._previous_hook = None

  def install(self, logger: logging.Logger) -> 'BackgroundErrors':
    logger.addHandler(self.handler)
    self._previous_hook = sys.unraisablehook
    sys.unraisablehook = self._unraisable
    return self

  def _unraisable(self, unraisable) -> None:
    self.count += 1
    try:
      with open(self.path, 'a') as f:
        f.write(f'unraisable exception ({unraisable.err_msg or "in a callback"}):\n')
        f.write(''.join(traceback.format_exception(
            unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback)))
    except OSError:  # the disk may be what is full: drop it rather than raise from a hook.
      pass

  def note(self) -> str:
    """' (background errors: PATH)' when anything was collected, else ''."""
    written = self.count or (os.path.exists(self.path) and os.path.getsize(self.path) > 0)
    return f' (background errors: {self.path})' if written else ''
