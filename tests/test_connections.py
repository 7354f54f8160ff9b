"""The connection table: who is evicted, the hand-over of a socket being
shut down by another thread, waiting for the table to empty, and each of
its waits and notifications forced (no timing windows)."""

import threading
import time

import pytest

from lestats.connections import RECEIVING, SERVING, WAITING, ConnectionTable
from lestats.lab.forcing import TIMEOUT, CountingCondition, SpuriousCondition

ADDRESS = ("127.0.0.1", 1)


class Sock:   # pylint: disable=too-few-public-methods
    """Stands for a socket: the table only keys its rows by it."""


class EnteringCondition(CountingCondition):
    """A CountingCondition that also counts every call of ``wait``, so a
    test can see a waiter wake and wait again (``wait_for_entries``), or
    learn that it returned instead (``returned``)."""

    def __init__(self, lock):
        super().__init__(lock)
        self.entries = 0          # guarded by self._counted
        self.returned = False     # likewise

    def wait(self, timeout=None):
        with self._counted:
            self.entries += 1
        return super().wait(timeout)

    def note_return(self):
        """Called by the thread whose wait this is, when its call returns."""
        with self._counted:
            self.returned = True
            self._counted.notify_all()

    def wait_for_entries(self, count):
        """False if the waiter returned before its ``count``-th wait."""
        with self._counted:
            self._counted.wait_for(lambda: self.entries >= count or self.returned, TIMEOUT)
            return self.entries >= count and not self.returned


def table_with(capacity, unshut=CountingCondition, gone=CountingCondition):
    """A table whose Conditions can be watched (or made to wake spuriously)."""
    table = ConnectionTable(capacity)
    table.unshut = unshut(table.mutex)
    table.gone = gone(table.mutex)
    return table


def admitted(table, count):
    socks = [Sock() for _ in range(count)]
    for sock in socks:
        row, victim = table.admit(sock, ADDRESS)
        assert row is not None and victim is None
    return socks


def in_thread(call):
    """Start ``call`` in a thread; the thread, and a list that gets its result."""
    result = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    return thread, result


def joined(thread):
    thread.join(TIMEOUT)
    return not thread.is_alive()


# -- who is evicted ------------------------------------------------------------------------

def test_a_full_table_evicts_the_longest_wait_and_never_a_connection_being_served():
    table = ConnectionTable(3)
    first, second, third = admitted(table, 3)
    assert table.enter(first, SERVING)
    assert table.enter(second, WAITING)   # its wait starts again: now the newest
    newcomer = Sock()
    row, victim = table.admit(newcomer, ADDRESS)
    assert row is not None and victim.sock is third and victim.shutting
    assert table.was_evicted(third) and not table.was_evicted(first)
    assert not table.enter(third, WAITING)   # its thread learns it was closed
    row, victim = table.admit(Sock(), ADDRESS)
    assert victim.sock is second
    assert table.enter(newcomer, RECEIVING)   # a body arriving may be evicted too
    assert table.admit(Sock(), ADDRESS)[1].sock is newcomer


def test_when_every_connection_is_being_served_a_newcomer_is_refused():
    table = ConnectionTable(2)
    for sock in admitted(table, 2):
        assert table.enter(sock, SERVING)
    assert table.admit(Sock(), ADDRESS) == (None, None)
    assert [phase for _, phase in table.snapshot()] == [SERVING, SERVING]


def test_the_snapshot_lists_the_next_to_be_evicted_first():
    table = ConnectionTable(5)
    first, second, third = admitted(table, 3)
    table.enter(first, SERVING)
    table.enter(second, WAITING)
    assert [phase for _, phase in table.snapshot()] == [WAITING, WAITING, SERVING]
    table.admit(Sock(), ADDRESS)
    table.enter(third, RECEIVING)
    assert [phase for _, phase in table.snapshot()] == [RECEIVING, WAITING, WAITING, SERVING]


def test_pressed_from_three_quarters_full():
    table = ConnectionTable(4)
    admitted(table, 2)
    assert not table.pressed()
    admitted(table, 1)
    assert table.pressed()


# -- the hand-over of a socket being shut down ----------------------------------------------

def test_an_evicted_connections_owner_waits_until_its_socket_is_released():
    table = table_with(1)
    old = admitted(table, 1)[0]
    _, victim = table.admit(Sock(), ADDRESS)
    owner, _ = in_thread(lambda: table.leave(old))
    assert table.unshut.wait_for_waiters(1), "leave did not wait for the shutdown to end"
    table.released([victim])
    assert joined(owner), "leave was not woken by released"
    assert not table.was_evicted(old)


def test_a_spurious_wake_up_of_an_owner_waits_again():
    table = table_with(1, unshut=SpuriousCondition)
    old = admitted(table, 1)[0]
    _, victim = table.admit(Sock(), ADDRESS)
    owner, _ = in_thread(lambda: table.leave(old))
    assert table.unshut.second_wait.wait(TIMEOUT), "the spurious wake-up was believed"
    table.released([victim])
    assert joined(owner)


def test_released_wakes_every_owner_of_the_rows_it_frees():
    table = table_with(2)
    olds = admitted(table, 2)
    victims = [table.admit(Sock(), ADDRESS)[1] for _ in range(2)]
    owners = [in_thread(lambda sock=sock: table.leave(sock))[0] for sock in olds]
    assert table.unshut.wait_for_waiters(2)
    table.released(victims)
    assert all(joined(owner) for owner in owners), "an owner was not woken"


def test_a_connection_that_left_is_never_chosen_for_eviction():
    table = ConnectionTable(2)
    first, second = admitted(table, 2)
    table.leave(first)                       # it was waiting: it leaves the wait order too
    table.admit(Sock(), ADDRESS)
    row, victim = table.admit(Sock(), ADDRESS)   # full: the longest wait is second's now
    assert row is not None and victim.sock is second


def test_an_owner_waiting_for_the_release_sleeps_it_does_not_poll():
    table = table_with(1, unshut=EnteringCondition)
    old = admitted(table, 1)[0]
    _, victim = table.admit(Sock(), ADDRESS)
    owner, _ = in_thread(lambda: table.leave(old))
    assert table.unshut.wait_for_entries(1)
    time.sleep(0.3)   # a window in which a polling wait would wake dozens of times
    with table.unshut._counted:   # pylint: disable=protected-access
        assert table.unshut.entries == 1
    table.released([victim])
    assert joined(owner)


def test_leave_says_once_that_accepting_was_paused():
    table = ConnectionTable(3)
    first, second = admitted(table, 2)
    table.pause_accepting()
    assert table.paused()
    assert table.leave(first) is True
    assert not table.paused()
    assert table.leave(second) is False
    assert table.leave(second) is False   # not in the table any more
    table.pause_accepting()
    table.resume_accepting()
    assert not table.paused()


# -- closing ---------------------------------------------------------------------------------

def test_closing_refuses_newcomers_and_next_requests_and_evicts_the_idle():
    table = ConnectionTable(4)
    idle, receiving, serving = admitted(table, 3)
    table.enter(receiving, RECEIVING)
    table.enter(serving, SERVING)
    closed = table.close_waiting()
    assert [row.sock for row in closed] == [idle] and closed[0].shutting
    assert table.closing()
    assert table.admit(Sock(), ADDRESS) == (None, None)
    assert table.enter(receiving, SERVING)       # a request in flight is answered
    assert not table.enter(serving, WAITING)     # but no next one is read


def test_wait_empty_returns_as_soon_as_the_last_connection_leaves():
    table = table_with(3)
    sock = admitted(table, 1)[0]
    began = time.monotonic()
    waiters = [in_thread(lambda: table.wait_empty(60)) for _ in range(2)]
    assert table.gone.wait_for_waiters(2)
    table.leave(sock)   # one leave, two threads waiting for it
    for waiter, result in waiters:
        assert joined(waiter), "wait_empty was not woken by the last leave"
        assert result == [[]]
    assert time.monotonic() - began < 60 / 4   # woken, not timed out


def test_wait_empty_waits_for_an_evicted_connection_whose_thread_is_still_inside():
    table = table_with(1, gone=SpuriousCondition)
    old = admitted(table, 1)[0]
    new = Sock()
    _, victim = table.admit(new, ADDRESS)
    table.released([victim])
    table.leave(new)                      # the table is empty, but old's thread is inside
    waiter, result = in_thread(lambda: table.wait_empty(60))
    assert table.gone.second_wait.wait(TIMEOUT), "wait_empty did not wait for the evicted row"
    table.leave(old)
    assert joined(waiter) and result == [[]]


def test_wait_empty_waits_while_an_evicted_owner_is_still_inside_leave():
    """The owner of an evicted connection is in leave(), waiting for the
    shutdown to be released, when another connection leaves and wakes
    wait_empty: the table is not empty yet, since that owner is still inside."""
    table = table_with(2, gone=EnteringCondition)
    old, other = admitted(table, 2)
    new = Sock()
    _, victim = table.admit(new, ADDRESS)          # evicts old
    owner, _ = in_thread(lambda: table.leave(old))
    assert table.unshut.wait_for_waiters(1)        # the owner waits for the release
    table.leave(new)
    result = []

    def wait_empty():
        result.append(table.wait_empty(60))
        table.gone.note_return()

    waiter = threading.Thread(target=wait_empty, daemon=True)
    waiter.start()
    assert table.gone.wait_for_entries(1)
    table.leave(other)                             # wakes wait_empty: old is still inside
    assert table.gone.wait_for_entries(2), \
        "wait_empty returned while an evicted owner was still inside leave()"
    table.released([victim])
    assert joined(owner) and joined(waiter) and result == [[]]


def test_wait_empty_gives_up_at_its_timeout_and_hands_back_the_rows_still_open():
    table = ConnectionTable(2)
    sock = admitted(table, 1)[0]
    table.enter(sock, SERVING)
    left = table.wait_empty(0.01)
    assert [row.sock for row in left] == [sock] and left[0].shutting
    assert table.was_evicted(sock)


@pytest.mark.parametrize("phase", [WAITING, RECEIVING, SERVING])
def test_an_evicted_row_enters_no_phase(phase):
    table = ConnectionTable(1)
    old = admitted(table, 1)[0]
    table.admit(Sock(), ADDRESS)
    assert not table.enter(old, phase)
