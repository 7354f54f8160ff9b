"""DELIBERATELY BROKEN: the worker count taken from the environment as it comes."""

import os
import threading
from typing import Callable, List, Mapping


def worker_threads(environ: Mapping[str, str], work: Callable[[], None]) -> List[threading.Thread]:
    """One thread per worker: $TP_NUM_OF_THREADS of them, else one per CPU."""
    count = environ.get("TP_NUM_OF_THREADS", os.cpu_count())   # BROKEN: a str when it is set
    return [threading.Thread(target=work) for _ in range(count)]
