"""What a teaching assistant uses to grade servers of the course's API.

* ``check``: the course's functional checker, rule for rule, per edition,
  bounded against any server, with diagnostics (``python3 -m lestats check``);
* ``deep``: black-box race probes that the course's checker does not make
  (``check --deep``);
* ``grade``: many submissions in one run, one CSV row each
  (``python3 -m lestats grade``).

Their parts, one job each: ``client`` (HTTP with one deadline and a size
cap), ``answers`` (JSON within a nesting limit), ``course`` (the course's
rules as data), ``cases`` (the case folders, in the course's order),
``compare`` (DeepDiff's comparison), ``report`` (failures grouped by kind),
``quality`` (the pylint step); for the probes, ``findings`` (verdicts and
what they share), ``traffic`` (load and watchers), ``probes`` (each probe)
and ``proc`` (a process seen through /proc); for grading, ``submissions``
(starting and stopping a submission's server).

Nothing in the server imports this package.
"""
