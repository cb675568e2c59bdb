"""A loopback fake of ModelScope's model API (the part the ``modelscope`` SDK downloads with).

Routes (``MODELSCOPE_DOMAIN`` points at it):

* ``GET /api/v1/models/{org}/{repo}/revisions`` -- ``Data.RevisionMap.Branches/Tags``;
* ``GET /api/v1/models/{org}/{repo}/repo/files?Revision=R&Recursive=True`` --
  ``Data.Files[]`` with ``Path``, ``Name``, ``Size``, ``Sha256``, ``Type`` (``tree``
  entries for folders, as ModelScope lists them);
* ``GET /api/v1/models/{org}/{repo}/repo?Revision=R&FilePath=P`` -- the bytes, with
  ``Range: bytes=N-`` answered ``206`` (optionally through a redirect, as ModelScope
  sends downloads to its CDN).

Answers are wrapped as ModelScope wraps them (``{"Code": 200, "Data": ..., "Success": true}``).
It records every request and misbehaves on demand: corrupt bytes, a connection dropped
mid-file (once per listed offset), 404s, a private repository that needs the token
(the ``m_session_id`` cookie), a listing without hashes, slow bodies.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

_API = re.compile(r"^/api/v1/models/(?P<repo>[^/]+/[^/]+)/(?P<kind>revisions|repo/files|repo)$")
_CDN = re.compile(r"^/cdn/(?P<sha>[0-9a-f]{64})$")
_CHUNK = 64 * 1024


@dataclass
class FakeFile:
    path: str
    size: int
    sha256: str
    data: bytes | None = None
    source: Path | None = None

    def open_range(self, start: int) -> Iterator[bytes]:
        if self.data is not None:
            for i in range(start, self.size, _CHUNK):
                yield self.data[i : i + _CHUNK]
            return
        assert self.source is not None
        with self.source.open("rb") as handle:
            handle.seek(start)
            while chunk := handle.read(_CHUNK):
                yield chunk


@dataclass
class FakeRepo:
    repo_id: str
    revisions: dict[str, dict[str, FakeFile]]
    """Branch or tag name -> its files."""
    tags: set[str] = field(default_factory=set)
    token: str | None = None


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class Faults:
    drop_after: dict[str, list[int]] = field(default_factory=dict)
    """File path -> offsets: each GET of the file drops the connection after the next offset."""
    corrupt: set[str] = field(default_factory=set)
    """File paths served with a flipped byte (same length, wrong hash)."""
    missing: set[str] = field(default_factory=set)
    """Repo ids or file paths answered with 404."""
    omit_sha: set[str] = field(default_factory=set)
    """File paths listed without ``Sha256``."""
    redirect: bool = False
    """Send file downloads through a 302 to ``/cdn/{sha256}`` (ModelScope's CDN)."""
    bytes_per_second: float | None = None


class FakeModelScope:
    """The server; use as a context manager or call start()/stop()."""

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[Request] = []
        self.faults = Faults()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes | Path],
        *,
        revision: str = "master",
        tag: bool = False,
        token: str | None = None,
    ) -> None:
        """Add (or replace) the files of a repository at one branch (or tag)."""
        fake_files: dict[str, FakeFile] = {}
        for path, content in files.items():
            if isinstance(content, bytes):
                sha = hashlib.sha256(content).hexdigest()
                fake_files[path] = FakeFile(path, len(content), sha, data=content)
            else:
                sha = hashlib.sha256(content.read_bytes()).hexdigest()
                fake_files[path] = FakeFile(path, content.stat().st_size, sha, source=content)
        repo = self.repos.setdefault(repo_id.lower(), FakeRepo(repo_id, {}))
        repo.revisions[revision] = fake_files
        if tag:
            repo.tags.add(revision)
        if token is not None:
            repo.token = token

    # ---- lifecycle ---------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeModelScope:
        fake = self

        class Handler(_Handler):
            server_state = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeModelScope:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- inspection --------------------------------------------------------

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def file_gets(self, path: str) -> list[Request]:
        """The GETs of one file's bytes (before any redirect)."""
        with self._lock:
            return [r for r in self.requests if r.query.get("FilePath") == path]

    def reset_requests(self) -> None:
        with self._lock:
            self.requests.clear()


class _Handler(BaseHTTPRequestHandler):
    server_state: FakeModelScope
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _json(self, status: int, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _ok(self, data: object) -> None:
        self._json(200, {"Code": 200, "Data": data, "Message": "success", "Success": True})

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"Code": status, "Message": message, "Success": False})

    def do_GET(self) -> None:
        fake = self.server_state
        split = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(split.query).items()}
        fake.record(
            Request("GET", split.path, query, {k.lower(): v for k, v in self.headers.items()})
        )
        if match := _CDN.match(split.path):
            self._cdn(match["sha"])
            return
        match = _API.match(split.path)
        if match is None:
            self._error(404, "Unknown route")
            return
        repo = fake.repos.get(match["repo"].lower())
        if repo is None or match["repo"] in fake.faults.missing:
            self._error(404, f"Model {match['repo']} not exists")
            return
        if repo.token is not None:
            cookie = self.headers.get("Cookie", "")
            if "m_session_id=" not in cookie:
                self._error(401, "Unauthorized: login required")
                return
            if f"m_session_id={repo.token}" not in cookie:
                self._error(403, "Forbidden")
                return
        if match["kind"] == "revisions":
            branches = [r for r in repo.revisions if r not in repo.tags]
            self._ok(
                {
                    "RevisionMap": {
                        "Branches": [{"Revision": r, "CreatedAt": 1700000000} for r in branches],
                        "Tags": [{"Revision": r, "CreatedAt": 1700000000} for r in repo.tags],
                    }
                }
            )
            return
        files = repo.revisions.get(query.get("Revision", "master"))
        if files is None:
            self._error(404, "Revision not exists")
            return
        if match["kind"] == "repo/files":
            self._ok({"Files": self._listing(files)})
            return
        file = files.get(query.get("FilePath", ""))
        if file is None or file.path in fake.faults.missing:
            self._error(404, "File not exists")
            return
        if fake.faults.redirect:
            self.send_response(302)
            self.send_header("Location", f"/cdn/{file.sha256}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send_file(file)

    def _listing(self, files: dict[str, FakeFile]) -> list[dict[str, object]]:
        omit = self.server_state.faults.omit_sha
        folders = sorted({p.rsplit("/", 1)[0] for p in files if "/" in p})
        out: list[dict[str, object]] = [
            {"Name": d.rsplit("/", 1)[-1], "Path": d, "Size": 0, "Type": "tree"} for d in folders
        ]
        for f in files.values():
            entry: dict[str, object] = {
                "CommitMessage": "upload",
                "CommittedDate": 1700000000,
                "CommitterName": "fake",
                "IsLFS": True,
                "Mode": "33188",
                "Name": f.path.rsplit("/", 1)[-1],
                "Path": f.path,
                "Revision": hashlib.sha1(f.sha256.encode(), usedforsecurity=False).hexdigest(),
                "Size": f.size,
                "Type": "blob",
            }
            if f.path not in omit:
                entry["Sha256"] = f.sha256
            out.append(entry)
        return out

    def _cdn(self, sha: str) -> None:
        for repo in self.server_state.repos.values():
            for files in repo.revisions.values():
                for file in files.values():
                    if file.sha256 == sha:
                        self._send_file(file)
                        return
        self._error(404, "No such object")

    def _send_file(self, file: FakeFile) -> None:
        faults = self.server_state.faults
        start = 0
        if m := re.match(r"bytes=(\d+)-", self.headers.get("Range", "")):
            start = int(m.group(1))
        if start >= file.size and file.size:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{file.size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(file.size - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{file.size - 1}/{file.size}")
        self.end_headers()
        drops = faults.drop_after.get(file.path)
        drop_at = drops.pop(0) if drops else None
        corrupt = file.path in faults.corrupt
        sent = start
        began = time.monotonic()
        for chunk in file.open_range(start):
            if corrupt and sent <= file.size // 2 < sent + len(chunk):
                i = file.size // 2 - sent
                chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :]
            if drop_at is not None and sent + len(chunk) > drop_at:
                self.wfile.write(chunk[: max(0, drop_at - sent)])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            try:
                self.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                return
            sent += len(chunk)
            if faults.bytes_per_second:
                delay = (sent - start) / faults.bytes_per_second - (time.monotonic() - began)
                if delay > 0:
                    time.sleep(delay)
