"""What a teaching assistant uses to grade servers of the course's API.

* ``check``: the course's functional checker, rule for rule, per edition,
  bounded against any server, with diagnostics (``python3 -m lestats check``);
* ``deep``: black-box race probes that the course's checker does not make
  (``check --deep``);
* ``grade``: many submissions in one run, one CSV row each
  (``python3 -m lestats grade``).

The smaller modules are their parts: ``client`` (HTTP with a deadline and a
size cap), ``answers`` (reading JSON within limits), ``course`` (the
course's rules as data), ``cases`` (the case folders), ``compare`` (the
course's comparison), ``report`` (failures grouped by kind), ``quality``
(the pylint step), ``proc`` (a process seen through /proc), ``probes``
(the deep probes), ``submissions`` (starting and stopping a submission).

Nothing in the server imports this package.
"""
