"""ModelScope: pick the GGUF file(s) of a repository and fetch them into the store, verified.

ModelScope (``modelscope.cn``) hosts the same GGUF repositories as the Hugging Face
Hub for users who cannot reach the Hub. This client speaks its HTTP API (the one the
``modelscope`` SDK uses; the SDK itself is far too heavy to depend on) through httpx:

* ``GET {endpoint}/api/v1/models/{org}/{repo}/revisions`` -- branches and tags
  (``Data.RevisionMap.Branches[].Revision``); the default revision is ``master``;
* ``GET {endpoint}/api/v1/models/{org}/{repo}/repo/files?Revision=R&Recursive=True`` --
  the listing at that revision (``Data.Files[]``: ``Path``, ``Size``, ``Sha256``,
  ``Type`` ``blob``/``tree``);
* ``GET {endpoint}/api/v1/models/{org}/{repo}/repo?Revision=R&FilePath=P`` -- a file's
  bytes (``Range`` supported; redirects followed, to the CDN).

Every answer is wrapped as ``{"Code": 200, "Data": ..., "Message": ..., "Success": true}``.
The endpoint is ``MODELSCOPE_DOMAIN`` and the token ``MODELSCOPE_API_TOKEN``, sent as
the SDK sends it (the ``m_session_id`` cookie) and also as a bearer token (the SDK's
newer OpenAPI calls), to ModelScope only: httpx drops both on a redirect to another host.

The file(s) of a quantization are chosen from one listing exactly as for the Hub
(:func:`~local_llm_runtime.store.hub.select_files`). Each file goes to
``$LOCAL_LLM_HOME/blobs/sha256-<hex>.incomplete`` first -- a dropped connection is
resumed with an HTTP ``Range`` request, within the pull (retries) or by the next pull --
is hashed, compared with the sha256 ModelScope listed (a mismatch deletes it and raises
:class:`~local_llm_runtime.errors.ChecksumMismatchError`) and renamed atomically to
``blobs/sha256-<hex>``, where imported files live. Once recorded, the store resolves the
name with no request at all. A file listed without a hash is kept *unverified*, never
silently called verified.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from filelock import FileLock
from tqdm.auto import tqdm

from local_llm_runtime.errors import (
    AuthenticationError,
    ChecksumMismatchError,
    DownloadError,
    LocalLLMError,
    ModelNotFoundError,
    OfflineError,
    QuantizationNotFoundError,
    SourceUnreachableError,
    StoreError,
)
from local_llm_runtime.settings import RuntimeSettings
from local_llm_runtime.store.hub import (
    ProgressCallback,
    PullProgress,
    RepoListing,
    read_prefix_of,
    select_files,
    sha256_file,
)
from local_llm_runtime.store.records import FileRecord, Store

__all__ = [
    "DEFAULT_REVISION",
    "ModelScopeClient",
    "ModelScopeFile",
    "ModelScopeResolution",
    "StoredFile",
]

logger = logging.getLogger(__name__)

DEFAULT_REVISION = "master"
"""ModelScope's default branch (the SDK's ``MASTER_MODEL_BRANCH``)."""
_ATTEMPTS = 3
_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NO_CONNECTION = (httpx.ConnectError, httpx.ConnectTimeout)
"""No connection at all: ModelScope is unreachable (a catalog name then falls back)."""


@dataclass(frozen=True)
class ModelScopeFile:
    """One file of a repository at a revision."""

    path: str
    size: int
    sha256: str | None
    """The sha256 ModelScope listed (lower-case hex), or ``None`` if it listed none."""


@dataclass(frozen=True)
class ModelScopeResolution:
    """The file(s) a reference resolves to, all from one listing at one revision."""

    repo_id: str
    revision: str
    quant: str
    files: tuple[ModelScopeFile, ...]


@dataclass(frozen=True)
class StoredFile:
    """One file of a resolution, in the store's blobs."""

    file: ModelScopeFile
    record: FileRecord
    """Its store record: sha256 of the bytes on disk, size, repository path, verified."""
    downloaded: bool
    """Whether this pull transferred it (``False``: the blob was already in the store)."""


class _Transient(Exception):
    """A failure worth retrying (HTTP 5xx/408/429, a body cut short)."""


def _label(repo_id: str) -> str:
    return f"modelscope.cn/{repo_id}"


class ModelScopeClient:
    """Talks to ModelScope for the store: one listing per resolution, verified downloads.

    Args:
        settings: Endpoint (``MODELSCOPE_DOMAIN``), token (``MODELSCOPE_API_TOKEN``),
            offline mode and progress bars.
        sleep: Pause between attempts (injectable for tests).
        transport: An httpx transport (injectable for tests); the network by default.
    """

    def __init__(
        self,
        settings: RuntimeSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self._sleep = sleep
        self._transport = transport

    # ---- HTTP ---------------------------------------------------------------

    def _client(self) -> httpx.Client:
        headers = {"User-Agent": "local-llm-integrations"}
        token = self.settings.modelscope_token
        if token is not None:
            value = token.get_secret_value()
            headers["Cookie"] = f"m_session_id={value}"
            headers["Authorization"] = f"Bearer {value}"
        return httpx.Client(
            base_url=self.settings.modelscope_endpoint,
            headers=headers,
            timeout=_TIMEOUT,
            follow_redirects=True,
            transport=self._transport,
        )

    def _check_online(self, repo_id: str) -> None:
        if self.settings.hf_offline:
            raise OfflineError(
                f"{_label(repo_id)} is not downloaded and HF_HUB_OFFLINE is set; "
                "pull it while online (unset HF_HUB_OFFLINE)."
            )

    def _unreachable(self, repo_id: str, exc: BaseException) -> SourceUnreachableError:
        return SourceUnreachableError(
            f"Could not reach {self.settings.modelscope_endpoint} for {_label(repo_id)} "
            f"({type(exc).__name__}); check your connection or MODELSCOPE_DOMAIN."
        )

    def _check_status(self, response: httpx.Response, repo_id: str) -> None:
        status = response.status_code
        if status < 400:
            return
        if status == 404:
            raise ModelNotFoundError(
                f"{_label(repo_id)} (or the requested file or revision) not found on ModelScope; "
                "check the spelling, or set MODELSCOPE_API_TOKEN if it is private."
            )
        if status in (401, 403):
            raise AuthenticationError(
                f"ModelScope refused access to {_label(repo_id)} (HTTP {status}); set "
                "MODELSCOPE_API_TOKEN to an access token of an account that may read it "
                "(https://modelscope.cn/my/myaccesstoken)."
            )
        if status >= 500 or status in (408, 429):
            raise _Transient(f"HTTP {status}")
        raise DownloadError(
            f"ModelScope answered HTTP {status} for {_label(repo_id)}; try again later."
        )

    def _get_data(
        self, client: httpx.Client, path: str, repo_id: str, params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """GET an API path and return its ``Data`` object, retrying transient failures."""
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                response = client.get(path, params=params)
                self._check_status(response, repo_id)
                body = response.json()
                break
            except _NO_CONNECTION as exc:  # refused, DNS, no answer: retrying will not help
                raise self._unreachable(repo_id, exc) from None
            except (httpx.TransportError, _Transient) as exc:
                if attempt == _ATTEMPTS:
                    if isinstance(exc, _Transient):
                        raise DownloadError(
                            f"ModelScope answered {exc} for {_label(repo_id)}; try again later."
                        ) from None
                    raise self._unreachable(repo_id, exc) from None
                self._sleep(float(attempt))
            except ValueError:
                raise DownloadError(
                    f"ModelScope sent a malformed answer for {_label(repo_id)}; try again later."
                ) from None
        code = body.get("Code") if isinstance(body, dict) else None
        data = body.get("Data") if isinstance(body, dict) else None
        if str(code) == "404":
            raise ModelNotFoundError(f"{_label(repo_id)} not found on ModelScope.")
        if str(code) != "200" or not isinstance(data, dict):
            message = body.get("Message") if isinstance(body, dict) else None
            raise DownloadError(
                f"ModelScope answered {message or 'an error'!r} for {_label(repo_id)}; "
                "try again later."
            )
        return data

    # ---- resolve ------------------------------------------------------------

    def resolve(
        self, repo_id: str, quant: str, revision: str | None = None
    ) -> ModelScopeResolution:
        """List a repository once and choose the file(s) of a quantization.

        Args:
            repo_id: ``org/repo``.
            quant: Quantization to select (``Q4_K_M``), matched as for the Hub.
            revision: Branch or tag; ``None`` is ``master``.

        Returns:
            The chosen file(s) with their sizes and the sha256 ModelScope lists.

        Raises:
            ModelNotFoundError: No such repository or revision.
            QuantizationNotFoundError: No file of that quantization (lists the ones there).
            AuthenticationError: The repository is private and the token missing or wrong.
            SourceUnreachableError: ModelScope could not be reached.
            OfflineError: ``HF_HUB_OFFLINE`` is set.
        """
        chosen_revision, entries = self._listing(repo_id, revision)
        try:
            chosen = select_files(list(entries), quant)
        except QuantizationNotFoundError as exc:
            raise QuantizationNotFoundError(f"{_label(repo_id)}: {exc}") from None
        files = []
        for path in chosen:
            entry = entries[path]
            raw_sha = entry.get("Sha256")
            sha = raw_sha.lower() if isinstance(raw_sha, str) else None
            size = entry.get("Size")
            files.append(
                ModelScopeFile(
                    path=path,
                    size=int(size) if isinstance(size, int | str) and str(size).isdigit() else 0,
                    sha256=sha if sha is not None and _SHA256.fullmatch(sha) else None,
                )
            )
        return ModelScopeResolution(repo_id, chosen_revision, quant, tuple(files))

    def _listing(self, repo_id: str, revision: str | None) -> tuple[str, dict[str, dict[str, Any]]]:
        """(the revision listed, ``{path: ModelScope's file entry}``): two API calls."""
        self._check_online(repo_id)
        with self._client() as client:
            revisions = self._get_data(client, f"/api/v1/models/{repo_id}/revisions", repo_id)
            chosen_revision = _pick_revision(revisions, revision, repo_id)
            listing = self._get_data(
                client,
                f"/api/v1/models/{repo_id}/repo/files",
                repo_id,
                {"Revision": chosen_revision, "Recursive": "True"},
            )
        entries: dict[str, dict[str, Any]] = {}
        for entry in listing.get("Files") or []:
            if isinstance(entry, dict) and entry.get("Type") != "tree":
                path = entry.get("Path")
                if isinstance(path, str) and path:
                    entries[path] = entry
        return chosen_revision, entries

    def list_sizes(self, repo_id: str, revision: str | None = None) -> RepoListing:
        """Every file of a repository with its size, at one revision (for ``:auto``).

        Raises:
            See :meth:`resolve`.
        """
        chosen, entries = self._listing(repo_id, revision)
        sizes = {}
        for path, entry in entries.items():
            size = entry.get("Size")
            if isinstance(size, int | str) and str(size).isdigit():
                sizes[path] = int(size)
        return RepoListing(repo_id, chosen, sizes)

    def read_prefix(
        self,
        repo_id: str,
        revision: str,
        path: str,
        limit: int,
        *,
        enough: Callable[[bytes], bool] | None = None,
    ) -> bytes:
        """The first bytes of a file, up to ``limit``: one ``Range`` request.

        As :meth:`HubClient.read_prefix <local_llm_runtime.store.hub.HubClient.read_prefix>`.

        Raises:
            SourceUnreachableError: ModelScope could not be reached.
            DownloadError: ModelScope answered an error.
        """
        self._check_online(repo_id)
        out = b""
        try:
            with (
                self._client() as client,
                client.stream(
                    "GET",
                    f"/api/v1/models/{repo_id}/repo",
                    params={"Revision": revision, "FilePath": path},
                    headers={"Range": f"bytes=0-{limit - 1}", "Accept-Encoding": "identity"},
                ) as response,
            ):
                self._check_status(response, repo_id)
                out = read_prefix_of(response.iter_bytes(), limit, enough)
        except LocalLLMError:
            raise
        except _Transient as exc:
            raise DownloadError(
                f"ModelScope answered {exc} for {_label(repo_id)}; try again later."
            ) from None
        except httpx.TransportError as exc:
            raise self._unreachable(repo_id, exc) from None
        return out

    # ---- download -----------------------------------------------------------

    def download(
        self,
        resolution: ModelScopeResolution,
        store: Store,
        *,
        progress: ProgressCallback | None = None,
    ) -> list[StoredFile]:
        """Fetch every file of a resolution into the store's blobs and verify it.

        Args:
            resolution: What :meth:`resolve` chose.
            store: The store whose ``blobs`` directory receives the files.
            progress: Called with ``pulling`` events as bytes arrive (once, complete, for a
                blob already in the store), then ``verifying sha256 digest`` per file.

        Returns:
            Each file's store record and whether this call transferred it.

        Raises:
            ChecksumMismatchError: A file does not hash to the listed sha256 (it is deleted).
            SourceUnreachableError: ModelScope could not be reached.
            DownloadError: The transfer failed after retries (the partial file is kept and
                the next pull resumes it).
        """
        self._check_online(resolution.repo_id)
        try:
            store.blobs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"Cannot write {store.blobs_dir}: {exc.strerror}.") from None
        out = []
        # One process at a time writes ModelScope downloads: a second one waits, then
        # finds the blob in place.
        with FileLock(str(store.home / ".modelscope-download.lock")), self._client() as client:
            for file in resolution.files:
                out.append(self._one(client, resolution, file, store, progress))
        return out

    def _one(
        self,
        client: httpx.Client,
        resolution: ModelScopeResolution,
        file: ModelScopeFile,
        store: Store,
        progress: ProgressCallback | None,
    ) -> StoredFile:
        def report(done: int) -> None:
            if progress is not None:
                progress(PullProgress("pulling", file.path, file.sha256, file.size, done))

        report(0)
        if file.sha256 is not None:
            target = store.blob_path(file.sha256)
            if target.is_file() and target.stat().st_size == file.size:
                report(file.size)
                record = FileRecord(sha256=file.sha256, size=file.size, repo_path=file.path)
                return StoredFile(file, record, downloaded=False)
            partial = target.with_name(target.name + ".incomplete")
        else:
            key = f"{resolution.repo_id.lower()}@{resolution.revision}/{file.path}"
            partial = store.blobs_dir / (
                "modelscope-" + hashlib.sha256(key.encode()).hexdigest() + ".incomplete"
            )
        self._transfer(client, resolution, file, partial, report)
        report(file.size)
        if progress is not None:
            progress(PullProgress("verifying sha256 digest", file.path, file.sha256))
        actual = sha256_file(partial)
        verified = file.sha256 is not None
        if file.sha256 is not None and actual != file.sha256:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise ChecksumMismatchError(
                f"{file.path} from {_label(resolution.repo_id)} is corrupt (hash {actual[:12]}..., "
                f"expected {file.sha256[:12]}...); it was deleted, pull again."
            )
        if not verified:
            logger.warning(
                "%s listed no sha256 for %s: it is recorded unverified (sha256 %s... of the "
                "bytes received).",
                _label(resolution.repo_id),
                file.path,
                actual[:12],
            )
        size = partial.stat().st_size
        try:
            os.replace(partial, store.blob_path(actual))
        except OSError as exc:
            raise StoreError(f"Cannot write {store.blobs_dir}: {exc.strerror}.") from None
        record = FileRecord(sha256=actual, size=size, repo_path=file.path, verified=verified)
        return StoredFile(file, record, downloaded=True)

    def _transfer(
        self,
        client: httpx.Client,
        resolution: ModelScopeResolution,
        file: ModelScopeFile,
        partial: Path,
        report: Callable[[int], None],
    ) -> None:
        """Bring ``partial`` to the whole file, resuming what is there with ``Range``."""
        url = f"/api/v1/models/{resolution.repo_id}/repo"
        params = {"Revision": resolution.revision, "FilePath": file.path}
        for attempt in range(1, _ATTEMPTS + 1):
            have = partial.stat().st_size if partial.exists() else 0
            if have > file.size:  # not a prefix of this file: start over
                partial.unlink()
                have = 0
            if have == file.size and have > 0:
                return
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                with client.stream("GET", url, params=params, headers=headers) as response:
                    if response.status_code == 416:  # the partial is stale: start over
                        partial.unlink()
                        raise _Transient("HTTP 416")
                    self._check_status(response, resolution.repo_id)
                    if response.status_code != 206:
                        have = 0  # the server sent the whole file
                    with (
                        _bar(self.settings, file, have) as bar,
                        partial.open("ab" if have else "wb") as out,
                    ):
                        for chunk in response.iter_bytes():  # as it arrives: a drop keeps it
                            out.write(chunk)
                            have += len(chunk)
                            bar.update(len(chunk))
                            report(have)
                if have < file.size:
                    raise _Transient(f"{file.size - have} bytes short")
                return
            except LocalLLMError:  # typed already (some are OSErrors: not the store's fault)
                raise
            except _NO_CONNECTION as exc:
                raise self._unreachable(resolution.repo_id, exc) from None
            except (httpx.TransportError, _Transient) as exc:
                if attempt == _ATTEMPTS:  # the bytes received so far stay for the next pull
                    reason = str(exc) if isinstance(exc, _Transient) else type(exc).__name__
                    raise DownloadError(
                        f"Download of {file.path} from {_label(resolution.repo_id)} failed "
                        f"({reason}); pull again to resume it."
                    ) from None
                logger.warning(
                    "Download of %s failed (%s); resuming (%d/%d).",
                    file.path,
                    type(exc).__name__,
                    attempt,
                    _ATTEMPTS - 1,
                )
                self._sleep(float(attempt))
            except OSError as exc:
                raise StoreError(f"Cannot write {partial}: {exc.strerror}.") from None
        raise AssertionError("unreachable")  # pragma: no cover


def _bar(settings: RuntimeSettings, file: ModelScopeFile, initial: int) -> tqdm[Any]:
    return tqdm(
        total=file.size or None,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=file.path.rsplit("/", 1)[-1],
        disable=not settings.progress_bars,
        dynamic_ncols=True,
    )


def _pick_revision(data: dict[str, Any], requested: str | None, repo_id: str) -> str:
    """The revision to list: the requested branch or tag, else ``master``."""
    revision_map = data.get("RevisionMap")
    names: list[str] = []
    branches: list[str] = []
    if isinstance(revision_map, dict):
        for kind in ("Branches", "Tags"):
            for item in revision_map.get(kind) or []:
                name = item.get("Revision") if isinstance(item, dict) else None
                if isinstance(name, str) and name:
                    names.append(name)
                    if kind == "Branches":
                        branches.append(name)
    wanted = requested or DEFAULT_REVISION
    if not names or wanted in names:
        return wanted
    if requested is None and branches:
        return branches[0]
    raise ModelNotFoundError(
        f"{_label(repo_id)} has no revision {wanted!r}; it has {', '.join(names)}."
    )
