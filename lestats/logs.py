"""Logging set-up: ``webserver.log``, rotated, with UTC timestamps ending in Z."""

import logging
import logging.handlers
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


def configure(path: str, level: int = logging.INFO, max_bytes: int = MAX_BYTES,
              backups: int = BACKUPS) -> logging.Handler:
    """Send the ``lestats`` loggers to a RotatingFileHandler at ``path``.

    Returns the handler, so that a caller (a test, say) can remove it again.
    """
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    handler.setFormatter(UTCFormatter())
    logger = logging.getLogger("lestats")
    logger.setLevel(level)
    logger.addHandler(handler)
    return handler
