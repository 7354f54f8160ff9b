"""The mutation tool's operators, on a small source (no suite run)."""

import ast
import sys
import textwrap
from pathlib import Path

import pytest

if sys.version_info < (3, 9):   # the tool reads the positions of keyword arguments
    pytest.skip("the mutation tool needs Python 3.9 or later", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parent))

# pylint: disable=wrong-import-position
from mutation.sites import (Module, OPERATORS, all_mutants, module_name, mutants_of, scope,
                            sync_objects)

SAMPLE = textwrap.dedent('''\
    import os
    import threading


    class Box:
        def __init__(self):
            self._mutex = threading.Lock()
            self._ready = threading.Condition(self._mutex)
            self._stopped = threading.Event()
            self.items = []

        def put(self, item):
            with self._mutex:   # the lock
                self.items.append(item)
                self._ready.notify_all()

        def take(self, timeout):
            with self._mutex:
                while not self.items:
                    self._ready.wait()
                first = self.items.pop(0)
                return first

        def first(self, timeout):
            with self._ready:
                self._ready.wait_for(lambda: self.items, timeout)
                return self.items[0]

        def wake(self):
            self._ready.wait(5)
            self._notify(every=True)

        def _notify(self, every=False):
            self._stopped.set()

        def flush(self, fd):
            try:
                os.fsync(fd)
            except BaseException:
                raise
            finally:
                os.close(fd)

        def handover(self, worker):
            self._mutex.release()
            self._mutex.acquire()
            worker.join()
''')


def mutants(operator):
    """{id: mutant} of SAMPLE for one operator."""
    module = Module("lestats/box.py", SAMPLE, sync_objects([ast.parse(SAMPLE)]))
    return {m.id: m for m in mutants_of(module, [operator])}


def changed(mutant):
    """(old line, new line) pairs that differ, the line count kept or not."""
    old, new = SAMPLE.splitlines(), mutant.text.splitlines()
    return [(a, b) for a, b in zip(old, new) if a != b], len(old) == len(new)


def test_the_sync_objects_are_found_by_what_makes_them():
    assert sync_objects([ast.parse(SAMPLE)]) == {"_mutex": "lock", "_ready": "condition",
                                             "_stopped": "event"}


def test_unlock_keeps_the_body_and_every_line():
    found = mutants("unlock")
    assert sorted(found) == ["box:Box.first:unlock#0", "box:Box.put:unlock#0",
                             "box:Box.take:unlock#0"]
    diff, same_count = changed(found["box:Box.put:unlock#0"])
    assert diff == [("        with self._mutex:   # the lock", "        if True:   # the lock")]
    assert same_count and found["box:Box.put:unlock#0"].line == 13


def test_while_becomes_if_around_a_wait():
    (mutant,) = mutants("while-if").values()
    assert mutant.id == "box:Box.take:while-if#0"
    assert changed(mutant) == ([("            while not self.items:",
                                 "            if not self.items:")], True)


def test_wait_for_becomes_one_wait_with_the_timeout():
    (mutant,) = mutants("wait-once").values()
    assert changed(mutant)[0] == [("            self._ready.wait_for(lambda: self.items, timeout)",
                                   "            self._ready.wait(timeout)")]


def test_each_notify_wrapper_and_event_set_is_dropped():
    found = mutants("drop-notify")
    assert sorted(found) == ["box:Box._notify:drop-notify#0", "box:Box.put:drop-notify#0",
                             "box:Box.wake:drop-notify#0"]
    assert changed(found["box:Box.put:drop-notify#0"]) == (
        [("            self._ready.notify_all()", "            pass")], True)


def test_notify_all_becomes_notify_and_a_wrapper_loses_every():
    found = mutants("notify-one")
    assert [changed(m)[0] for m in found.values()] == [
        [("            self._ready.notify_all()", "            self._ready.notify()")],
        [("        self._notify(every=True)", "        self._notify()")]]


def test_a_notify_trades_places_with_the_statement_before_it():
    found = mutants("notify-early")
    mutant = found["box:Box.put:notify-early#0"]
    assert changed(mutant) == ([("            self.items.append(item)",
                                 "            self._ready.notify_all()"),
                                ("            self._ready.notify_all()",
                                 "            self.items.append(item)")], True)


def test_except_base_exception_is_narrowed():
    (mutant,) = mutants("narrow-except").values()
    assert changed(mutant)[0] == [("        except BaseException:", "        except Exception:")]


def test_a_finally_body_never_runs():
    (mutant,) = mutants("drop-finally").values()
    assert changed(mutant) == ([("            os.close(fd)", "            pass")], True)


def test_each_statement_of_a_lock_block_moves_after_it_but_a_return_of_a_local():
    found = mutants("move-after")
    assert sorted(found) == ["box:Box.first:move-after#0", "box:Box.first:move-after#1",
                             "box:Box.put:move-after#0", "box:Box.put:move-after#1",
                             "box:Box.take:move-after#0", "box:Box.take:move-after#1"]
    text = found["box:Box.put:move-after#0"].text
    assert ("            self._ready.notify_all()\n"
            "        self.items.append(item)\n") in text
    assert changed(found["box:Box.put:move-after#1"]) == (
        [("            self._ready.notify_all()", "        self._ready.notify_all()")], True)


def test_the_first_statement_of_a_lock_block_moves_before_it():
    found = mutants("move-before")
    assert sorted(found) == ["box:Box.first:move-before#0", "box:Box.put:move-before#0"]
    assert ("        self.items.append(item)\n"
            "        with self._mutex:   # the lock\n"
            "            self._ready.notify_all()\n") in found["box:Box.put:move-before#0"].text


def test_fsync_acquire_release_and_join_are_dropped():
    for operator, line in (("drop-sync", "os.fsync(fd)"), ("drop-release", "self._mutex.release()"),
                           ("drop-acquire", "self._mutex.acquire()"),
                           ("drop-join", "worker.join()")):
        (mutant,) = mutants(operator).values()
        ((old, new),), _ = changed(mutant)
        assert old.strip() == line and new.strip() == "pass"


def test_a_wait_loses_its_timeout_or_gets_a_poll_timeout():
    forever = mutants("wait-forever")
    assert [changed(m)[0][0][1].strip() for m in forever.values()] == [
        "self._ready.wait_for(lambda: self.items)", "self._ready.wait()"]
    (poll,) = mutants("wait-poll").values()
    assert changed(poll)[0] == [("                self._ready.wait()",
                                 "                self._ready.wait(0.01)")]


@pytest.mark.parametrize("operator", sorted(OPERATORS))
def test_every_operator_finds_a_site_and_every_mutant_compiles(operator):
    found = mutants(operator)
    assert found
    for mutant in found.values():
        compile(mutant.text, "box.py", "exec")
        assert mutant.text != SAMPLE


def test_the_scope_is_found_by_rule_and_ids_are_unique():
    repo = Path(__file__).resolve().parents[1]
    paths = scope(repo)
    assert "lestats/pool.py" in paths and "lestats/watch/events.py" in paths
    assert not any(p.startswith(("lestats/lab/", "lestats/tools/")) or
                   p.endswith(("__init__.py", "__main__.py")) for p in paths)
    assert module_name("lestats/watch/events.py") == "watch.events"
    ids = [m.id for m in all_mutants(repo)]
    assert len(ids) == len(set(ids)) > 100
