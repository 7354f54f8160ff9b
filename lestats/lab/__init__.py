"""The bug lab: the mistakes people make with threads, each one made on
purpose in a small broken variant and run beside the correct lestats code
on the same scenario, with the symptom measured for both.

    python3 -m lestats.lab           the labs, one line each
    python3 -m lestats.lab NAME      one lab: the code, broken against fixed;
                                     what was measured; where lestats does it right
    python3 -m lestats.lab --all     every lab, one table
    (or python3 -m lestats lab ...)

The broken code lives in ``lestats.lab.broken`` and nowhere else.  The
server never imports this package unless it is started with
``--broken-pool-for-teaching NAME``.
"""

from .runner import main

__all__ = ["main"]
