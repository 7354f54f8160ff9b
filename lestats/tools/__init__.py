"""Tools that are not the server: each is run as ``python3 -m lestats NAME``.

* ``check``: the standard-library stand-in for the course checker.
* ``bench``: the benchmark, against the floor of the server's own stack.
* ``soak``: traffic, kills and restarts against a real server process.
* ``demo``: the seeded generator of the synthetic demo data.
* ``pyz``: builds lestats.pyz, the whole program in one file.
"""
