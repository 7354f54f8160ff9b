"""Watching the pool: the teaching side of lestats.

* ``events``: the event bus the pool and the job layer publish to, and the
  Server-Sent Events stream of ``GET /api/events``;
* ``trace``: ``--trace FILE``, the same events as Chrome Trace Event JSON;
* ``page.html``: the live page at ``/``, read once at start.

None of it costs anything while nobody watches: the pool and the job layer
only ask the bus whether anyone listens, and build no event.
"""

import pkgutil


def live_page() -> bytes:
    """The live page (``page.html`` of this package, also from inside a zip)."""
    return pkgutil.get_data(__name__, "page.html") or b""
