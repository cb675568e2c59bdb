"""Human-readable sizes and ages for the CLI (pure functions)."""

from __future__ import annotations

from datetime import datetime, timezone

__all__ = ["human_age", "human_size"]


def human_size(size: int) -> str:
    """Format bytes the way ``ollama list`` does (decimal units)."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit in ("B", "KB", "MB") else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def human_age(moment: datetime, now: datetime | None = None) -> str:
    """Format how long ago a moment was ("2 minutes ago")."""
    now = now or datetime.now(timezone.utc)
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, length in (("year", 31_536_000), ("month", 2_592_000), ("week", 604_800),
                         ("day", 86_400), ("hour", 3_600), ("minute", 60)):  # fmt: skip
        if seconds >= length:
            count = seconds // length
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "Less than a minute ago"
