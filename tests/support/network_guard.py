"""Tests may only talk to loopback (the fake Hub); everything else is blocked in-process.

Subprocesses (pip assembling the demo model) are not affected.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import pytest_socket


@pytest.fixture(autouse=True)
def _loopback_only() -> Iterator[None]:
    pytest_socket.socket_allow_hosts(["127.0.0.1"], allow_unix_socket=True)
    yield
    pytest_socket._remove_restrictions()
