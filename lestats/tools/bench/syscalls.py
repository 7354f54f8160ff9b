"""The syscall budget per cycle: how many system calls a server makes for
one POST-and-poll cycle at one client, by name and in all, for the bare
floor, the contract floor and lestats.

Each server is started and warmed up (``WARM_UP`` cycles on the connection
that is then measured, so its thread exists and its caches are filled);
``strace -c -f -p PID`` is attached (strace says "attached" once every
thread of the process is traced), the client runs the measured cycles,
and strace is stopped with SIGINT, which detaches it and makes it write its
counts.  Every thread of the server counts, the idle ones too.

Without strace (or where it may not attach), the counters of
``/proc/PID/io`` are read before and after instead: ``syscr`` and ``syscw``,
the read and write calls on files and pipes (a socket's recv and send go
around them, so they are not counted): fewer, and the report says so.
"""

import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from ...data import DataIndex
from ..soak import ServerProcess
from .clients import MIX_SIZE, CycleClient, requests_mix
from .cycles import contract_child
from .servers import Child

WARM_UP = 20
STRACE = "strace -c -f -p PID"
PROC_IO = ("/proc/PID/io: syscr + syscw, the read and write calls on files and pipes only"
           " (socket calls are not counted)")


def parse_strace_summary(text: str) -> Dict[str, int]:
    """Calls by system call name from ``strace -c``'s table (its columns:
    % time, seconds, usecs/call, calls, [errors], syscall); the "total" row
    is not a system call, and is left out."""
    calls: Dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 5 or not parts[0][:1].isdigit() or not parts[-1].isidentifier():
            continue
        if parts[-1] != "total":
            calls[parts[-1]] = calls.get(parts[-1], 0) + int(parts[3])
    return calls


def proc_io(pid: int) -> Optional[Dict[str, int]]:
    """``syscr`` and ``syscw`` of process ``pid`` (all its threads); None if unreadable."""
    try:
        with open(f"/proc/{pid}/io", encoding="ascii") as counters:
            fields = dict(line.split(":", 1) for line in counters if ":" in line)
        return {"read": int(fields["syscr"]), "write": int(fields["syscw"])}
    except (OSError, KeyError, ValueError):
        return None


def attach_strace(pid: int, out: Path) -> Tuple[Optional["subprocess.Popen[str]"], str]:
    """``strace -c -f -p pid -o out``, once it has attached: (the tracer,
    "") or (None, why not)."""
    strace = shutil.which("strace")
    if strace is None:
        return None, "strace is missing"
    tracer = subprocess.Popen(   # pylint: disable=consider-using-with
        [strace, "-c", "-f", "-p", str(pid), "-o", str(out)], stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = tracer.stderr.readline()   # "strace: Process N attached [with K threads]"
    if "attached" not in line:
        rest = tracer.communicate(timeout=60)[1]
        return None, f"strace could not attach: {(line + rest).strip()[:200]}"
    return tracer, ""


def count_syscalls(pid: int, port: int, mix: List[Any], cycles: int,
                   out: Path) -> Tuple[Dict[str, int], str]:
    """(calls by name over ``cycles`` cycles at one client, the method's
    note: "" for strace, else why /proc/PID/io was read instead)."""
    client = CycleClient(port)
    try:
        client.cycles_from(mix, WARM_UP)
        tracer, why = attach_strace(pid, out)
        before = proc_io(pid)
        client.cycles_from(mix, cycles, WARM_UP)
        after = proc_io(pid)
    finally:
        client.connection.close()
    if tracer is not None:
        tracer.send_signal(signal.SIGINT)   # detach and write the counts
        tracer.communicate(timeout=60)
        return parse_strace_summary(out.read_text(encoding="utf-8", errors="replace")), ""
    if before is None or after is None:
        return {}, f"{why}; /proc/{pid}/io is unreadable too"
    return {name: after[name] - before[name] for name in after}, why


def per_cycle(calls: Dict[str, int], cycles: int) -> Dict[str, Any]:
    """Calls per cycle, by name (most first) and in all."""
    ordered = sorted(calls.items(), key=lambda item: (-item[1], item[0]))
    return {"total": round(sum(calls.values()) / cycles, 2),
            "calls": {name: round(count / cycles, 2) for name, count in ordered}}


def step_syscalls(data: Path, index: DataIndex, cycles: int, workdir: Path,
                  report: Dict[str, Any]) -> None:
    """System calls per cycle of the floor, the contract floor and lestats."""
    mix = requests_mix(index, MIX_SIZE)
    result: Dict[str, Any] = {"cycles": cycles}
    why_not = set()
    for name in ("floor", "contract_floor", "lestats"):
        server: Union[Child, ServerProcess]
        if name == "floor":
            server = Child("floor")
        elif name == "contract_floor":
            server = contract_child(data, workdir, "syscalls")
        else:
            server = ServerProcess(data, workdir / "results-syscalls",
                                   workdir / "syscalls.log")
        try:
            calls, why = count_syscalls(server.pid, server.port, mix, cycles,
                                        workdir / f"strace-{name}.txt")
        finally:
            server.stop()
        result[name] = per_cycle(calls, cycles)
        result[name]["method"] = PROC_IO if why else STRACE
        if why:
            why_not.add(why)
    result["method"] = STRACE if not why_not else f"{PROC_IO}, since {'; '.join(sorted(why_not))}"
    report["syscalls_per_cycle"] = result
