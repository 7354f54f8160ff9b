"""Logging set-up: ``webserver.log``, rotated, with UTC timestamps ending in Z."""

import logging
import logging.handlers
import os
import time

FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(threadName)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 5


class UTCFormatter(logging.Formatter):
    """A formatter whose times are UTC, ISO 8601, with a trailing Z."""

    converter = time.gmtime

    def __init__(self) -> None:
        super().__init__(FORMAT, DATE_FORMAT)


class RotatingLog(logging.handlers.RotatingFileHandler):
    """A RotatingFileHandler that counts the bytes it writes instead of asking
    the file system for the file's size before every record (which cost half
    of the time of a log call).  ``emit`` runs under the handler's lock.

    Each record is flushed as it is written, so the log is complete up to
    the moment the process dies.  (A writer thread that batched the lines
    was tried and measured slower: it added a thread wake-up per record.)
    """

    def __init__(self, path: str, max_bytes: int, backups: int):
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self._written = os.path.getsize(path)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) + self.terminator
            if self.maxBytes and self._written and self._written + len(text) > self.maxBytes:
                self.doRollover()
                self._written = 0
            self.stream.write(text)
            self.stream.flush()
            self._written += len(text)   # characters: near enough to bytes for a size limit
        except Exception:   # pylint: disable=broad-except
            self.handleError(record)


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
