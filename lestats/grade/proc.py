"""A server process seen from outside, through Linux's /proc.

What the deep probes read of a process they only know by its id: its
threads, the CPU time it has used, and how many times each thread has
been switched out (``voluntary_ctxt_switches`` + ``nonvoluntary_ctxt_switches``:
a thread that sleeps and wakes adds one per wake-up).  Every reader returns
an empty answer for a process that has gone, never raises.
"""

import os
from typing import Dict, Set

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_SWITCHES = ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")


class Process:
    """The process ``pid``, read from /proc at each call."""

    def __init__(self, pid: int):
        self.pid = pid

    def exists(self) -> bool:
        """Is there such a process (readable in /proc)?"""
        return os.path.isdir(f"/proc/{self.pid}/task")

    def threads(self) -> Set[int]:
        """The ids of its threads."""
        try:
            return {int(name) for name in os.listdir(f"/proc/{self.pid}/task")}
        except OSError:
            return set()

    def cpu_seconds(self) -> float:
        """User and system CPU time used so far by all its threads."""
        try:
            with open(f"/proc/{self.pid}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return 0.0
        # After the command's closing parenthesis: state is fields[0], so
        # utime (field 14 of proc(5)) is fields[11] and stime fields[12].
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def switches(self) -> Dict[int, int]:
        """Context switches so far, per thread id."""
        found = {}
        for tid in self.threads():
            total = 0
            try:
                with open(f"/proc/{self.pid}/task/{tid}/status", encoding="ascii") as status:
                    for line in status:
                        name, _, value = line.partition(":")
                        if name in _SWITCHES:
                            total += int(value)
            except (OSError, ValueError):
                continue
            found[tid] = total
        return found
