"""Where a synchronization mistake can be made, and the mistake made there.

The modules in scope are found by rule (``scope``).  Each operator looks at
one AST node and yields the changes it makes there; a change is a list of
edits of the *source text* (byte offsets), so that every line keeps its
number and its comments: ``with self._mutex:`` becomes ``if True:`` over the
same body, ``while`` becomes ``if`` on the same line, a dropped call becomes
``pass`` on the same line(s), a moved statement trades places with lines of
its own block.

A mutant's id does not depend on line numbers:
``MODULE:QUALNAME:OPERATOR#N`` (``pool:ThreadPool.submit:unlock#0`` is the
first ``unlock`` site in ``ThreadPool.submit`` of ``lestats/pool.py``), so a
list of equivalent mutants survives code being moved around.
"""

import ast
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

PACKAGE = "lestats"
EXCLUDED_DIRS = ("lab", "tools", "grade")          # not the server core
EXCLUDED_FILES = ("__init__.py", "__main__.py")

# threading's classes, by what a mutant may do with an object made by one.
SYNC_KINDS = {"Lock": "lock", "RLock": "lock", "Semaphore": "lock",
              "BoundedSemaphore": "lock", "Condition": "condition", "Event": "event"}
LOCKS = ("lock", "condition")
WAITABLE = ("condition", "event")
NOTIFY = re.compile(r"_?(notify(_all)?|wake)")     # notify, notify_all, wrappers, wake-ups
SYNC_CALLS = ("fsync", "fdatasync", "sync")        # os.<name>(...)
POLL = "0.01"                                      # the timeout of a polling wait
SIMPLE_FIRST = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr, ast.If)

Edit = Tuple[int, int, bytes]                      # (start, end, replacement)


@dataclass(frozen=True)
class Change:
    """What one operator does at one site: its edits, the lines whose tests
    must run, and the code before and after, one line each."""

    edits: Tuple[Edit, ...]
    lines: Tuple[int, ...]
    before: str
    after: str


@dataclass
class Mutant:
    """One mistake in one module: ``text`` is the whole mutated file."""

    id: str
    path: str
    module: str
    operator: str
    line: int
    lines: Tuple[int, ...]
    before: str
    after: str
    text: str = field(repr=False)

    @property
    def code(self) -> str:
        """The mutated code in one line: ``before -> after``."""
        return f"{self.before} -> {self.after}"


# -- scope ------------------------------------------------------------------

def scope(repo: Path) -> List[str]:
    """The server core: every ``lestats/**/*.py`` except the lab, the tools,
    the grader and ``__init__``/``__main__`` files, as paths relative to
    ``repo`` (posix), sorted."""
    root = repo / PACKAGE
    found = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if parts[0] in EXCLUDED_DIRS or parts[-1] in EXCLUDED_FILES or "__pycache__" in parts:
            continue
        found.append(path.relative_to(repo).as_posix())
    return found


def module_name(path: str) -> str:
    """``lestats/watch/events.py`` -> ``watch.events``."""
    parts = Path(path).with_suffix("").parts
    return ".".join(parts[1:] if parts[0] == PACKAGE else parts)


# -- the source text ----------------------------------------------------------

class Source:
    """A module's text as bytes (the AST's columns are UTF-8 byte offsets),
    its line starts and its tree."""

    def __init__(self, text: str):
        self.text = text
        self.data = text.encode("utf-8")
        self.tree = ast.parse(text)
        self.starts = [0]
        for line in self.data.splitlines(keepends=True):
            self.starts.append(self.starts[-1] + len(line))

    def offset(self, lineno: int, col: int) -> int:
        """The byte offset of (line, column)."""
        return self.starts[lineno - 1] + col

    def start(self, node: ast.AST) -> int:
        """Where ``node`` begins."""
        return self.offset(node.lineno, node.col_offset)

    def end(self, node: ast.AST) -> int:
        """Where ``node`` ends."""
        return self.offset(node.end_lineno, node.end_col_offset)

    def segment(self, node: ast.AST) -> str:
        """``node``'s text."""
        return self.data[self.start(node):self.end(node)].decode("utf-8")

    def line(self, lineno: int) -> str:
        """Line ``lineno`` without its end."""
        return self.data[self.starts[lineno - 1]:self.starts[lineno]].decode("utf-8").rstrip()

    def indent(self, lineno: int) -> bytes:
        """The leading whitespace of line ``lineno``."""
        line = self.data[self.starts[lineno - 1]:self.starts[lineno]]
        return line[:len(line) - len(line.lstrip(b" \t"))]

    def whole_lines(self, node: ast.stmt) -> Optional[Tuple[int, int]]:
        """(start of its first line, end of its last line) if ``node`` has
        its lines to itself (nothing before it, at most a comment after)."""
        first = self.starts[node.lineno - 1]
        last = self.starts[node.end_lineno] if node.end_lineno < len(self.starts) else len(
            self.data)
        before = self.data[first:self.start(node)]
        after = self.data[self.end(node):last].strip()
        if before.strip() or (after and not after.startswith(b"#")):
            return None
        if not self.data[first:last].endswith(b"\n"):
            return None
        return first, last

    def header_colon(self, node: ast.With) -> int:
        """The offset of the colon ending a ``with`` statement's header."""
        last = node.items[-1]  # type: ignore[attr-defined]
        return self.data.find(b":", self.end(last.optional_vars or last.context_expr))

    def apply(self, edits: Iterable[Edit]) -> str:
        """The text with ``edits`` (not overlapping) made."""
        data, done = self.data, 0
        pieces = []
        for start, end, new in sorted(edits, key=lambda edit: (edit[0], edit[1])):
            pieces.extend((data[done:start], new))
            done = end
        pieces.append(data[done:])
        return b"".join(pieces).decode("utf-8")


def padded_statement(source: Source, node: ast.stmt, text: str) -> Edit:
    """Replace statement ``node`` by ``text`` on its own first line, the
    other lines it took left blank (so that no line number moves)."""
    return (source.start(node), source.end(node),
            (text + "\n" * (node.end_lineno - node.lineno)).encode("utf-8"))


def padded_expression(source: Source, node: ast.expr, text: str) -> Edit:
    """Replace expression ``node`` by ``text``; an expression over several
    lines keeps them, inside parentheses."""
    extra = node.end_lineno - node.lineno
    if extra:
        text = f"({text}{chr(10) * extra})"
    return source.start(node), source.end(node), text.encode("utf-8")


def dedented(source: Source, region: Tuple[int, int], by: int) -> bytes:
    """The lines of ``region``, each with ``by`` bytes of indentation less."""
    lines = source.data[region[0]:region[1]].splitlines(keepends=True)
    return b"".join(line[by:] if line[:by].strip() == b"" else line for line in lines)


def one_line(text: str, limit: int = 90) -> str:
    """``text``'s first line, stripped and cut to ``limit`` characters."""
    first = text.strip().splitlines()[0].strip() if text.strip() else ""
    return first if len(first) <= limit else first[:limit - 3] + "..."


# -- what the code is made of -----------------------------------------------------

def base_name(expr: ast.AST) -> Optional[str]:
    """The name an object is known by: ``self._mutex`` -> ``_mutex``,
    ``waiter[0]`` -> ``waiter``, ``lock`` -> ``lock``."""
    while isinstance(expr, ast.Subscript):
        expr = expr.value
    if isinstance(expr, ast.Attribute):
        return expr.attr
    if isinstance(expr, ast.Name):
        return expr.id
    return None


def callee(call: ast.Call) -> Optional[str]:
    """The name of the function called: ``a.b.notify()`` -> ``notify``."""
    return base_name(call.func)


def _made_kind(value: ast.AST) -> Optional[str]:
    """The kind of the first threading object ``value`` makes, if any."""
    for node in ast.walk(value):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) \
                    and func.value.id == "threading" and func.attr in SYNC_KINDS:
                return SYNC_KINDS[func.attr]
            if isinstance(func, ast.Name) and func.id in SYNC_KINDS:
                return SYNC_KINDS[func.id]
    return None


def sync_objects(trees: Iterable[ast.AST]) -> Dict[str, str]:
    """Every name a lock, Condition or Event is kept under in ``trees``
    (``self._mutex = threading.Lock()`` -> ``{"_mutex": "lock"}``), with its
    kind; an object in a list counts (``w = [threading.Condition(m), 0]``)."""
    found: Dict[str, str] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets = [node.target]
            else:
                continue
            kind = _made_kind(node.value)
            for target in targets if kind else ():
                name = base_name(target)
                if name:
                    found.setdefault(name, kind)
    return found


def _own_nodes(body: Sequence[ast.stmt], skip: Tuple[type, ...]) -> Iterator[ast.AST]:
    """Every node of ``body``, not looking inside nested functions or ``skip``."""
    stack: List[ast.AST] = list(body)
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef,
                             *skip)):
            continue
        stack.extend(ast.iter_child_nodes(node))


def _calls_wait(body: Sequence[ast.stmt]) -> bool:
    return any(isinstance(node, ast.Call) and "wait" in (callee(node) or "")
               for node in _own_nodes(body, ()))


def _breaks(body: Sequence[ast.stmt]) -> bool:
    """Does ``body`` break or continue its own loop?"""
    return any(isinstance(node, (ast.Break, ast.Continue))
               for node in _own_nodes(body, (ast.For, ast.While, ast.AsyncFor)))


def _returns_locals(stmt: ast.stmt) -> bool:
    """Is ``stmt`` a ``return`` of local names and constants only?  Moved
    out of a ``with`` block it reads nothing more without the lock: the same."""
    if not isinstance(stmt, ast.Return):
        return False
    return all(isinstance(node, (ast.Name, ast.Constant, ast.Tuple, ast.Load))
               and getattr(node, "id", None) != "self"
               for node in ast.walk(stmt.value)) if stmt.value is not None else True


def _docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
        and isinstance(stmt.value.value, str)


def _keyword_true(call: ast.Call) -> Optional[ast.keyword]:
    for keyword in call.keywords:
        if keyword.arg in ("every", "all") and isinstance(keyword.value, ast.Constant) \
                and keyword.value.value is True:
            return keyword
    return None


# -- one module -------------------------------------------------------------------

class Module:
    """A module in scope: its source, each node's enclosing qualname and
    each statement's block, and the sync objects of the whole scope."""

    def __init__(self, path: str, text: str, sync: Dict[str, str]):
        self.path = path
        self.name = module_name(path)
        self.source = Source(text)
        self.sync = sync
        self.qualname: Dict[int, str] = {}
        self.block: Dict[int, Tuple[List[ast.stmt], int]] = {}
        self._index(self.source.tree, "<module>")

    def _index(self, node: ast.AST, qual: str) -> None:
        for _, value in ast.iter_fields(node):
            children = value if isinstance(value, list) else [value]
            for i, child in enumerate(children):
                if not isinstance(child, ast.AST):
                    continue
                if isinstance(value, list) and isinstance(child, ast.stmt):
                    self.block[id(child)] = (value, i)
                self.qualname[id(child)] = qual
                inner = qual
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    inner = child.name if qual == "<module>" else f"{qual}.{child.name}"
                self._index(child, inner)

    def is_sync(self, expr: ast.AST, kinds: Sequence[str]) -> bool:
        """Is ``expr`` a lock, Condition or Event of one of ``kinds``?"""
        return self.sync.get(base_name(expr) or "") in kinds

    def nodes(self) -> List[ast.AST]:
        """Every node with a position, in source order."""
        positioned = [node for node in ast.walk(self.source.tree)
                      if hasattr(node, "lineno") and id(node) in self.qualname]
        return sorted(positioned, key=lambda node: (node.lineno, node.col_offset))

    def lock_with(self, node: ast.AST) -> bool:
        """Is ``node`` a ``with`` of one lock or Condition?"""
        return isinstance(node, ast.With) and len(node.items) == 1 \
            and self.is_sync(node.items[0].context_expr, LOCKS)

    def notify_statement(self, node: ast.AST) -> bool:
        """Is ``node`` a statement that only notifies (``cond.notify_all()``,
        ``self._notify(...)``, ``event.set()``)?"""
        if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)):
            return False
        call = node.value
        if NOTIFY.fullmatch(callee(call) or ""):
            return True
        return callee(call) == "set" and isinstance(call.func, ast.Attribute) \
            and self.is_sync(call.func.value, ("event",))

    def method_call(self, node: ast.AST, names: Sequence[str],
                    kinds: Sequence[str]) -> bool:
        """Is ``node`` a call ``x.NAME(...)`` on a sync object of ``kinds``?"""
        return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
            and node.func.attr in names and self.is_sync(node.func.value, kinds)

    def dropped(self, node: ast.stmt) -> Change:
        """Statement ``node`` replaced by ``pass``."""
        return Change((padded_statement(self.source, node, "pass"),),
                      tuple(range(node.lineno, node.end_lineno + 1)),
                      one_line(self.source.segment(node)), "pass")

    def call_text(self, call: ast.Call, name: str, drop: Sequence[ast.AST] = (),
                  add: Sequence[str] = ()) -> str:
        """``call`` as text, calling method ``name``, without the arguments
        in ``drop`` and with ``add`` after the others."""
        seg = self.source.segment
        args = [seg(arg) for arg in call.args if arg not in drop]
        args += [seg(keyword) for keyword in call.keywords if keyword not in drop]
        receiver = seg(call.func.value) + "." if isinstance(call.func, ast.Attribute) else ""
        return f"{receiver}{name}({', '.join([*args, *add])})"


# -- the operators --------------------------------------------------------------

def op_unlock(mod: Module, node: ast.AST) -> Iterator[Change]:
    """``with <lock>:`` -> ``if True:``, the body kept."""
    if mod.lock_with(node):
        src = mod.source
        colon = src.header_colon(node)
        extra = src.data.count(b"\n", src.start(node), colon)
        header = src.data[src.start(node):colon + 1].decode("utf-8")
        yield Change(((src.start(node), colon + 1, b"if True:" + b"\n" * extra),),
                     (node.lineno,), one_line(header), "if True:")


def op_while_if(mod: Module, node: ast.AST) -> Iterator[Change]:
    """``while`` -> ``if`` around a wait (a loop whose body calls a
    ``*wait*`` function and does not break out of it)."""
    if isinstance(node, ast.While) and _calls_wait(node.body) and not _breaks(node.body):
        start = mod.source.start(node)
        header = mod.source.line(node.lineno)
        yield Change(((start, start + len("while"), b"if"),), (node.lineno,),
                     one_line(header), one_line(header.replace("while", "if", 1)))


def op_wait_once(mod: Module, node: ast.AST) -> Iterator[Change]:
    """``cond.wait_for(pred, t)`` -> ``cond.wait(t)``: one wait, no loop."""
    if mod.method_call(node, ("wait_for",), ("condition",)):
        drop = [*node.args[:1], *(k for k in node.keywords if k.arg == "predicate")]
        text = mod.call_text(node, "wait", drop)
        yield Change((padded_expression(mod.source, node, text),),
                     tuple(range(node.lineno, node.end_lineno + 1)),
                     one_line(mod.source.segment(node)), text)


def op_drop_notify(mod: Module, node: ast.AST) -> Iterator[Change]:
    """A ``notify``/``notify_all`` (or a wrapper, or ``event.set()``) dropped."""
    if mod.notify_statement(node):
        yield mod.dropped(node)


def op_notify_one(mod: Module, node: ast.AST) -> Iterator[Change]:
    """``notify_all()`` -> ``notify()`` (a wrapper's ``every=True`` dropped)."""
    if not isinstance(node, ast.Call):
        return
    name = callee(node)
    if name == "notify_all":
        text = mod.call_text(node, "notify")
    elif NOTIFY.fullmatch(name or "") and _keyword_true(node) is not None:
        text = mod.call_text(node, name, [_keyword_true(node)])
    else:
        return
    yield Change((padded_expression(mod.source, node, text),),
                 tuple(range(node.lineno, node.end_lineno + 1)),
                 one_line(mod.source.segment(node)), text)


def op_notify_early(mod: Module, node: ast.AST) -> Iterator[Change]:
    """A notify moved before the statement that comes before it in its block
    (the state change it announces)."""
    if not mod.notify_statement(node):
        return
    block, index = mod.block[id(node)]
    if index == 0:
        return
    src = mod.source
    previous = block[index - 1]
    if _docstring(previous):
        return
    mine, theirs = src.whole_lines(node), src.whole_lines(previous)
    if mine is None or theirs is None:
        return
    between = src.data[theirs[1]:mine[0]]
    swapped = src.data[mine[0]:mine[1]] + between + src.data[theirs[0]:theirs[1]]
    yield Change(((theirs[0], mine[1], swapped),),
                 tuple(range(previous.lineno, node.end_lineno + 1)),
                 one_line(src.segment(node)),
                 f"moved before {one_line(src.segment(previous), 60)}")


def op_narrow_except(mod: Module, node: ast.AST) -> Iterator[Change]:
    """``except BaseException`` (or a bare ``except``) -> ``except Exception``."""
    if not isinstance(node, ast.Try):
        return
    src = mod.source
    for handler in node.handlers:
        if handler.type is None:
            at = src.start(handler) + len("except")
            edit = (at, at, b" Exception")
        elif isinstance(handler.type, ast.Name) and handler.type.id == "BaseException":
            edit = (src.start(handler.type), src.end(handler.type), b"Exception")
        else:
            continue
        before = src.line(handler.lineno)
        yield Change((edit,), (handler.lineno, node.body[0].lineno), one_line(before),
                     "except Exception:")


def op_drop_finally(mod: Module, node: ast.AST) -> Iterator[Change]:
    """A ``finally`` body that never runs (``pass`` in its place)."""
    if isinstance(node, ast.Try) and node.finalbody:
        src = mod.source
        first, last = node.finalbody[0], node.finalbody[-1]
        text = "pass" + "\n" * (last.end_lineno - first.lineno)
        yield Change(((src.start(first), src.end(last), text.encode("utf-8")),),
                     (node.body[0].lineno, *range(first.lineno, last.end_lineno + 1)),
                     f"finally: {one_line(src.segment(first), 60)}", "finally: pass")


def _with_body_regions(mod: Module, node: ast.AST) -> Optional[List[Tuple[int, int]]]:
    """The whole-line regions of a lock ``with``'s statements, if it has two
    or more and each has its lines to itself."""
    if not mod.lock_with(node) or len(node.body) < 2:
        return None
    regions = [mod.source.whole_lines(stmt) for stmt in node.body]
    return None if None in regions else regions  # type: ignore[return-value]


def op_move_after(mod: Module, node: ast.AST) -> Iterator[Change]:
    """Each statement of a lock's ``with`` body moved to just after the
    block (done without the lock, after the rest)."""
    regions = _with_body_regions(mod, node)
    if regions is None:
        return
    src = mod.source
    by = len(src.indent(node.body[0].lineno)) - len(src.indent(node.lineno))
    end = regions[-1][1]
    for stmt, region in zip(node.body, regions):
        if _returns_locals(stmt):
            continue   # the same code: see _returns_locals
        moved = dedented(src, region, by)
        edits = ((region[0], region[1], moved),) if region[1] == end else (
            (region[0], region[1], b""), (end, end, moved))
        after = "moved after the with block"
        if region[1] != end and isinstance(node.body[-1], (ast.Return, ast.Raise)):
            after += ", behind its return: never run"
        yield Change(edits, (node.lineno, *range(stmt.lineno, stmt.end_lineno + 1)),
                     one_line(src.segment(stmt)), after)


def op_move_before(mod: Module, node: ast.AST) -> Iterator[Change]:
    """The first statement of a lock's ``with`` body (a read, a write, a
    check) moved to just before the block: done before the lock is taken."""
    regions = _with_body_regions(mod, node)
    if regions is None or not isinstance(node.body[0], SIMPLE_FIRST):
        return
    src = mod.source
    by = len(src.indent(node.body[0].lineno)) - len(src.indent(node.lineno))
    at = src.starts[node.lineno - 1]
    stmt, region = node.body[0], regions[0]
    yield Change(((at, at, dedented(src, region, by)), (region[0], region[1], b"")),
                 (node.lineno, *range(stmt.lineno, stmt.end_lineno + 1)),
                 one_line(src.segment(stmt)), "moved before the with block")


def op_drop_sync(mod: Module, node: ast.AST) -> Iterator[Change]:
    """An ``os.fsync``/``os.fdatasync``/``os.sync`` call dropped."""
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        func = node.value.func
        if isinstance(func, ast.Attribute) and func.attr in SYNC_CALLS \
                and isinstance(func.value, ast.Name) and func.value.id == "os":
            yield mod.dropped(node)


def op_wait_forever(mod: Module, node: ast.AST) -> Iterator[Change]:
    """A wait's timeout dropped: ``wait(t)`` -> ``wait()``,
    ``wait_for(p, t)`` -> ``wait_for(p)``."""
    if mod.method_call(node, ("wait",), WAITABLE):
        drop = [*node.args, *node.keywords]
    elif mod.method_call(node, ("wait_for",), ("condition",)):
        drop = [*node.args[1:], *(k for k in node.keywords if k.arg == "timeout")]
    else:
        return
    if drop:
        text = mod.call_text(node, node.func.attr, drop)
        yield Change((padded_expression(mod.source, node, text),),
                     tuple(range(node.lineno, node.end_lineno + 1)),
                     one_line(mod.source.segment(node)), text)


def op_wait_poll(mod: Module, node: ast.AST) -> Iterator[Change]:
    """A wait with no timeout made a poll: ``wait()`` -> ``wait(0.01)``."""
    if mod.method_call(node, ("wait",), WAITABLE) and not node.args and not node.keywords:
        text = mod.call_text(node, "wait", add=[POLL])
        yield Change((padded_expression(mod.source, node, text),), (node.lineno,),
                     one_line(mod.source.segment(node)), text)


def op_drop_release(mod: Module, node: ast.AST) -> Iterator[Change]:
    """A lock's ``release()`` dropped: acquired, never released."""
    if isinstance(node, ast.Expr) and mod.method_call(node.value, ("release",), LOCKS):
        yield mod.dropped(node)


def op_drop_acquire(mod: Module, node: ast.AST) -> Iterator[Change]:
    """A lock's ``acquire()`` dropped: what follows runs without it."""
    if isinstance(node, ast.Expr) and mod.method_call(node.value, ("acquire",), LOCKS):
        yield mod.dropped(node)


def op_drop_join(mod: Module, node: ast.AST) -> Iterator[Change]:
    """A ``join`` statement dropped: nobody waits for the thread (or pool)."""
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) \
            and callee(node.value) == "join" and isinstance(node.value.func, ast.Attribute) \
            and not isinstance(node.value.func.value, ast.Constant):
        yield mod.dropped(node)


Operator = Callable[[Module, ast.AST], Iterator[Change]]
OPERATORS: Dict[str, Operator] = {
    "unlock": op_unlock,
    "while-if": op_while_if,
    "wait-once": op_wait_once,
    "drop-notify": op_drop_notify,
    "notify-one": op_notify_one,
    "notify-early": op_notify_early,
    "narrow-except": op_narrow_except,
    "drop-finally": op_drop_finally,
    "move-after": op_move_after,
    "move-before": op_move_before,
    "drop-sync": op_drop_sync,
    "wait-forever": op_wait_forever,
    "wait-poll": op_wait_poll,
    "drop-release": op_drop_release,
    "drop-acquire": op_drop_acquire,
    "drop-join": op_drop_join,
}


# -- all of it ------------------------------------------------------------------------

def mutants_of(module: Module, operators: Optional[Sequence[str]] = None) -> List[Mutant]:
    """Every mutant of ``module``: each operator at each site, numbered per
    (qualname, operator) in source order; one that does not compile or
    repeats an earlier one is left out."""
    found: List[Mutant] = []
    seen = {module.source.text}
    numbers: Counter = Counter()
    for node in module.nodes():
        qual = module.qualname[id(node)]
        for name in operators or OPERATORS:
            for change in OPERATORS[name](module, node):
                number = numbers[qual, name]
                numbers[qual, name] += 1
                text = module.source.apply(change.edits)
                if text in seen or not compiles(text, module.path):
                    continue
                seen.add(text)
                found.append(Mutant(f"{module.name}:{qual}:{name}#{number}", module.path,
                                    module.name, name, min(change.lines), change.lines,
                                    change.before, change.after, text))
    return found


def compiles(text: str, path: str) -> bool:
    """Is ``text`` valid Python?"""
    try:
        compile(text, path, "exec", dont_inherit=True)
    except SyntaxError:
        return False
    return True


def all_mutants(repo: Path, operators: Optional[Sequence[str]] = None) -> List[Mutant]:
    """Every mutant of every module in scope."""
    paths = scope(repo)
    texts = {path: (repo / path).read_text(encoding="utf-8") for path in paths}
    sync = sync_objects(ast.parse(text) for text in texts.values())
    found: List[Mutant] = []
    for path in paths:
        found.extend(mutants_of(Module(path, texts[path], sync), operators))
    return found
