"""What every route shares: the engine, the store, the settings, admission and drain.

Admission (``LOCAL_LLM_MAX_QUEUE``): a generation or embedding request holds a
:class:`Ticket` from before it reaches the engine until its response is sent
(the whole stream, for a streamed one). At most ``num_parallel + max_queue``
tickets exist at once: the first ``num_parallel`` are decoded, the rest wait for
the model, and one more is refused with 503 at once, as Ollama's
``OLLAMA_MAX_QUEUE``, so a burst never piles up unbounded work.

Drain: on SIGTERM/SIGINT :meth:`ServerState.drain` sets every ticket's cancel
event; each generation stops within a token and its response ends normally
(the final object/``[DONE]``), then the server exits and unloads the models.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from local_llm_runtime.interface import EngineProtocol
from local_llm_runtime.server.errors import HTTPError, QueueFullError
from local_llm_runtime.settings import RuntimeSettings, ServerSettings
from local_llm_runtime.store.library import ModelLibrary

__all__ = ["ServerState", "Ticket"]


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
