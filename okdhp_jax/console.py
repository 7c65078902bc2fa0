"""What reaches the console during a run, and where the rest goes.

The console shows the progress lines and one line per problem. Two sources would flood it:
Orbax logs every file it writes, and when a checkpoint write fails (a full disk) each of its
background threads logs the error with a traceback and TensorStore's callbacks raise
'Event loop is closed' into `sys.unraisablehook`, and asyncio reports every failed write task
(hundreds of tracebacks for one failure). Those go to WORKDIR/background_errors.log instead; the error that stops the run says where it is.

Nothing here may raise: a handler or hook that raises inside a background thread kills that
thread before it resolves its future, and the main thread then waits for it forever.
`check_writable` turns an output folder that cannot be written into one line before the run
starts.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
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
  try:
    if _background(record):
      return False
    if _from_orbax(record):
      return (record.levelno == logging.WARNING
              and 'Waiting for previous save' not in record.getMessage())
    return not record.getMessage().startswith('Unable to initialize backend')
  except Exception:  # pylint: disable=broad-except  (a record whose arguments do not format)
    return True


class _QuietFileHandler(logging.FileHandler):
  """A file handler that never raises: it writes to `path`, else to a temporary file, else
  nowhere.

  logging.FileHandler opens its file in `emit` outside its own error handling, so a workdir
  that cannot be written (read-only, full, removed) would raise from the Orbax thread that
  logged. The temporary file keeps the errors of a run whose workdir is read-only (an export
  to another folder).
  """

  def __init__(self, path: str):
    super().__init__(path, delay=True)
    self._fallen_back = False

  def emit(self, record: logging.LogRecord) -> None:
    try:
      super().emit(record)
    except Exception:  # pylint: disable=broad-except  (the file did not open)
      if self._fallen_back:
        return
      self._fallen_back = True
      try:
        self.close()
        descriptor, self.baseFilename = tempfile.mkstemp(prefix='okdhp_background_errors_',
                                                         suffix='.log')
        os.close(descriptor)
        super().emit(record)
      except Exception:  # pylint: disable=broad-except
        pass

  def handleError(self, record: logging.LogRecord) -> None:
    del record  # the disk it writes to may be the full one: one more traceback helps no one.


class BackgroundErrors:
  """Collects Orbax's error records and unraisable exceptions in WORKDIR/background_errors.log.

  The file is only created when something is written to it.
  """

  def __init__(self, workdir: str):
    self.count = 0
    self.handler = _QuietFileHandler(os.path.join(workdir, BACKGROUND_LOG))
    self.handler.setLevel(logging.ERROR)
    self.handler.addFilter(_background)
    self.handler.setFormatter(logging.Formatter('%(asctime)s %(threadName)s %(message)s'))
    self._previous_hook = None

  @property
  def path(self) -> str:
    """Where the errors go: WORKDIR/background_errors.log, or a temporary file if it fails."""
    return self.handler.baseFilename

  def install(self, logger: logging.Logger) -> 'BackgroundErrors':
    logger.addHandler(self.handler)
    self._previous_hook = sys.unraisablehook
    sys.unraisablehook = self._unraisable
    return self

  def _unraisable(self, unraisable) -> None:
    self.count += 1
    try:
      text = ''.join(traceback.format_exception(
          unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback))
      record = logging.LogRecord(
          'unraisable', logging.ERROR, __file__, 0,
          f'unraisable exception ({unraisable.err_msg or "in a callback"}):\n{text}', None,
          None)
      with self.handler.lock:
        self.handler.emit(record)
    except Exception:  # pylint: disable=broad-except  (a hook must not raise)
      pass

  def note(self) -> str:
    """' (background errors: PATH)' when anything was collected, else ''."""
    try:
      written = self.count or (os.path.isfile(self.path) and os.path.getsize(self.path) > 0)
    except OSError:
      written = False
    return f' (background errors: {self.path})' if written else ''


class UnwritableFolderError(OSError):
  """A folder the run must write to cannot be written (a file in its path, a read-only disk)."""

  explained = True  # its message names the folder and why (main prints it alone).


def check_writable(folder: str, what: str) -> None:
  """UnwritableFolderError naming `folder` (`what`: its flag or role) unless files can be
  created there.

  Checked before a run starts, so the failure is one line rather than a background thread's
  traceback. Nothing is left behind: the probe file goes into the nearest folder that already
  exists, and is removed. Permission bits alone would not do (root ignores them), so a file is
  really created. Bucket paths (gs://) are left to the run.
  """
  if '://' in folder:
    return
  existing = os.path.abspath(folder)
  while not os.path.lexists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise UnwritableFolderError(f'{what} {folder} cannot be written: {existing} is not a '
                                'folder')
  try:
    descriptor, probe = tempfile.mkstemp(prefix='.okdhp_write_check_', dir=existing)
    os.close(descriptor)
    os.remove(probe)
  except OSError as error:
    raise UnwritableFolderError(f'{what} {folder} cannot be written: {existing}: '
                                f'{error.strerror or error}') from None
