"""Low-level file helpers: whole writes, opens that follow no link and
accept nothing but a regular file, exclusive creation, whole reads with a
bound, and lines read with a bound.

Every function here works on one descriptor or one name and keeps no
state.  A ``dir_fd`` makes ``name`` relative to that open directory (see
``resultsdir``): with O_NOFOLLOW, a single-component name then never leads
out of the directory, whatever another user planted in it.
"""

import errno
import os
import stat
from typing import Iterator, Optional, Tuple


class TooLarge(OSError):
    """A file is larger than the reader's limit: it is not read at all."""


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``: ``os.write`` may write less than
    it is given (a full disk, a signal); OSError if it cannot go on."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def open_regular(name: str, flags: int, dir_fd: Optional[int] = None, mode: int = 0o644,
                 follow: bool = False) -> int:
    """``os.open`` that refuses anything but a regular file (a FIFO would
    block a reader or a writer, a device would be read for ever):
    OSError(EINVAL), and, unless ``follow``, refuses a symbolic link:
    OSError(ELOOP).  The descriptor is blocking once it is known to be a
    regular file."""
    fd = os.open(name, flags | (0 if follow else os.O_NOFOLLOW) | os.O_NONBLOCK, mode,
                 dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", name)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_exclusive(name: str, dir_fd: Optional[int] = None) -> int:
    """A new file ``name``, open for writing, that nobody else has open:
    created with O_EXCL and O_NOFOLLOW, so a file or link already there
    (left by a crash, or planted) is removed first, never written through."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        return os.open(name, flags, 0o644, dir_fd=dir_fd)
    except FileExistsError:
        os.unlink(name, dir_fd=dir_fd)
        return os.open(name, flags, 0o644, dir_fd=dir_fd)


def read_regular(name: str, limit: int, dir_fd: Optional[int] = None) -> bytes:
    """All of regular file ``name`` (no link, no FIFO, no device: see
    open_regular), read by its size: TooLarge (EFBIG) if it holds more
    than ``limit`` bytes, so a file is returned whole or not at all."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", name)
        size = info.st_size
        if size > limit:
            raise TooLarge(errno.EFBIG, f"larger than {limit} bytes", name)
        data = os.read(fd, size)   # one read, of the size: no buffer of ``limit`` bytes
        if len(data) == size:
            return data
        chunks, total = [data], len(data)   # a short read: go on to the end
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > limit:      # it grew since: not whole within the limit
                raise TooLarge(errno.EFBIG, f"larger than {limit} bytes", name)
            chunks.append(chunk)
    finally:
        os.close(fd)


def read_lines(name: str, limit: int, dir_fd: Optional[int] = None
               ) -> Iterator[Tuple[int, Optional[bytes]]]:
    """(line number, line) of regular file ``name`` (see open_regular); a
    line longer than ``limit`` comes as None and is never held whole."""
    with os.fdopen(open_regular(name, os.O_RDONLY, dir_fd), "rb") as stream:
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


def create_for_writing(path: str) -> int:
    """Open ``path`` (the trace: a file the server creates where its user
    says), emptied, for writing: never through a symbolic link, never a
    FIFO or a device, never a file with other names (a hard link planted to
    another file).  OSError says which."""
    try:
        fd = open_regular(path, os.O_WRONLY | os.O_CREAT)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "is a symbolic link (not followed)", path) from None
        if exc.errno in (errno.ENXIO, errno.EINVAL, errno.EISDIR):
            raise OSError(exc.errno, "not a regular file", path) from None
        raise
    try:
        if os.fstat(fd).st_nlink > 1:
            raise OSError(errno.EMLINK, "has other hard links (not written through)", path)
        os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd
