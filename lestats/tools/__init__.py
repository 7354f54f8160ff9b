"""Developer tools, not the server: each is run as ``python3 -m lestats NAME``.
(What a teaching assistant uses, ``check`` and ``grade``, is ``lestats.grade``.)

* ``bench``: the benchmark, against the floor of the server's own stack.
* ``soak``: traffic, kills and restarts against a real server process.
* ``demo``: a seeded generator of synthetic survey data of any size.
* ``pyz``: builds lestats.pyz, the whole program in one file.
"""
