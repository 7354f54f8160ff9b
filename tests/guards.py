"""Lock discipline, checked: every touch of guarded state happens with its lock held.

Each class with a mutex says in its docstring which attributes the mutex
guards.  These tools make that sentence executable:

* ``OwnedLock`` is a Lock that knows which thread holds it (Conditions made
  on it work as on a Lock, and their ``notify`` refuses a caller that does
  not hold it, as with a real Lock);
* ``guard(obj, lock, names, log)`` makes every read and write of the
  attributes ``names`` of ``obj`` check that the current thread holds
  ``lock``, and note the attribute and the caller in ``log`` when it does
  not;
* ``guarded_class(cls, lock_of, names, log)`` does the same for every
  instance of ``cls`` made from then on (the constructor itself is not
  checked: an object nobody else can see yet needs no lock).

A mistake that leaves guarded state outside its lock then shows in every
run, whatever the scheduler does: no race has to happen for the test to see
it.  Violations are logged, not raised, because the code under test may
catch exceptions (a request handler answers 500); the test asserts the log
is empty.
"""

import sys
import threading
from typing import Any, Callable, Iterable, List, Optional


class OwnedLock:
    """A Lock that knows its owner."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.owner: Optional[int] = None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Lock.acquire, noting the owner."""
        got = self._lock.acquire(blocking, timeout)
        if got:
            self.owner = threading.get_ident()
        return got

    def release(self) -> None:
        """Lock.release."""
        self.owner = None
        self._lock.release()

    def locked(self) -> bool:
        """Lock.locked."""
        return self._lock.locked()

    def held(self) -> bool:
        """True if the current thread holds this lock."""
        return self.owner == threading.get_ident()

    _is_owned = held   # what threading.Condition asks before notify and wait

    __enter__ = acquire

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


def _caller() -> str:
    """Where the unguarded touch came from: the first two frames outside this file."""
    frame = sys._getframe(2)   # pylint: disable=protected-access
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    places = []
    while frame is not None and len(places) < 2:
        places.append(f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno}"
                      f" {frame.f_code.co_name}")
        frame = frame.f_back
    return " < ".join(places) or "?"


def _property(name: str, storage: Any, lock_of: Callable[[Any], OwnedLock],
              log: List[str], exempt: Callable[[Any], bool]) -> property:
    """A property that stores through ``storage`` (a descriptor, or None for
    the instance's __dict__) and checks the lock on every touch."""
    key = f"_guarded_{name}"

    def check(obj: Any, what: str) -> None:
        if not exempt(obj) and not lock_of(obj).held():
            log.append(f"{what} {type(obj).__name__}.{name} without its lock, at {_caller()}"
                       f" in {threading.current_thread().name}")

    def read(obj: Any) -> Any:
        check(obj, "read of")
        return storage.__get__(obj) if storage is not None else obj.__dict__[key]

    def write(obj: Any, value: Any) -> None:
        check(obj, "write of")
        if storage is not None:
            storage.__set__(obj, value)
        else:
            obj.__dict__[key] = value

    return property(read, write)


def guard(obj: Any, lock: OwnedLock, names: Iterable[str], log: List[str]) -> None:
    """Check every touch of ``obj``'s attributes ``names`` from now on."""
    names = list(names)
    cls = type(obj)
    slotted = not hasattr(obj, "__dict__")
    if not slotted:
        for name in names:
            obj.__dict__[f"_guarded_{name}"] = obj.__dict__.pop(name)
    namespace = {name: _property(name, _slot(cls, name) if slotted else None,
                                 lambda _obj: lock, log, lambda _obj: False)
                 for name in names}
    if slotted:
        namespace["__slots__"] = ()
    obj.__class__ = type(cls.__name__, (cls,), namespace)


def _slot(cls: type, name: str) -> Any:
    """The slot descriptor of ``name`` in ``cls`` or a base."""
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    raise AttributeError(name)


def guarded_class(cls: type, lock_of: Callable[[Any], OwnedLock], names: Iterable[str],
                  log: List[str]) -> type:
    """A subclass of ``cls`` whose instances check every touch of ``names``
    (after their constructor) against ``lock_of(instance)``.  Works for
    classes with ``__slots__`` too."""
    names = list(names)
    building = set()   # ids of instances inside their constructor (one thread each)
    slotted = "__slots__" in cls.__dict__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        building.add(id(self))
        try:
            cls.__init__(self, *args, **kwargs)
        finally:
            building.discard(id(self))

    namespace = {name: _property(name, _slot(cls, name) if slotted else None, lock_of, log,
                                 lambda obj: id(obj) in building)
                 for name in names}
    namespace["__init__"] = init
    if slotted:
        namespace["__slots__"] = ()
    return type(cls.__name__, (cls,), namespace)
