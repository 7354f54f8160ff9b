"""``check --deep``: black-box probes for the races the course's checker
cannot see, against any server of the course's API.

The course grades synchronization by reading the code.  These probes look
for the symptoms from outside, through the API (and, with ``--pid``, the
process's /proc; with ``--results-dir``, its result files).  Each probe
says PASS (it looked and the symptom did not show), FOUND (with the
evidence) or NOT SEEN (it could not look, and why, or how hard it tried):

* ``ids``: job ids distinct and gap-free under many concurrent POSTs;
* ``results``: a result never read half-written, by polls hammering jobs
  with large answers while they finish, and by reading each result file
  as it appears;
* ``status``: a job known from its POST on, never back to running once
  done, and done in the end;
* ``num_jobs``: never negative, 0 when every job is done; ``/api/jobs``
  agrees with ``get_results``;
* ``busy``: requests answered while jobs run;
* ``threads`` (``--pid``): no long-lived thread (a worker) ends while the
  server runs;
* ``bad input``: unknown job ids and bad bodies get an error, and the
  server goes on answering and finishing jobs;
* ``idle`` (``--pid``): an idle server uses no CPU and its threads sleep;
* ``shutdown`` (``--deep-shutdown``, last: it stops the server taking
  jobs): graceful_shutdown answers at once, every accepted job still
  finishes, later POSTs are refused as the edition says, workers leave.

The probes are in ``probes``, their load and watchers in ``traffic``, what
they share in ``findings``.
"""

import time
from pathlib import Path
from typing import List, Optional, Sequence, TextIO

from . import probes
from .cases import Suite
from .client import Client
from .course import EDITIONS, Edition
from .findings import NOT_SEEN, PASS, Context, Finding, Workload
from .proc import Process


def run(client: Client, suites: Sequence[Suite], out: TextIO, *, pid: Optional[int] = None,
        results_dir: Optional[Path] = None, shutdown: bool = False,
        edition: Edition = EDITIONS["2025"]) -> List[Finding]:
    """Every probe, in order, each printed as it ends; the findings."""
    began = time.monotonic()
    process = Process(pid) if pid is not None else None
    context = Context(client, Workload.from_suites(suites), edition, process, results_dir)
    print(f"deep probes of {client.url} ({edition.name} edition"
          f"{f', pid {pid}' if pid is not None else ', no --pid'}"
          f"{f', results in {results_dir}' if results_dir else ', no --results-dir'}):",
          file=out, flush=True)
    if process is not None and not process.exists():
        print(f"  (no process {pid} in /proc: the probes that need --pid are not made)",
              file=out)
        context.process = None
    findings: List[Finding] = []
    for finding in probes.every_probe(context, shutdown):
        findings.append(finding)
        print(f"  {finding.verdict:8}  {finding.probe:9}  {finding.detail}", file=out, flush=True)
    found = [finding.probe for finding in findings if finding.found]
    print(f"deep: {len(found)} found{': ' + ', '.join(found) if found else ''}; "
          f"{sum(f.verdict == PASS for f in findings)} passed, "
          f"{sum(f.verdict == NOT_SEEN for f in findings)} not seen, in "
          f"{time.monotonic() - began:.1f} s", file=out, flush=True)
    return findings


def summary(findings: Sequence[Finding]) -> str:
    """One line: the probes that found something, then the counts."""
    found = [finding.probe for finding in findings if finding.found]
    return (f"FOUND {', '.join(found)}; " if found else "") + (
        f"{sum(f.verdict == PASS for f in findings)} pass, "
        f"{sum(f.verdict == NOT_SEEN for f in findings)} not seen")
