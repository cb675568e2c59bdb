"""What every route shares: the engine, the store, the settings, admission and drain.

Admission (``LOCAL_LLM_MAX_QUEUE``): a generation or embedding request holds a
:class:`Ticket` from before it reaches the engine until its response is sent
(the whole stream, for a streamed one). At most ``num_parallel + max_queue``
tickets exist at once: the first ``num_parallel`` are decoded, the rest wait for
the model, and one more is refused with 503 at once, as Ollama's
``OLLAMA_MAX_QUEUE``, so a burst never piles up unbounded work.

Every ticket is also released when its request's ASGI call ends
(:func:`request_tickets`, entered by the app's guard middleware), so a route
that raises between ``admit()`` and handing the ticket to ``stream_response``/
``collect`` (e.g. the engine call itself raising for an unknown model) cannot
leak its place.

Drain: on SIGTERM/SIGINT :meth:`ServerState.drain` sets every ticket's cancel
event; each generation stops within a token and its response ends normally
(the final object/``[DONE]``), then the server exits and unloads the models.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from local_llm_runtime.interface import EngineProtocol
from local_llm_runtime.server.errors import HTTPError, QueueFullError
from local_llm_runtime.settings import RuntimeSettings, ServerSettings
from local_llm_runtime.store.library import ModelLibrary

__all__ = ["ServerState", "Ticket", "release_request_tickets", "request_tickets"]

_REQUEST_TICKETS: ContextVar[list[Ticket] | None] = ContextVar("request_tickets", default=None)


@contextmanager
def request_tickets() -> Iterator[list[Ticket]]:
    """Release (and cancel) every ticket admitted within this block when it ends.

    Entered around each request's ASGI call; releasing is idempotent, so the
    normal release by ``stream_response``/``collect`` is unaffected.
    """
    tickets: list[Ticket] = []
    token = _REQUEST_TICKETS.set(tickets)
    try:
        yield tickets
    finally:
        _REQUEST_TICKETS.reset(token)
        for ticket in tickets:
            ticket.cancel.set()
            ticket.release()


def release_request_tickets() -> None:
    """Release (and cancel) the current request's tickets now: an error answers it.

    Called by the app's error handlers before the error is sent, so a client
    that gets its 4xx and retries at once finds its place free.
    """
    for ticket in _REQUEST_TICKETS.get() or ():
        ticket.cancel.set()
        ticket.release()


class Ticket:
    """One admitted request: its cancel event, released exactly once."""

    def __init__(self, state: ServerState) -> None:
        self.cancel = threading.Event()
        """Passed to the engine as ``cancel=``: set on drain or when the client leaves."""
        self._state = state
        self._released = False

    def release(self) -> None:
        """Give the place back (idempotent)."""
        with self._state.lock:
            if not self._released:
                self._released = True
                self._state.tickets.discard(self)


@dataclass
class ServerState:
    """The objects behind one server (``app.state.server``)."""

    engine: EngineProtocol
    library: ModelLibrary
    settings: ServerSettings
    runtime: RuntimeSettings
    lock: threading.Lock = field(default_factory=threading.Lock)
    tickets: set[Ticket] = field(default_factory=set)
    draining: threading.Event = field(default_factory=threading.Event)

    @property
    def capacity(self) -> int:
        """Requests admitted at once: decoded (``num_parallel``) plus queued (``max_queue``)."""
        return self.runtime.num_parallel + self.settings.max_queue

    def admit(self) -> Ticket:
        """A ticket for one request.

        Raises:
            QueueFullError: ``capacity`` requests are already admitted (503).
            HTTPError: The server is shutting down (503).
        """
        with self.lock:  # draining is read under the lock: drain() cancels every ticket
            if self.draining.is_set():
                raise HTTPError(503, "the server is shutting down", code="shutting_down")
            if len(self.tickets) >= self.capacity:
                raise QueueFullError(self.settings.max_queue)
            ticket = Ticket(self)
            self.tickets.add(ticket)
        owned = _REQUEST_TICKETS.get()
        if owned is not None:
            owned.append(ticket)
        return ticket

    @property
    def in_flight(self) -> int:
        """Admitted requests now."""
        with self.lock:
            return len(self.tickets)

    def drain(self) -> None:
        """Refuse new requests and stop every generation within a token."""
        with self.lock:
            self.draining.set()
            for ticket in self.tickets:
                ticket.cancel.set()
