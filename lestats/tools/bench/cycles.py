"""The steps that measure cycles/s (POST a statistic, GET until done,
keep-alive, over the same mix of all nine statistics): lestats against the
bare floor and the contract floor, with the job latency; what watching
costs; and, with ``--compare``, another checkout turn about with this one.
"""

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from ...data import DataIndex
from ..soak import RUN_PY, ServerProcess
from .checker import run_checker
from .clients import (CONCURRENCY, MIX_SIZE, CycleClient, Subscriber, measure_cycles,
                      percentile, requests_mix)
from .servers import REPO, Child


def contract_child(data: Path, workdir: Path, label: str) -> Child:
    """The contract floor in a child process, its results and log in ``workdir``."""
    return Child("contract", str(data), str(workdir / f"results-contract-{label}"),
                 str(workdir / f"contract-{label}.log"))


def rates_of(server: Union[Child, ServerProcess], mix: List[Any],
             seconds: float) -> Dict[int, int]:
    """Cycles/s of ``server`` at each concurrency level; the server is stopped after."""
    try:
        return {c: round(measure_cycles(server.port, mix, c, seconds)[0]) for c in CONCURRENCY}
    finally:
        server.stop()


def ratios(numerators: Dict[int, int], denominators: Dict[int, int]) -> Dict[int, float]:
    """numerator / denominator at each concurrency level, to 2 places."""
    return {c: round(numerators[c] / denominators[c], 2) for c in CONCURRENCY}


def job_latency(clients: Sequence[CycleClient], timings: Path) -> Dict[str, Any]:
    """From each POST's answer to its result file (both on CLOCK_MONOTONIC),
    and the POST's round trip, from the clients' records and the times the
    timed server wrote."""
    finished = {int(k): v for k, v in json.loads(timings.read_text()).items()}
    latencies, round_trips = [], []
    for client in clients:
        for job_id, sent, answered in client.posts:
            round_trips.append(answered - sent)
            done = finished.get(int(job_id[7:]))
            if done is not None:
                latencies.append(max(0.0, done - answered))
    return {
        "job_latency_ms": {
            "p50": round(percentile(latencies, 0.5) * 1000, 3),
            "p99": round(percentile(latencies, 0.99) * 1000, 3),
            "max": round(max(latencies, default=float("nan")) * 1000, 3),
            "jobs": len(latencies),
            "done_before_post_answered": sum(1 for x in latencies if x == 0.0)},
        "post_round_trip_ms_c1": {"p50": round(percentile(round_trips, 0.5) * 1000, 3)}}


def step_cycles(data: Path, index: DataIndex, seconds: float, rounds: int, workdir: Path,
                report: Dict[str, Any]) -> None:
    """The floor, the contract floor and lestats (and lestats with
    --fsync), at 1, 4 and 16 clients, taking turns round after round (a
    fresh process each time), each keeping its best round, so that the
    machine's drift counts against none of them; then the job latency at
    one client, on a lestats that records when each result file appears
    (that recording costs a little, so its rate is not counted)."""
    mix = requests_mix(index, MIX_SIZE)
    servers = {
        "floor": lambda label: Child("floor"),
        "contract_floor": lambda label: contract_child(data, workdir, label),
        "lestats": lambda label: ServerProcess(data, workdir / f"results-{label}",
                                               workdir / "cycles.log"),
        "lestats_fsync": lambda label: ServerProcess(data, workdir / f"results-{label}",
                                                     workdir / "fsync.log", ["--fsync"])}
    best: Dict[str, Dict[int, int]] = {name: {} for name in servers}
    for round_number in range(rounds):
        for name, start in servers.items():
            for clients, rate in rates_of(start(f"{name}-{round_number}"), mix,
                                          seconds).items():
                best[name][clients] = max(best[name].get(clients, 0), rate)
    for name, rates in best.items():
        report[f"{name}_cycles_per_s"] = rates
    report["ratio_to_floor"] = ratios(best["lestats"], best["floor"])
    report["ratio_to_contract_floor"] = ratios(best["lestats"], best["contract_floor"])
    timings = workdir / "timings.json"
    server = ServerProcess(data, workdir / "results-latency", workdir / "latency.log",
                           ["--bench-timings", str(timings)], cwd=REPO,
                           entry=("-m", "lestats", "bench", "--serve-lestats"))
    try:
        workers = measure_cycles(server.port, mix, 1, seconds)[1]
        report["polls_per_cycle"] = round(
            sum(w.polls for w in workers) / max(1, sum(w.cycles for w in workers)), 3)
    finally:
        server.stop()
    report.update(job_latency(workers, timings))


def step_watching(data: Path, index: DataIndex, cases: Optional[Path], seconds: float,
                  rounds: int, workdir: Path, report: Dict[str, Any]) -> None:
    """What watching costs.  On one server, cycles/s at 1 and 4 clients
    with no page open and with 10 event-stream subscribers, taking turns (so
    that the machine's drift counts against neither), and the checker's
    results with 10 subscribers."""
    mix = requests_mix(index, MIX_SIZE)
    server = ServerProcess(data, workdir / "results-watch", workdir / "watch.log")
    rates: Dict[str, Dict[int, List[float]]] = {"none": {1: [], 4: []}, "10": {1: [], 4: []}}
    events = 0
    try:
        for _ in range(rounds):
            for clients in (1, 4):
                rates["none"][clients].append(measure_cycles(server.port, mix, clients,
                                                             seconds)[0])
                subscribers = [Subscriber(server.port) for _ in range(10)]
                rates["10"][clients].append(measure_cycles(server.port, mix, clients,
                                                           seconds)[0])
                events += sum(subscriber.events() for subscriber in subscribers)
                for subscriber in subscribers:
                    subscriber.close()
        result: Dict[str, Any] = {
            f"c{clients}": {"none": round(max(rates["none"][clients])),
                            "10_subscribers": round(max(rates["10"][clients])),
                            "ratio": round(max(rates["10"][clients])
                                           / max(rates["none"][clients]), 3)}
            for clients in (1, 4)}
        result["events_received"] = events
        if cases is not None:
            subscribers = [Subscriber(server.port) for _ in range(10)]
            passed, outcomes = run_checker(cases, server.port)
            for subscriber in subscribers:
                subscriber.close()
            result["checker_with_10_subscribers"] = {
                "all_passed": passed, "cases": len(outcomes),
                "first_polls_running": sum(o.first_poll_running for o in outcomes)}
    finally:
        server.stop()
    report["watching"] = result


def step_compare(data: Path, index: DataIndex, other: Path, seconds: float, rounds: int,
                 workdir: Path, report: Dict[str, Any]) -> None:
    """``--compare RUN_PY``: cycles/s of this checkout, of another one's
    ``run.py`` (the version before a change, say) and of the contract
    floor, taking turns round after round, each keeping its best round."""
    mix = requests_mix(index, MIX_SIZE)
    best: Dict[str, Dict[int, float]] = {"this": {}, "other": {}, "contract": {}}
    for round_number in range(rounds):
        for name, entry in (("this", RUN_PY), ("other", other), ("contract", None)):
            label = f"{name}-{round_number}"
            server = (contract_child(data, workdir, label) if entry is None else
                      ServerProcess(data, workdir / f"results-{label}", workdir / f"{name}.log",
                                    entry=(str(entry),)))
            for clients, rate in rates_of(server, mix, seconds).items():
                best[name][clients] = max(best[name].get(clients, 0.0), rate)
    report["compare"] = {
        "other": str(other),
        "cycles_per_s": {c: {"this": round(best["this"][c]), "other": round(best["other"][c]),
                             "ratio": round(best["this"][c] / best["other"][c], 3),
                             "contract_floor": round(best["contract"][c]),
                             "this_to_contract_floor": round(
                                 best["this"][c] / best["contract"][c], 3),
                             "other_to_contract_floor": round(
                                 best["other"][c] / best["contract"][c], 3)}
                         for c in CONCURRENCY}}
