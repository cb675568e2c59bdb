"""Hugging Face Hub: pick the GGUF file(s) of a repository and fetch them, verified.

Resolution lists the repository once, at a resolved commit, with file metadata
(sizes and LFS sha256), then chooses the file(s) whose name carries the wanted
quantization, case-insensitively: a single file if there is one, else a
complete set of split shards (``-00001-of-00003.gguf``) from that same commit.

Transfers go through ``huggingface_hub.hf_hub_download`` into the standard HF
cache (resume on dropped connections, per-blob lock so concurrent processes
download once, progress bars). It only checks sizes, so every file is hashed
afterwards and a mismatch deletes the blob and raises
:class:`~local_llm_runtime.errors.ChecksumMismatchError`.

The expected hash comes from the listing (the LFS sha256) or, when the listing
omits it (some mirrors and proxies do), from the file's own resolve endpoint
(``X-Linked-Etag``/``ETag``: the LFS sha256, or the git blob sha1 of a small
file), as ``huggingface_hub.get_hf_file_metadata`` reports it. Only when neither
carries a hash is a file kept *unverified*: recorded as such, never called
verified (trust on first use is never silent).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, get_hf_file_metadata, get_token, hf_hub_download, hf_hub_url
from huggingface_hub import constants as hf_constants
from huggingface_hub import errors as hf_errors
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
)
from local_llm_runtime.settings import RuntimeSettings

__all__ = [
    "FetchedFile",
    "HubClient",
    "HubFile",
    "HubResolution",
    "ProgressCallback",
    "PullProgress",
    "RepoListing",
    "select_files",
    "sha256_file",
]

logger = logging.getLogger(__name__)

_SPLIT = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.gguf$", re.IGNORECASE)
_QUANT_TOKEN = re.compile(
    r"(?<![a-z0-9])((?:ud-)?(?:i?q\d(?:_[a-z0-9]+)*|bf16|f16|f32))(?![a-z0-9_])", re.IGNORECASE
)
_DOWNLOAD_ATTEMPTS = 3
_HASH_CHUNK = 8 * 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1 = re.compile(r"[0-9a-f]{40}")
_PREFIX_CHECKPOINT = 1 << 20
"""First size at which :meth:`HubClient.read_prefix` asks whether it has read enough."""


@dataclass(frozen=True)
class HubFile:
    """One file of a repository at a commit."""

    path: str
    size: int
    sha256: str | None
    """sha256 the Hub reported: the listing's LFS sha256, else the resolve endpoint's ETag."""
    git_sha1: str | None = None
    """Git blob sha1 of the content (the ETag of a non-LFS file), when no sha256 exists."""

    @property
    def verifiable(self) -> bool:
        """Whether the Hub sent any hash to check the bytes against."""
        return self.sha256 is not None or self.git_sha1 is not None


@dataclass(frozen=True)
class FetchedFile:
    """One file of a resolution, on disk in the HF cache."""

    file: HubFile
    path: Path
    """Its snapshot path."""
    sha256: str
    """sha256 of the bytes on disk."""
    verified: bool
    """Whether they matched a hash the Hub sent (``False``: the Hub sent none)."""
    downloaded: bool
    """Whether this pull put the content into the cache (``False``: it was already there)."""


@dataclass(frozen=True)
class RepoListing:
    """Every file of a repository at one commit, with its size (for ``:auto``)."""

    repo_id: str
    revision: str
    sizes: dict[str, int]
    """Path -> bytes."""


@dataclass(frozen=True)
class HubResolution:
    """The file(s) a reference resolves to, pinned to a commit."""

    repo_id: str
    revision: str
    quant: str
    files: tuple[HubFile, ...]


def _is_candidate(path: str) -> bool:
    name = path.rsplit("/", 1)[-1].lower()
    return name.endswith(".gguf") and not name.startswith("mmproj")


def _quant_pattern(quant: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![a-z0-9]){re.escape(quant.lower())}(?![a-z0-9_])", re.IGNORECASE)


def available_quants(paths: Sequence[str]) -> list[str]:
    """The quantizations that the GGUF file names of a repository mention."""
    found = {
        match.group(1).upper()
        for path in paths
        if _is_candidate(path)
        for match in _QUANT_TOKEN.finditer(path)
    }
    return sorted(found)


def select_files(paths: Sequence[str], quant: str) -> list[str]:
    """Choose the GGUF file(s) of one quantization from a repository listing.

    A single file wins over split shards; among several, the shortest path wins
    (then alphabetical order), so the choice is deterministic. A split set is
    used only if every shard is listed.

    Args:
        paths: Every file path in the repository.
        quant: The quantization (``Q4_K_M``), matched case-insensitively as a
            whole token of the file name.

    Returns:
        The chosen path(s), shards in order.

    Raises:
        QuantizationNotFoundError: If no file or complete shard set matches.
    """
    pattern = _quant_pattern(quant)
    matching = [p for p in paths if _is_candidate(p) and pattern.search(p)]
    singles = sorted((p for p in matching if not _SPLIT.match(p)), key=lambda p: (len(p), p))
    if singles:
        return [singles[0]]
    groups: dict[tuple[str, int], dict[int, str]] = {}
    for path in matching:
        match = _SPLIT.match(path)
        if match:
            key = (match["prefix"], int(match["total"]))
            groups.setdefault(key, {})[int(match["index"])] = path
    for (_prefix, total), shards in sorted(groups.items()):
        if total >= 1 and sorted(shards) == list(range(1, total + 1)):
            return [shards[i] for i in range(1, total + 1)]
    hint = missing_gguf_hint(paths)
    raise QuantizationNotFoundError(f"No {quant.upper()} GGUF file found.{hint}")


def missing_gguf_hint(paths: Sequence[str]) -> str:
    """What a listing offers instead, for an error (leading space; names no missing quant).

    Only quantizations with a single file or a complete shard set are "available"; a
    split set with missing shards is named with what is missing (a listing mid-upload),
    and a repository whose only GGUFs are projectors (``mmproj-*``) says so.
    """
    usable, incomplete = [], []
    for quant in available_quants(paths):
        pattern = _quant_pattern(quant)
        matching = [p for p in paths if _is_candidate(p) and pattern.search(p)]
        if any(not _SPLIT.match(p) for p in matching):
            usable.append(quant)
            continue
        shards: dict[int, set[int]] = {}
        for path in matching:
            match = _SPLIT.match(path)
            if match:
                shards.setdefault(int(match["total"]), set()).add(int(match["index"]))
        if any(found == set(range(1, total + 1)) for total, found in shards.items()):
            usable.append(quant)
        else:
            total, found = max(shards.items())
            missing = sorted(set(range(1, total + 1)) - found)
            listed = ", ".join(str(i) for i in missing)
            incomplete.append(f"{quant} (shard {listed} of {total} not listed)")
    hint = f" Available: {', '.join(usable)}." if usable else ""
    if incomplete:
        hint += (
            f" Incomplete split files: {'; '.join(incomplete)}; the upload may be "
            "unfinished: try again later or choose another quantization."
        )
    if not usable and not incomplete:
        names = [p for p in paths if p.lower().endswith(".gguf")]
        hint = (
            f" Its only GGUF files are projectors ({', '.join(names)}), not a model."
            if names
            else " The repository has no GGUF files."
        )
        hint += " Use a repository with GGUF model files (often named '...-GGUF')."
    return hint


def read_prefix_of(
    chunks: Iterable[bytes], limit: int, enough: Callable[[bytes], bool] | None = None
) -> bytes:
    """The first bytes of a streamed body: up to ``limit``, or fewer once ``enough`` says so.

    ``enough`` is asked with the bytes so far each time they pass 1 MiB, 2 MiB, 4 MiB, ...
    (a GGUF header is complete); the caller closes the response after.
    """
    out = bytearray()
    checkpoint = _PREFIX_CHECKPOINT
    for chunk in chunks:
        out += chunk
        if len(out) >= limit:
            break
        if enough is not None and len(out) >= checkpoint:
            if enough(bytes(out)):
                break
            checkpoint = max(checkpoint * 2, len(out))
    return bytes(out[:limit])


def sha256_file(path: Path) -> str:
    """Hash a file in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_sha1(path: Path) -> str:
    r"""The git object id of a file's content (``sha1("blob <size>\0" + content)``)."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _Progress(tqdm):  # type: ignore[type-arg]
    """Bytes, rate and ETA on stderr; on or off by our settings, not by import-time env."""

    enabled = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = not self.enabled
        kwargs.setdefault("dynamic_ncols", True)
        super().__init__(*args, **kwargs)


class _QuietProgress(_Progress):
    enabled = False


@dataclass(frozen=True)
class PullProgress:
    """One step of a pull, for a progress callback (``/api/pull`` streams them as Ollama).

    ``status`` is ``pulling manifest`` (resolving the reference), ``pulling`` (bytes of
    ``file`` arriving: ``completed`` of ``total``), ``verifying sha256 digest`` or
    ``writing manifest``.
    """

    status: str
    file: str | None = None
    """Path of the file in the repository (``pulling``, ``verifying sha256 digest``)."""
    digest: str | None = None
    """The file's sha256 (hex) when the Hub sent it, else ``None``."""
    total: int | None = None
    """Bytes of the file."""
    completed: int | None = None
    """Bytes received so far (the whole size once the file is in the cache)."""


ProgressCallback = Callable[[PullProgress], None]
"""Receives :class:`PullProgress` events, on the pulling thread."""


def _report_bytes(progress: ProgressCallback, file: HubFile, done: int) -> None:
    progress(PullProgress("pulling", file.path, file.sha256, file.size, done))


def _reporting_tqdm(base: type[_Progress], report: Callable[[int], None]) -> type[_Progress]:
    """``base`` (a tqdm class) that also reports the bytes counted so far to ``report``."""

    class _Reporting(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.reported = int(kwargs.get("initial") or 0)  # a resumed download starts there
            if self.reported:
                report(self.reported)

        def update(self, n: float | None = 1) -> bool | None:
            self.reported += int(n or 0)  # a disabled tqdm does not count: count here
            report(self.reported)
            return super().update(n)  # type: ignore[no-any-return]

    return _Reporting


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, hf_errors.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        return status is not None and (status >= 500 or status in (408, 429))
    module = type(exc).__module__
    return isinstance(exc, ConnectionError | TimeoutError) or module.startswith(
        ("httpx", "httpcore", "requests", "urllib3")
    )


def _login_token(path: Path | None) -> str | None:
    """The token saved by ``hf auth login`` (never logged).

    Where our settings' token file is huggingface_hub's own (the usual case),
    ``huggingface_hub.get_token()`` reads it, refreshing an expiring OAuth token;
    otherwise (``HF_HOME`` changed after import) the file is read directly.
    """
    if path is None:
        return None
    if Path(hf_constants.HF_TOKEN_PATH).expanduser() == path:
        return get_token()
    try:
        token = path.read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return token or None


class HubClient:
    """Talks to the Hub for the store: one listing per resolution, verified downloads.

    Args:
        settings: Endpoint, token, cache and offline mode (read from the environment).
        sleep: Pause between download attempts (injectable for tests).
    """

    def __init__(
        self, settings: RuntimeSettings, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.settings = settings
        self._sleep = sleep

    def _api(self) -> HfApi:
        return HfApi(endpoint=self.settings.hf_endpoint, token=self._token())

    def _token(self) -> str | bool:
        # False (not None) so huggingface_hub never picks a token by itself: the one we
        # pass comes from our settings (HF_TOKEN), else from the `hf auth login` file.
        return self.settings.token_value() or _login_token(self.settings.hf_token_path) or False

    def _check_online(self, what: str) -> None:
        if self.settings.hf_offline:
            raise OfflineError(
                f"{what} is not downloaded and HF_HUB_OFFLINE is set; "
                "pull it while online (unset HF_HUB_OFFLINE)."
            )

    def _translate(self, exc: BaseException, repo_id: str) -> LocalLLMError:
        if isinstance(exc, LocalLLMError):
            return exc
        if isinstance(exc, hf_errors.GatedRepoError):
            return AuthenticationError(
                f"hf.co/{repo_id} is gated: accept its terms on the Hub, then set HF_TOKEN "
                "(or run 'hf auth login') with a token of that account."
            )
        if isinstance(exc, hf_errors.RepositoryNotFoundError):
            return ModelNotFoundError(
                f"Repository hf.co/{repo_id} not found on the Hub; check the spelling, "
                "or set HF_TOKEN (or run 'hf auth login') if it is private."
            )
        if isinstance(exc, hf_errors.RevisionNotFoundError):
            return ModelNotFoundError(f"The requested revision of hf.co/{repo_id} does not exist.")
        if isinstance(exc, hf_errors.EntryNotFoundError):
            return ModelNotFoundError(
                f"A file of hf.co/{repo_id} vanished from the Hub; pull again."
            )
        if isinstance(exc, hf_errors.OfflineModeIsEnabled):
            return OfflineError(f"hf.co/{repo_id} is not available offline; pull it while online.")
        if isinstance(exc, hf_errors.HfHubHTTPError):
            status = getattr(getattr(exc, "response", None), "status_code", "?")
            if status in (401, 403):
                return AuthenticationError(
                    f"The Hub refused access to hf.co/{repo_id} (HTTP {status}); "
                    "check HF_TOKEN or 'hf auth login'."
                )
            return DownloadError(
                f"The Hub answered HTTP {status} for hf.co/{repo_id}; try again later."
            )
        unreachable = SourceUnreachableError if _is_transient(exc) else DownloadError
        return unreachable(
            f"Could not reach {self.settings.hf_endpoint} for hf.co/{repo_id} "
            f"({type(exc).__name__}); check your connection or HF_ENDPOINT "
            "(a mirror such as https://hf-mirror.com)."
        )

    def resolve(self, repo_id: str, quant: str, revision: str = "main") -> HubResolution:
        """List a repository once and choose the file(s) of a quantization.

        Args:
            repo_id: ``org/repo``.
            quant: Quantization to select (``Q4_K_M``).
            revision: Branch, tag or commit to resolve.

        Returns:
            The chosen file(s), pinned to the commit the listing came from.
        """
        self._check_online(f"hf.co/{repo_id}")
        try:
            info = self._api().model_info(repo_id, revision=revision, files_metadata=True)
        except Exception as exc:
            raise self._translate(exc, repo_id) from None
        if not info.sha:
            raise DownloadError(f"The Hub returned no commit for hf.co/{repo_id}; try again later.")
        siblings = {s.rfilename: s for s in info.siblings or []}
        try:
            chosen = select_files(list(siblings), quant)
        except QuantizationNotFoundError as exc:
            raise QuantizationNotFoundError(f"hf.co/{repo_id}: {exc}") from None
        # The Hub's own spelling of the id: one cache folder whatever case the user typed.
        canonical = info.id if info.id and info.id.lower() == repo_id.lower() else repo_id
        files = []
        for path in chosen:
            sibling = siblings[path]
            sha = sibling.lfs.sha256.lower() if sibling.lfs and sibling.lfs.sha256 else None
            size = sibling.lfs.size if sibling.lfs else sibling.size
            git_sha1 = None
            if sha is None:  # listing without LFS info: ask the file's own endpoint
                sha, git_sha1 = self._hash_from_headers(canonical, info.sha, path)
            files.append(HubFile(path=path, size=int(size or 0), sha256=sha, git_sha1=git_sha1))
        return HubResolution(repo_id=canonical, revision=info.sha, quant=quant, files=tuple(files))

    def _hash_from_headers(self, repo_id: str, commit: str, path: str) -> tuple[str | None, ...]:
        """(sha256, git sha1) from the resolve endpoint's ETag; ``(None, None)`` if not a hash."""
        url = hf_hub_url(repo_id, path, revision=commit, endpoint=self.settings.hf_endpoint)
        try:
            meta = get_hf_file_metadata(
                url, token=self._token(), endpoint=self.settings.hf_endpoint
            )
        except Exception as exc:
            raise self._translate(exc, repo_id) from None
        etag = (meta.etag or "").strip('"').lower()
        if _SHA256.fullmatch(etag):
            return etag, None
        if _GIT_SHA1.fullmatch(etag):
            return None, etag
        return None, None

    def download(
        self, resolution: HubResolution, *, progress: ProgressCallback | None = None
    ) -> list[FetchedFile]:
        """Fetch every file of a resolution into the HF cache and verify it.

        Args:
            resolution: What :meth:`resolve` chose.
            progress: Called with ``pulling`` events as bytes arrive (and once per file
                already cached, complete), then ``verifying sha256 digest`` per file.

        Returns:
            For each file: its snapshot path, sha256, whether a Hub hash verified it
            and whether this call transferred it (vs. found it in the cache).

        Raises:
            ChecksumMismatchError: If a file's content does not match the Hub's sha256
                (the bad blob is deleted first).
            DownloadError: If the transfer fails after retries.
        """
        self._check_online(f"hf.co/{resolution.repo_id}")
        out = []
        for file in resolution.files:
            blobs_before = self._blob_names(resolution.repo_id)
            report: Callable[[int], None] | None = None
            if progress is not None:
                report = functools.partial(_report_bytes, progress, file)

                report(0)
            path = self._download_one(resolution, file, report)
            if progress is not None and report is not None:
                report(file.size)
                progress(PullProgress("verifying sha256 digest", file.path, file.sha256))
            sha, verified = self._verify(resolution, file, path)
            blob = Path(os.readlink(path)).name if path.is_symlink() else None
            downloaded = blob is not None and blob not in blobs_before
            out.append(FetchedFile(file, path, sha, verified, downloaded))
        return out

    def _blob_names(self, repo_id: str) -> set[str]:
        blobs = self.settings.hf_cache / ("models--" + repo_id.replace("/", "--")) / "blobs"
        try:
            return {entry.name for entry in blobs.iterdir()}
        except OSError:
            return set()

    def _download_one(
        self, resolution: HubResolution, file: HubFile, report: Callable[[int], None] | None = None
    ) -> Path:
        tqdm_class: type[_Progress] = _Progress if self.settings.progress_bars else _QuietProgress
        if report is not None:
            tqdm_class = _reporting_tqdm(tqdm_class, report)
        for attempt in range(1, _DOWNLOAD_ATTEMPTS + 1):
            try:
                return Path(
                    hf_hub_download(
                        resolution.repo_id,
                        file.path,
                        revision=resolution.revision,
                        cache_dir=self.settings.hf_cache,
                        endpoint=self.settings.hf_endpoint,
                        token=self._token(),
                        tqdm_class=tqdm_class,
                    )
                )
            except Exception as exc:
                consistency = isinstance(exc, OSError) and "Consistency check" in str(exc)
                if attempt < _DOWNLOAD_ATTEMPTS and (_is_transient(exc) or consistency):
                    logger.warning(
                        "Download of %s failed (%s); retrying (%d/%d).",
                        file.path,
                        type(exc).__name__,
                        attempt,
                        _DOWNLOAD_ATTEMPTS - 1,
                    )
                    self._sleep(float(attempt))
                    continue
                raise self._translate(exc, resolution.repo_id) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _verify(self, resolution: HubResolution, file: HubFile, path: Path) -> tuple[str, bool]:
        actual = sha256_file(path)
        if file.sha256 is not None:
            expected, got = file.sha256.lower(), actual
        elif file.git_sha1 is not None:
            expected, got = file.git_sha1.lower(), git_blob_sha1(path)
        else:
            logger.warning(
                "hf.co/%s sent no hash for %s: it is recorded unverified (sha256 %s... of the "
                "bytes received).",
                resolution.repo_id,
                file.path,
                actual[:12],
            )
            return actual, False
        if got != expected:
            blob = path.resolve()
            for victim in (path, blob):
                with contextlib.suppress(OSError):
                    os.unlink(victim)
            with contextlib.suppress(OSError):
                path.parent.rmdir()
            raise ChecksumMismatchError(
                f"{file.path} from hf.co/{resolution.repo_id} is corrupt "
                f"(hash {got[:12]}..., expected {expected[:12]}...); "
                "it was deleted, pull again."
            )
        return actual, True

    # ---- for ``:auto`` quantization (store/auto_quant.py) --------------------------------

    def list_sizes(self, repo_id: str, revision: str = "main") -> RepoListing:
        """List a repository once: every file's size, pinned to the commit listed.

        Args:
            repo_id: ``org/repo``.
            revision: Branch, tag or commit.

        Returns:
            The Hub's spelling of the id, the commit and ``{path: bytes}``.
        """
        self._check_online(f"hf.co/{repo_id}")
        try:
            info = self._api().model_info(repo_id, revision=revision, files_metadata=True)
        except Exception as exc:
            raise self._translate(exc, repo_id) from None
        if not info.sha:
            raise DownloadError(f"The Hub returned no commit for hf.co/{repo_id}; try again later.")
        canonical = info.id if info.id and info.id.lower() == repo_id.lower() else repo_id
        sizes = {
            s.rfilename: int((s.lfs.size if s.lfs else s.size) or 0) for s in info.siblings or []
        }
        return RepoListing(repo_id=canonical, revision=info.sha, sizes=sizes)

    def read_prefix(
        self,
        repo_id: str,
        revision: str,
        path: str,
        limit: int,
        *,
        enough: Callable[[bytes], bool] | None = None,
    ) -> bytes:
        """The first bytes of a file, up to ``limit`` (one ``Range`` request; nothing cached).

        Servers that ignore ``Range`` send the whole file: only what is needed is read
        before the connection is closed.

        Args:
            repo_id: ``org/repo``.
            revision: The commit.
            path: The file in the repository.
            limit: The most bytes to read.
            enough: Asked with the bytes so far each time they pass 1 MiB, 2 MiB, 4 MiB,
                ...; ``True`` stops reading there (a GGUF header is complete).

        Raises:
            DownloadError: If the Hub cannot be reached or answers an error.
        """
        import httpx

        self._check_online(f"hf.co/{repo_id}")
        url = hf_hub_url(repo_id, path, revision=revision, endpoint=self.settings.hf_endpoint)
        headers = {"Range": f"bytes=0-{limit - 1}", "Accept-Encoding": "identity"}
        token = self._token()
        if isinstance(token, str):
            headers["Authorization"] = f"Bearer {token}"  # httpx drops it on cross-host redirects
        out = b""
        try:
            with (
                httpx.Client(follow_redirects=True, timeout=30.0) as client,
                client.stream("GET", url, headers=headers) as response,
            ):
                if response.status_code in (401, 403):
                    raise AuthenticationError(
                        f"The Hub refused access to hf.co/{repo_id} (HTTP "
                        f"{response.status_code}); check HF_TOKEN or 'hf auth login'."
                    )
                if response.status_code not in (200, 206):
                    raise DownloadError(
                        f"The Hub answered HTTP {response.status_code} for {path} of "
                        f"hf.co/{repo_id}; try again later."
                    )
                out = read_prefix_of(response.iter_bytes(), limit, enough)
        except LocalLLMError:
            raise
        except httpx.HTTPError as exc:
            raise self._translate(exc, repo_id) from None
        return out
