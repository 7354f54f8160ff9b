"""``--callgrind``: CPU instructions per cycle at one client, counted by
valgrind's callgrind, for this checkout (and ``--compare``'s).  Unlike a
rate, the count is the same from run to run, within about 1%, whatever else
the machine does."""

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

from ...data import DataIndex
from ..soak import RUN_PY, ServerProcess
from .clients import MIX_SIZE, CycleClient, requests_mix


def instructions_per_cycle(run_py: Path, data: Path, index: DataIndex,
                           workdir: Path) -> Optional[int]:
    """CPU instructions a server (``run_py``) spends per cycle at one
    client, counted by callgrind: the difference between 250 and 50 cycles,
    over 200 (so start-up and exit cancel out).  None without valgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    mix = requests_mix(index, MIX_SIZE)
    totals = []
    for cycles in (50, 250):
        out = workdir / f"callgrind-{run_py.parent.name}-{cycles}.out"
        server = ServerProcess(data, workdir / f"results-cg-{cycles}", workdir / "cg.log",
                               ["--workers", "2"], python=(valgrind, "-q", "--tool=callgrind",
                               f"--callgrind-out-file={out}", sys.executable),
                               entry=(str(run_py),))
        client = CycleClient(server.port)
        client.cycles_from(mix, cycles)
        client.connection.close()
        # Dump the counts, then kill: a signal's drain under valgrind is slow.
        subprocess.run(["callgrind_control", "-d", str(server.pid)], capture_output=True,
                       check=False)
        time.sleep(3)   # callgrind_control returns before the dump is written
        server.kill()
        totals.append(max(int(line.split()[1]) for path in workdir.glob(out.name + "*")
                          for line in path.read_text(errors="replace").splitlines()
                          if line.startswith(("summary:", "totals:"))))
    return (totals[1] - totals[0]) // 200


def step_instructions(data: Path, index: DataIndex, other: Optional[Path], workdir: Path,
                      report: Dict[str, Any]) -> None:
    """Instructions per cycle of this checkout (and of ``--compare``'s);
    None where valgrind is missing."""
    result: Dict[str, Any] = {"this": instructions_per_cycle(RUN_PY, data, index, workdir)}
    if other is not None and result["this"] is not None:
        result["other"] = instructions_per_cycle(other, data, index, workdir)
        result["ratio"] = round(result["this"] / result["other"], 3)
    report["instructions_per_cycle"] = result
