"""DELIBERATELY BROKEN: a result file written in place, under its final name.

It writes with files.write_all, as storage.JobStore does: what differs
is the name written to, and nothing else.
"""

import os

from lestats.files import write_all


def write_result_in_place(directory: str, number: int, answer: bytes) -> None:
    """Store ``answer`` (JSON text) as job ``number``'s result."""
    final = os.path.join(directory, f"job_id_{number}.json")
    # BROKEN: the file has its final name from the first byte: a reader can find it half written
    fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, answer)
    finally:
        os.close(fd)
