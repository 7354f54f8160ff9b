"""DELIBERATELY BROKEN: a result file written in place, under its final name.

The write loop is storage.JobStore._write_new's, on purpose: what differs
is the name written to, and nothing else.
"""
# pylint: disable=duplicate-code

import os


def write_result_in_place(directory: str, number: int, answer: bytes) -> None:
    """Store ``answer`` (JSON text) as job ``number``'s result."""
    final = os.path.join(directory, f"job_id_{number}.json")
    # BROKEN: the file has its final name from the first byte: a reader can find it half written
    fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(answer)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
