"""Delete files from the shared Hugging Face cache through huggingface_hub's own cache API.

The HF cache (``$HF_HOME/hub``) is shared with every other tool on the machine,
and one blob can back several snapshots (revisions) of a repository. So the
store never unlinks a cache path it built itself: it names the snapshot entries
it wants gone (repository, commit, path), and ``scan_cache_dir`` /
``HFCacheInfo.delete_files`` remove those entries and only the blobs that no
other cached file references. A revision left with no file at all is then
dropped with ``delete_revisions`` (its snapshot folder and refs), unless that
would take the repository's folder with blobs still in it (e.g. another process's
download in progress).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from huggingface_hub import scan_cache_dir
from huggingface_hub.errors import CacheNotFound, CorruptedCacheException

__all__ = ["delete_snapshot_files"]

logger = logging.getLogger(__name__)


def delete_snapshot_files(cache: Path, files: Iterable[tuple[str, str, str]]) -> list[Path]:
    """Delete snapshot entries of the HF cache, and the blobs nothing else references.

    Args:
        cache: The HF cache folder (``$HF_HOME/hub``).
        files: ``(repo_id, commit, path in the repository)`` triples; repo ids
            compare case-insensitively. Entries not in the cache are skipped.

    Returns:
        The blob paths that were deleted (shared blobs are kept and not listed).
    """
    wanted = {(repo.lower(), commit, path) for repo, commit, path in files}
    if not wanted:
        return []
    try:
        info = scan_cache_dir(cache)
    except (CacheNotFound, CorruptedCacheException):
        return []
    targets = []
    touched: set[str] = set()
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        for revision in repo.revisions:
            for cached in revision.files:
                relative = cached.file_path.relative_to(revision.snapshot_path).as_posix()
                if (repo.repo_id.lower(), revision.commit_hash, relative) in wanted:
                    targets.append(cached)
                    touched.add(revision.commit_hash)
    if not targets:
        return []
    strategy = info.delete_files(*targets)
    strategy.execute()
    _drop_empty_revisions(cache, touched)
    deleted = sorted(strategy.blobs)
    logger.info(
        "Deleted %d snapshot file(s) and %d blob(s) from %s.", len(targets), len(deleted), cache
    )
    return deleted


def _drop_empty_revisions(cache: Path, commits: set[str]) -> None:
    try:
        info = scan_cache_dir(cache)
    except (CacheNotFound, CorruptedCacheException):
        return
    empty = []
    for repo in info.repos:
        for revision in repo.revisions:
            if revision.commit_hash not in commits or revision.files:
                continue
            others = [r for r in repo.revisions if r.commit_hash not in commits or r.files]
            blobs = repo.repo_path / "blobs"
            if not others and blobs.is_dir() and any(blobs.iterdir()):
                continue  # would delete the repo folder with blobs still in it
            empty.append(revision.commit_hash)
    if empty:
        info.delete_revisions(*empty).execute()
