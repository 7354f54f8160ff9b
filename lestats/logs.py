"""Logging set-up: ``webserver.log``, rotated, with UTC timestamps ending in Z.

Two promises: a log line is one line (control and line-separator characters
in a message are escaped, so that no client can forge a record), and a log
that cannot be written never blocks or stops the server (records are counted
as lost, and the loss is reported when writing works again).
"""

import logging
import logging.handlers
import os
import select
import sys
import time
from typing import Any, Optional, Tuple

FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(threadName)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 5
STDERR_REPORT_EVERY = 600.0   # seconds between two notes on stderr about a failing log


def escape(text: str) -> str:
    """``text`` with every character ``str.isprintable`` rejects (controls,
    CR, LF, U+0085, U+2028...) written as a Python escape: one line, always."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


class UTCFormatter(logging.Formatter):
    """A formatter whose times are UTC, ISO 8601, with a trailing Z, and
    whose messages are escaped into one line (a traceback keeps its lines,
    each escaped).

    The date and time to the second is made once per second: the last one
    made is kept, so one formatter serves one handler, which formats under
    its own lock (``RotatingLog.emit``)."""

    converter = time.gmtime

    def __init__(self) -> None:
        super().__init__(FORMAT, DATE_FORMAT)
        self._second = -1     # the second of _seconds_text
        self._seconds_text = ""

    def formatTime(self, record: logging.LogRecord,   # pylint: disable=invalid-name
                   datefmt: Optional[str] = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._seconds_text = time.strftime(datefmt or DATE_FORMAT, time.gmtime(second))
        return self._seconds_text

    def formatMessage(self, record: logging.LogRecord) -> str:   # pylint: disable=invalid-name
        record.message = escape(record.message)
        return super().formatMessage(record)

    def formatException(self, ei) -> str:   # pylint: disable=invalid-name
        return "\n".join(escape(line) for line in super().formatException(ei).split("\n"))


def tell_stderr(line: str) -> None:
    """Write ``line`` to stderr only if that cannot block (a pipe nobody
    reads may be full); give up silently otherwise."""
    try:
        descriptor = sys.stderr.fileno()
        if select.select([], [descriptor], [], 0)[1]:
            os.write(descriptor, line.encode("utf-8", "replace"))
    except (OSError, ValueError, AttributeError):
        pass


class RotatingLog(logging.handlers.RotatingFileHandler):
    """A RotatingFileHandler that counts the bytes it writes instead of asking
    the file system for the file's size before every record (which cost half
    of the time of a log call), and that survives a log it cannot write.

    Each record is one ``write`` of its encoded line to the file, opened
    unbuffered, so the log is complete up to the moment the process dies.
    (A writer thread that batched the lines was tried and measured slower:
    it added a thread wake-up per record.)

    A record that cannot be written (disk full, file gone...) is counted,
    not reported through ``handleError`` (which writes a traceback to stderr
    under the handler's lock: a blocked stderr would block every thread that
    logs).  The file is reopened for the next record; once a record is
    written again, one line first says how many were lost.  A run of failures
    that lasts ``note_every`` seconds is also told on stderr, in one short
    line, and then at most once per ``note_every`` seconds (never at once: a
    blip is told in the log alone, and start-up stderr keeps its banner first).
    ``emit`` runs under the handler's lock, which guards the counters.
    """

    note_every = STDERR_REPORT_EVERY

    def __init__(self, path: str, max_bytes: int, backups: int):
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self._written = os.path.getsize(path)
        self.lost = 0              # records not written since the last one that was
        self._quiet_until = 0.0    # time.monotonic() before which stderr is not told

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) + self.terminator
            if self.lost:
                self._write(self._lost_line(record))
                self.lost = 0
            self._write(text)
        except Exception as exc:   # pylint: disable=broad-except
            now = time.monotonic()
            if not self.lost:   # a run of failures begins
                self._quiet_until = now + self.note_every
            self.lost += 1
            self._drop_stream()
            if now >= self._quiet_until:
                self._quiet_until = now + self.note_every
                tell_stderr(f"lestats: cannot write the log {self.baseFilename}: {exc}"
                            f" ({self.lost} records lost so far)\n")

    def _open(self) -> Any:
        """The log file, for appending bytes, unbuffered."""
        return open(self.baseFilename, "ab", buffering=0)   # pylint: disable=consider-using-with

    def _write(self, text: str) -> None:
        data = memoryview(text.encode("utf-8", "replace"))
        if self.stream is None:
            self.stream = self._open()
        if self.maxBytes and self._written and self._written + len(data) > self.maxBytes:
            self.doRollover()
            self._written = 0
        self._written += len(data)
        while data:   # a regular file takes it all at once; anything else may not
            data = data[self.stream.write(data):]

    def _lost_line(self, record: logging.LogRecord) -> str:
        note = logging.LogRecord(record.name, logging.WARNING, __file__, 0,
                                 "%d log records lost: the log could not be written",
                                 (self.lost,), None)
        return self.format(note) + self.terminator

    def _drop_stream(self) -> None:
        """Close the file, unwritten buffer and all; the next record reopens it."""
        stream: Optional[object] = self.stream
        self.stream = None   # type: ignore[assignment]
        try:
            stream.close()   # type: ignore[union-attr]
        except Exception:   # pylint: disable=broad-except
            pass


def _no_caller(*_args: Any) -> Tuple[str, int, str, None]:
    return "(unknown file)", 0, "(unknown function)", None


def skip_caller_lookup(logger: logging.Logger) -> logging.Logger:
    """``logger``, made not to look for the file and line that logged each
    record (a walk up the stack per record): the format shows neither.
    For the loggers of the request path, which log twice per request."""
    logger.findCaller = _no_caller   # type: ignore[assignment]
    return logger


def configure(path: str, level: int = logging.INFO, max_bytes: int = MAX_BYTES,
              backups: int = BACKUPS) -> logging.Handler:
    """Send the ``lestats`` loggers to a rotating file at ``path``.

    Returns the handler, so that a caller (a test, say) can remove it again.
    """
    handler = RotatingLog(path, max_bytes, backups)
    handler.setFormatter(UTCFormatter())
    logger = logging.getLogger("lestats")
    logger.setLevel(level)
    logger.addHandler(handler)
    return handler
