"""Starting a submission's server the course's way, and stopping all of it.

A submission is a folder in the course skeleton's layout.  Its server is
started from that folder, with the first entry point it has:

* ``api_server.py``: ``python3 api_server.py`` (the course skeleton's);
* ``run.py``: ``python3 run.py`` (lestats' own);
* an ``app`` package or ``app.py``: ``python3 -m flask run`` (Flask must be
  importable by that Python).

The course CSV is put where the skeleton reads it,
``./nutrition_activity_obesity_usa_subset.csv``, if the folder has none
(and removed afterwards).  The server gets a port of its own:
``FLASK_RUN_PORT`` names a free one, which ``flask run`` uses; a server
that binds elsewhere (the skeleton's ``webserver.run()`` binds 5000) is
found where it listens, through /proc.  It runs in a session of its own, so
that stopping it stops every process it started: SIGTERM to the whole
process group, then SIGKILL after ``STOP_GRACE`` seconds.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, TextIO, Tuple

from ..data import COURSE_FILE_NAME, open_csv

START_TIMEOUT = 30.0
STOP_GRACE = 5.0
_LOOK_EVERY = 0.1        # seconds between two looks for the listening socket
_LISTEN = "0A"           # TCP_LISTEN in /proc/net/tcp


class SubmissionError(Exception):
    """The submission's server cannot be started or did not start; the
    message is the reason, one line."""


def entry_point(folder: Path, python: str) -> Tuple[List[str], str]:
    """(command, what it is) that starts ``folder``'s server."""
    for script in ("api_server.py", "run.py"):
        if (folder / script).is_file():
            return [python, script], f"python3 {script}"
    if (folder / "app" / "__init__.py").is_file() or (folder / "app.py").is_file():
        return [python, "-m", "flask", "run"], "flask run"
    raise SubmissionError("no api_server.py, run.py, app/ or app.py to start")


def free_port() -> int:
    """A port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def place_course_csv(folder: Path, source: Path) -> Optional[Path]:
    """Write the course CSV (from ``source``, gzipped or not) into ``folder``
    unless one is there; the path written, to remove afterwards, or None."""
    target = folder / COURSE_FILE_NAME
    if target.exists():
        return None
    with open_csv(source) as data, open(target, "w", newline="", encoding="utf-8") as out:
        shutil.copyfileobj(data, out)
    return target


class Server:
    """A submission's server, started in a session of its own; its output
    goes to ``log``."""

    def __init__(self, folder: Path, command: Sequence[str], log: TextIO):
        self.folder = folder
        self.port = free_port()
        environ = dict(os.environ, FLASK_RUN_PORT=str(self.port), FLASK_RUN_HOST="127.0.0.1",
                       PYTHONUNBUFFERED="1")
        try:
            self.process = subprocess.Popen(   # pylint: disable=consider-using-with
                list(command), cwd=folder, env=environ, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            raise SubmissionError(f"cannot run {command[0]}: {exc.strerror or exc}") from None
        self.listener = self.process.pid   # the process that listens, once known
        self.listening_port = 0            # where it listens, once known

    def wait_listening(self, timeout: float = START_TIMEOUT) -> int:
        """The port the server listens on, once it does; SubmissionError if
        it exits first or does not listen within ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise SubmissionError(f"exited with status {code} before listening")
            found = listening(self.process.pid)
            if found:
                self.listener, self.listening_port = (
                    found.get(self.port) or found.get(5000) or min(found.values()))
                return self.listening_port
            if not os.path.isdir("/proc/net") and _answers(self.port):
                self.listening_port = self.port
                return self.port
            if time.monotonic() >= end:
                raise SubmissionError(f"did not listen within {timeout:g} s")
            time.sleep(_LOOK_EVERY)

    def exit_status(self) -> Optional[int]:
        """The server's exit status, or None while it runs."""
        return self.process.poll()

    def stop(self) -> None:
        """SIGTERM to its whole process group, SIGKILL after STOP_GRACE."""
        for signum, grace in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, STOP_GRACE)):
            try:
                os.killpg(self.process.pid, signum)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                continue
            if not _group_alive(self.process.pid):
                return


def listening(session: int) -> Dict[int, Tuple[int, int]]:
    """{port: (pid, port)} of the TCP sockets that the processes of
    ``session`` listen on (Linux /proc; {} elsewhere)."""
    inodes: Dict[str, int] = {}   # socket inode -> pid
    for pid in _session_members(session):
        for link in _links(f"/proc/{pid}/fd"):
            if link.startswith("socket:["):
                inodes[link[len("socket:["):-1]] = pid
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as rows:
                next(rows, None)
                for row in rows:
                    fields = row.split()
                    if len(fields) > 9 and fields[3] == _LISTEN and fields[9] in inodes:
                        port = int(fields[1].rsplit(":", 1)[1], 16)
                        found[port] = (inodes[fields[9]], port)
        except OSError:
            continue
    return found


def _links(folder: str) -> List[str]:
    """Where the links in ``folder`` point (those still there when read)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    found = []
    for name in names:
        try:
            found.append(os.readlink(os.path.join(folder, name)))
        except OSError:
            continue
    return found


def _session_members(session: int) -> Set[int]:
    members = set()
    try:
        names = os.listdir("/proc")
    except OSError:
        return members
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 3 and fields[3] == str(session):   # the session id
            members.add(int(name))
    return members


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
