"""A loopback fake of the Hugging Face Hub's download API.

It speaks just enough of the Hub protocol for the real ``huggingface_hub``
client to run unmodified against it (pointed to by ``HF_ENDPOINT``):

* ``GET /api/models/{repo}/revision/{rev}`` -- repo info with file metadata;
* ``GET /api/models/{repo}/tree/{rev}`` -- file listing;
* ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` -- file metadata and bytes, with
  ``X-Repo-Commit``, ``ETag`` (the sha256), ``Content-Length`` and ``Range``.

It records every request and can misbehave on demand: drop a connection in
the middle of a file, serve corrupt bytes, answer 404s, require a token for a
gated repo, serve slowly, list files without their LFS info (as some mirrors
do) or send an ETag that is not a hash (as some proxies do). Earlier commits of
a repository stay reachable by their hash after ``add_repo`` replaces it.
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
from urllib.parse import unquote, urlsplit

_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<kind>revision|tree)/(?P<rev>[^/]+)")
_CHUNK = 256 * 1024


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
    commit: str
    files: dict[str, FakeFile]
    gated_token: str | None = None
    history: dict[str, dict[str, FakeFile]] = field(default_factory=dict)
    """Earlier commits (hash -> files), still served by hash."""


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Faults:
    drop_after: dict[str, int] = field(default_factory=dict)
    """File path -> bytes to send before dropping the connection (once each)."""
    corrupt: set[str] = field(default_factory=set)
    """File paths served with a flipped byte (same length, wrong hash)."""
    bytes_per_second: float | None = None
    """Throttle for every file body."""
    omit_lfs: set[str] = field(default_factory=set)
    """File paths listed without LFS info (no sha256 in the repository listing)."""
    opaque_etag: set[str] = field(default_factory=set)
    """File paths whose resolve endpoint sends an ETag that is not a hash."""


class FakeHub:
    """The server; use as a context manager or call start()/stop()."""

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[Request] = []
        self.faults = Faults()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- content -----------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes | Path],
        *,
        gated_token: str | None = None,
        commit: str | None = None,
    ) -> str:
        fake_files: dict[str, FakeFile] = {}
        for path, content in files.items():
            if isinstance(content, bytes):
                sha = hashlib.sha256(content).hexdigest()
                fake_files[path] = FakeFile(path, len(content), sha, data=content)
            else:
                fake_files[path] = FakeFile(
                    path, content.stat().st_size, _sha256_of(content), source=content
                )
        commit = (
            commit
            or hashlib.sha1(
                (repo_id + "".join(sorted(f.sha256 for f in fake_files.values()))).encode()
            ).hexdigest()
        )
        previous = self.repos.get(repo_id.lower())
        history = dict(previous.history) if previous else {}
        if previous is not None:
            history[previous.commit] = previous.files
        self.repos[repo_id.lower()] = FakeRepo(repo_id, commit, fake_files, gated_token, history)
        return commit

    # ---- lifecycle ---------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- inspection --------------------------------------------------------

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def count(self, method: str | None = None, contains: str = "") -> int:
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (method is None or r.method == method) and contains in r.path
            )

    def file_gets(self, path: str) -> int:
        """Body transfers of one file (GETs on its resolve URL)."""
        with self._lock:
            return sum(
                1
                for r in self.requests
                if r.method == "GET" and "/resolve/" in r.path and r.path.endswith("/" + path)
            )

    def reset_requests(self) -> None:
        with self._lock:
            self.requests.clear()


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    # ---- helpers -----------------------------------------------------------

    def _send_json(
        self, status: int, payload: object, headers: dict[str, str] | None = None
    ) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        self._send_json(
            status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message}
        )

    def _repo(self, repo_id: str) -> FakeRepo | None:
        repo = self.fake.repos.get(repo_id.lower())
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        if repo.gated_token is not None:
            auth = self.headers.get("Authorization", "")
            if auth != f"Bearer {repo.gated_token}":
                self._error(401, "GatedRepo", "Access to model is restricted")
                return None
        return repo

    def _revision_ok(self, repo: FakeRepo, rev: str) -> bool:
        if unquote(rev) in ("main", repo.commit) or unquote(rev) in repo.history:
            return True
        self._error(404, "RevisionNotFound", "Invalid rev id")
        return False

    @staticmethod
    def _at(repo: FakeRepo, rev: str) -> tuple[str, dict[str, FakeFile]]:
        rev = unquote(rev)
        if rev in repo.history:
            return rev, repo.history[rev]
        return repo.commit, repo.files

    # ---- verbs -------------------------------------------------------------

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        self.fake.record(
            Request(self.command, path, {k.lower(): v for k, v in self.headers.items()})
        )
        if match := _API.match(path):
            self._api(match["repo"], match["kind"], match["rev"])
        elif match := _RESOLVE.match(path):
            self._resolve(match["repo"], match["rev"], unquote(match["path"]))
        else:
            self._error(404, "NotFound", "Unknown route")

    def _api(self, repo_id: str, kind: str, rev: str) -> None:
        repo = self._repo(repo_id)
        if repo is None or not self._revision_ok(repo, rev):
            return
        commit, files = self._at(repo, rev)
        omit = self.fake.faults.omit_lfs
        if kind == "tree":
            self._send_json(
                200,
                [
                    {
                        "type": "file",
                        "oid": f.sha256[:40],
                        "size": f.size,
                        "path": f.path,
                        **(
                            {}
                            if f.path in omit
                            else {"lfs": {"oid": f.sha256, "size": f.size, "pointerSize": 134}}
                        ),
                    }
                    for f in files.values()
                ],
            )
            return
        self._send_json(
            200,
            {
                "_id": commit[:24],
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "sha": commit,
                "private": False,
                "gated": "auto" if repo.gated_token else False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": ["gguf"],
                "lastModified": "2026-01-01T00:00:00.000Z",
                "siblings": [
                    {
                        "rfilename": f.path,
                        "size": f.size,
                        "blobId": f.sha256[:40],
                        **(
                            {}
                            if f.path in omit
                            else {"lfs": {"sha256": f.sha256, "size": f.size, "pointerSize": 134}}
                        ),
                    }
                    for f in files.values()
                ],
            },
        )

    def _resolve(self, repo_id: str, rev: str, file_path: str) -> None:
        repo = self._repo(repo_id)
        if repo is None or not self._revision_ok(repo, rev):
            return
        commit, files = self._at(repo, rev)
        file = files.get(file_path)
        if file is None:
            self._send_json(
                404,
                {"error": "Entry not found"},
                {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit},
            )
            return
        start = 0
        range_header = self.headers.get("Range")
        if range_header and (m := re.match(r"bytes=(\d+)-", range_header)):
            start = int(m.group(1))
        status = 206 if start else 200
        self.send_response(status)
        self.send_header("X-Repo-Commit", commit)
        if file.path in self.fake.faults.opaque_etag:  # a proxy's own tag, not a hash
            etag = "px-" + hashlib.md5(file.sha256.encode(), usedforsecurity=False).hexdigest()
            self.send_header("ETag", f'"{etag}"')
        else:
            self.send_header("ETag", f'"{file.sha256}"')
            self.send_header("X-Linked-Etag", f'"{file.sha256}"')
        self.send_header("X-Linked-Size", str(file.size))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(file.size - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{file.size - 1}/{file.size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        self._send_body(file, start)

    def _send_body(self, file: FakeFile, start: int) -> None:
        faults = self.fake.faults
        drop_at = faults.drop_after.pop(file.path, None)
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
                expected = (sent - start) / faults.bytes_per_second
                delay = expected - (time.monotonic() - began)
                if delay > 0:
                    time.sleep(delay)
