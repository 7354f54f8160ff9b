"""Low-level file helpers for the results directory: whole writes, opens
that follow no link, exclusive creation, and lines read with a bound.

Every function here works on one descriptor or one path and keeps no state.
"""

import errno
import os
import stat
from typing import Iterator, Optional, Tuple


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``: ``os.write`` may write less than
    it is given (a full disk, a signal); OSError if it cannot go on."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def open_no_follow(path: str, flags: int) -> int:
    """``os.open`` that refuses symbolic links and anything but a regular
    file (a FIFO would block a reader, a device would be read for ever)."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        if not flags & (os.O_WRONLY | os.O_RDWR):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_exclusive(path: str) -> int:
    """A new file at ``path``, open for writing, that nobody else has open:
    created with O_EXCL and O_NOFOLLOW, so a file or link already there
    (left by a crash, or planted) is removed first, never written through."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        return os.open(path, flags, 0o644)
    except FileExistsError:
        os.unlink(path)
        return os.open(path, flags, 0o644)


def read_lines(path: str, limit: int) -> Iterator[Tuple[int, Optional[bytes]]]:
    """(line number, line) of a file; a line longer than ``limit`` comes as
    None and is never held whole in memory."""
    with open(path, "rb") as stream:
        number = 0
        while True:
            line = stream.readline(limit + 1)
            if not line:
                return
            number += 1
            if len(line) > limit and not line.endswith(b"\n"):
                while line and not line.endswith(b"\n"):   # skip the rest of it
                    line = stream.readline(limit)
                yield number, None
            else:
                yield number, line
