"""The results directory as an open directory: one owner, and the same
directory even after a wipe.

Every file the server keeps lives in one directory, and the server works on
it through a descriptor (``O_DIRECTORY``), never through its path: names are
single components opened with ``O_NOFOLLOW`` relative to that descriptor
(``files``), so a symbolic link planted in the directory by another user
(it may be sticky and world-writable, or ``/tmp`` itself) is never followed,
and nothing outside the directory is ever opened, listed, renamed or
deleted.

The owner holds an exclusive ``flock`` on the directory itself; a second
server finds it locked and stops before it has read or changed anything.
``.lestats.lock`` keeps the owner's pid and data file (and is locked too, as
earlier versions locked only that file); a lock file this server cannot use
safely (a directory, a link, another user's) is left alone with a warning.

If the directory is deleted (``rm -rf results``) or replaced, the
descriptor still names the deleted one, where nothing can be created any
more: no write of this server can land in a directory another server made
at the same path.  The journal notices (a write fails, or its segment is
gone) and calls ``reclaim``: the path is made a directory again, locked and
journaled before anything else is written there; if another server (or
another user, or a link) has it first, the directory is *lost*: every later
write fails with DirectoryLost, and the server hands out no more ids.
"""

import errno
import json
import logging
import os
import stat
import threading
from typing import Callable, List, Optional

try:
    import fcntl
except ImportError:      # Windows: see missing_guarantees
    fcntl = None         # type: ignore[assignment]   # pylint: disable=invalid-name

from .files import open_regular, read_regular

log = logging.getLogger(__name__)

LOCK_NAME = ".lestats.lock"


class StoreError(Exception):
    """The results directory cannot be used; the message says why, in one line."""


class DirectoryInUse(StoreError):
    """Another server owns the results directory."""


class DirectoryLost(OSError):
    """The results directory was deleted and its path now belongs to someone
    else (or cannot be made ours safely): nothing more is written there."""


def missing_guarantees() -> List[str]:
    """What this platform lacks of what the results directory's guarantees
    rest on (empty on Linux, macOS and the BSDs)."""
    missing = []
    if fcntl is None:
        missing.append("fcntl.flock (one server per results directory)")
    if not hasattr(os, "O_NOFOLLOW") or not hasattr(os, "O_DIRECTORY"):
        missing.append("O_NOFOLLOW and O_DIRECTORY (no link planted in the results"
                       " directory is followed)")
    if not {os.open, os.unlink, os.rename, os.stat} <= os.supports_dir_fd or (
            os.scandir not in os.supports_fd):
        missing.append("dir_fd (work inside the results directory, not through its path)")
    return missing


def _world_writable(info: os.stat_result) -> bool:
    return bool(info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX)


class ResultsDirectory:
    """The open results directory and its lock (see the module docstring).

    ``take`` opens and locks it, or raises DirectoryInUse (naming the
    owner's pid) or StoreError without having changed anything.  ``fd``
    gives the descriptor to work relative to; ``deleted`` says whether a
    descriptor no longer names the directory at the path; ``reclaim`` makes
    the path a directory of ours again.  ``shared`` (other users may write
    in it) is set by ``take`` before any other thread sees this object.

    ``_mutex`` guards ``_fd``, ``_held`` and ``_lost``; it is held for
    bookkeeping only, never during a system call.  ``reclaim`` is called by
    one thread at a time (the journal's leader), so two reclaims never race.
    Descriptors of a directory that was wiped stay open (in ``_held``)
    until ``release``: a thread that read one just before a reclaim may
    still use it, and finds that directory deleted, never another file.
    """

    def __init__(self, path: str, data_source: str = ""):
        self.path = path
        self.data_source = data_source
        self.earlier_data: Optional[str] = None
        self.shared = False
        self._mutex = threading.Lock()
        self._fd = -1
        self._held: List[int] = []       # every descriptor to close at release
        self._lost: Optional[str] = None

    def take(self) -> None:
        """Make sure the directory exists and is private enough, open and lock it."""
        try:
            os.makedirs(self.path, exist_ok=True)
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise StoreError(f"results directory {self.path}: {exc.strerror or exc}") from exc
        try:
            info = os.fstat(fd)
            if _world_writable(info):
                raise StoreError(f"results directory {self.path} is writable by every user"
                                 " and has no sticky bit; use a private directory"
                                 f" (chmod o-w {self.path})")
            held = self._lock(fd, first=True)
        except BaseException:
            os.close(fd)
            raise
        self.shared = bool(info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)) or (
            info.st_uid != os.geteuid())
        with self._mutex:
            self._fd = fd
            self._held.extend([fd, *held])

    def fd(self) -> int:
        """The directory's descriptor; DirectoryLost once it is lost."""
        with self._mutex:
            if self._lost is not None:
                raise DirectoryLost(errno.ESTALE, self._lost)
            return self._fd

    def trusted(self, info: os.stat_result) -> bool:
        """May an entry with this lstat be one this server wrote?  In a
        directory others may write in, only if it is this user's."""
        return not self.shared or info.st_uid == os.geteuid()

    def deleted(self, fd: int) -> bool:
        """True if directory ``fd`` was deleted, or the path now names another."""
        try:
            info = os.fstat(fd)
            if info.st_nlink == 0:
                return True
            now = os.stat(self.path)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return (now.st_dev, now.st_ino) != (info.st_dev, info.st_ino)

    def reclaim(self, prepare: Callable[[int], None]) -> None:
        """The directory was deleted: make the path a directory of ours
        again, lock it, let ``prepare`` write in it (the journal's first
        segment) and only then make it the one everything uses.  Raise
        DirectoryLost (for good) if someone else has the path, OSError (for
        this time) if it cannot be made now.  One caller at a time."""
        old = self.fd()
        if not self.deleted(old):
            return
        try:
            os.mkdir(self.path)
        except FileExistsError:
            pass
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                self._lose("is now a symbolic link or not a directory")
            raise
        held = [fd]
        try:
            info = os.fstat(fd)
            if info.st_uid != os.geteuid() or _world_writable(info):
                self._lose(f"was re-created by another user (uid {info.st_uid})"
                           if info.st_uid != os.geteuid() else
                           "was re-created writable by every user, with no sticky bit")
            try:
                held += self._lock(fd, first=False)
            except DirectoryInUse as exc:
                self._lose(f"was re-created and is owned by {str(exc).split(' by ', 1)[-1]}")
            prepare(fd)
        except BaseException:
            for descriptor in held:
                os.close(descriptor)
            raise
        log.warning("results directory %s re-created and locked again", self.path)
        with self._mutex:
            self._fd = fd
            self._held.extend(held)

    def release(self) -> None:
        """Unlock and close (the lock file stays, saying who served what)."""
        with self._mutex:
            held, self._held, self._fd = self._held, [], -1
        for descriptor in held:
            os.close(descriptor)

    def _lose(self, why: str) -> None:
        message = (f"results directory {self.path} was deleted and {why}; this server"
                   " writes nothing more there (restart it to serve again)")
        log.error("%s", message)
        with self._mutex:
            self._lost = message
        raise DirectoryLost(errno.ESTALE, message)

    def _lock(self, fd: int, first: bool) -> List[int]:
        """Lock directory ``fd`` (and its lock file, if usable); the
        descriptors to keep open.  Raise DirectoryInUse if either is held."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._refuse(fd, exc)
        note = self._open_note(fd)
        if note < 0:
            return []
        try:
            fcntl.flock(note, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if first:
                earlier = _read_owner(fd).get("data")
                self.earlier_data = earlier if isinstance(earlier, str) else None
            text = json.dumps({"pid": os.getpid(), "data": self.data_source}).encode("utf-8")
            os.ftruncate(note, 0)
            os.pwrite(note, text + b"\n", 0)
        except OSError as exc:
            os.close(note)
            self._refuse(fd, exc)
        return [note]

    def _open_note(self, fd: int) -> int:
        """``.lestats.lock`` open for writing, or -1 (with a warning) if it is
        not a plain file of this user's with no other name."""
        try:
            note = open_regular(LOCK_NAME, os.O_RDWR | os.O_CREAT, fd)
        except OSError as exc:
            log.warning("results directory %s: %s is not a regular file (%s); left alone,"
                        " the directory itself is locked", self.path, LOCK_NAME,
                        exc.strerror or exc)
            return -1
        info = os.fstat(note)
        if info.st_nlink == 1 and info.st_uid == os.geteuid():
            return note
        os.close(note)
        log.warning("results directory %s: %s has other names or belongs to uid %d;"
                    " left alone, the directory itself is locked", self.path, LOCK_NAME,
                    info.st_uid)
        return -1

    def _refuse(self, fd: int, exc: OSError) -> None:
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            owner = _read_owner(fd).get("pid", "unknown")
            raise DirectoryInUse(f"results directory {self.path} is in use by "
                                 f"another lestats server (pid {owner})") from exc
        raise StoreError(f"results directory {self.path}: cannot lock it: "
                         f"{exc.strerror or exc}") from exc


def _read_owner(fd: int) -> dict:
    """The owner's note in directory ``fd`` ({} if there is none to read)."""
    try:
        owner = json.loads(read_regular(LOCK_NAME, 4096, fd) or b"{}")
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}
