"""Many clients at once: ids unique and gap-free, every result right, and
num_jobs back to zero."""

import threading

import pytest

from conftest import MUSCLE, OBESITY

CLIENTS = 8
JOBS_PER_CLIENT = 200
EXPECTED = {
    ("global_mean", OBESITY): {"global_mean": 14.5},
    ("state_mean", OBESITY): {"Ohio": 6.0},
    ("best5", MUSCLE): {"Ohio": 50.0, "Alabama": 40.0},
    ("diff_from_mean", MUSCLE): {"Alabama": 5.0, "Ohio": -5.0},
}


@pytest.mark.slow
def test_eight_clients_two_hundred_jobs_each(serve, tiny_index):
    live = serve(tiny_index, workers=4)
    start = threading.Barrier(CLIENTS)
    issued = [[] for _ in range(CLIENTS)]
    failures = []
    kinds = list(EXPECTED)

    def client(number):
        try:
            start.wait(timeout=10)
            for i in range(JOBS_PER_CLIENT):
                endpoint, question = kinds[(number + i) % len(kinds)]
                body = {"question": question, "state": "Ohio"}
                issued[number].append((live.submit(endpoint, body), (endpoint, question)))
        except Exception as exc:   # pylint: disable=broad-except
            failures.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures
    jobs = [job for client_jobs in issued for job in client_jobs]
    numbers = sorted(int(job_id.rsplit("_", 1)[1]) for job_id, _ in jobs)
    assert numbers == list(range(1, CLIENTS * JOBS_PER_CLIENT + 1))
    for job_id, kind in jobs:
        status, answer = live.wait_result(job_id)
        assert status == 200 and answer == {"status": "done", "data": EXPECTED[kind]}
    assert live.call("GET", "/api/num_jobs")[2] == {"num_jobs": 0}
    statuses = live.call("GET", "/api/jobs")[2]["data"]
    assert statuses == [{f"job_id_{n}": "done"} for n in range(1, len(jobs) + 1)]
