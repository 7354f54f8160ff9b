"""The benchmark's report printed as aligned tables, one section per step,
in the order the steps run (a step that did not run prints nothing)."""

import sys
from typing import Any, Dict, Optional, TextIO

from .clients import CONCURRENCY

Report = Dict[str, Any]


def _cycles(report: Report, out: TextIO) -> None:
    print("\ncycles/s (POST + GET until done, keep-alive; the servers take turns, best of"
          " each); ratios: lestats to each floor", file=out)
    print(f"  {'clients':>8} {'floor':>8} {'contract':>9} {'lestats':>8} {'/floor':>7}"
          f" {'/contract':>10} {'--fsync':>8}", file=out)
    for c in CONCURRENCY:
        print(f"  {c:>8} {report['floor_cycles_per_s'][c]:>8}"
              f" {report['contract_floor_cycles_per_s'][c]:>9}"
              f" {report['lestats_cycles_per_s'][c]:>8} {report['ratio_to_floor'][c]:>7}"
              f" {report['ratio_to_contract_floor'][c]:>10}"
              f" {report['lestats_fsync_cycles_per_s'][c]:>8}", file=out)
    latency = report["job_latency_ms"]
    print(f"\njob latency, POST answered -> result file (c=1, {latency['jobs']} jobs): "
          f"p50 {latency['p50']} ms, p99 {latency['p99']} ms, max {latency['max']} ms; "
          f"{latency['done_before_post_answered']} done before the answer arrived;"
          f" POST round trip p50 {report['post_round_trip_ms_c1']['p50']} ms;"
          f" polls per cycle {report['polls_per_cycle']}", file=out)


def _syscalls(report: Report, out: TextIO) -> None:
    counted = report.get("syscalls_per_cycle")
    if counted is None:
        return
    servers = ("floor", "contract_floor", "lestats")
    print(f"\nsystem calls per cycle at one client ({counted['method']};"
          f" {counted['cycles']} cycles)", file=out)
    print(f"  {'system call':>24} {'floor':>8} {'contract':>9} {'lestats':>8}", file=out)
    names = sorted({name for server in servers for name, count
                    in counted[server]["calls"].items() if count >= 0.05},
                   key=lambda name: (-counted["lestats"]["calls"].get(name, 0), name))
    for name in names + ["total"]:
        row = [counted[server]["total"] if name == "total" else
               counted[server]["calls"].get(name, 0) for server in servers]
        print(f"  {name:>24} {row[0]:>8} {row[1]:>9} {row[2]:>8}", file=out)
    if counted["contract_floor"]["total"]:
        print(f"  lestats / contract floor, in all: "
              f"{counted['lestats']['total'] / counted['contract_floor']['total']:.2f}",
              file=out)


def _checker(report: Report, out: TextIO) -> None:
    checker = report["checker"]
    if isinstance(checker, dict):
        print(f"\nchecker, {checker['cases']} cases (both editions; best of"
              f" {checker['rounds']} rounds in turns), all passed: "
              f"{checker['all_passed']}: lestats {checker['lestats_s']} s, synchronous "
              f"{checker['synchronous_s']} s, ratio {checker['ratio']}; first polls running: "
              f"{checker['first_polls_running']} ({checker['first_polls_running_pct']}%)",
              file=out)
    else:
        print(f"\nchecker: {checker}", file=out)


def _startup(report: Report, out: TextIO) -> None:
    print("\nstart-up (process start -> first answer) against the fair floor (http.server"
          " + one csv.DictReader pass + one answer) and the bare DictReader pass; peak RSS"
          " (VmHWM)", file=out)
    print(f"  {'rows':>9} {'file MiB':>9} {'lestats s':>10} {'fair floor s':>13} {'ratio':>6}"
          f" {'DictReader s':>13} {'ratio':>6} {'RSS MiB':>8} {'floor RSS':>10}", file=out)
    for rows, row in report["startup"].items():
        print(f"  {rows:>9} {row['file_mib']:>9} {row['startup_s']:>10} "
              f"{row['fair_floor_s']:>13} {row['ratio_to_fair_floor']:>6} "
              f"{row['dictreader_pass_s']:>13} {row['ratio_to_bare_pass']:>6} "
              f"{row['peak_rss_mib']:>8} {row['fair_floor_peak_rss_mib']:>10}", file=out)


def _compute(report: Report, out: TextIO) -> None:
    compute = report["compute_per_job"]
    print("\ncompute per job (us, no cache)", file=out)
    print(f"  {'statistic':>24} {'19k rows':>9} {'1M rows':>9} {'ratio':>6}", file=out)
    for name, small in compute["small_us"].items():
        large = compute.get("large_us", {}).get(name, "-")
        ratio = compute.get("ratio", {}).get(name, "-")
        print(f"  {name:>24} {small:>9} {large:>9} {ratio:>6}", file=out)


def _watching(report: Report, out: TextIO) -> None:
    watching = report["watching"]
    print("\nwatching the pool: cycles/s with no page open and with 10 event-stream subscribers",
          file=out)
    for clients in (1, 4):
        row = watching[f"c{clients}"]
        print(f"  c={clients}: {row['none']} vs {row['10_subscribers']} (ratio {row['ratio']})",
              file=out)
    if "checker_with_10_subscribers" in watching:
        checked = watching["checker_with_10_subscribers"]
        print(f"  checker with 10 subscribers: {checked['cases']} cases, all passed "
              f"{checked['all_passed']}, first polls running {checked['first_polls_running']}",
              file=out)


def _compare(report: Report, out: TextIO) -> None:
    if "compare" in report:
        print(f"\ncycles/s, this checkout vs {report['compare']['other']} and the contract"
              " floor (turn about, best of each)", file=out)
        for clients, row in report["compare"]["cycles_per_s"].items():
            print(f"  c={clients}: {row['this']} vs {row['other']} (ratio {row['ratio']});"
                  f" contract floor {row['contract_floor']}: this"
                  f" {row['this_to_contract_floor']}, other {row['other_to_contract_floor']}",
                  file=out)
    if "instructions_per_cycle" in report:
        counted = report["instructions_per_cycle"]
        other = (f", {report['compare']['other']} {counted['other']} (ratio {counted['ratio']})"
                 if "other" in counted else "")
        print(f"\ninstructions per cycle at one client (callgrind): this checkout "
              f"{counted['this']}{other}", file=out)


def _memory(report: Report, out: TextIO) -> None:
    memory = report["memory_per_job"]
    print(f"\nmemory kept by {memory['jobs']} finished jobs: {memory['kept_bytes_per_job']}"
          f" bytes per job (tracemalloc), RSS +{memory['rss_mib']} MiB", file=out)


def print_report(report: Report, out: Optional[TextIO] = None) -> None:
    """The report as aligned tables."""
    out = out or sys.stdout
    print(f"machine: {report['cpus']} CPUs, Python {report['python']}"
          f"{' (quick mode: not for comparing)' if report['quick'] else ''}", file=out)
    for section in (_cycles, _syscalls, _checker, _startup, _compute, _watching, _compare,
                    _memory):
        section(report, out)
