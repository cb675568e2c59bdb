"""Ollama's REST API (``/api/...``), as documented in Ollama's docs/api.md."""

from __future__ import annotations

from fastapi import APIRouter

from local_llm_runtime import __version__

__all__ = ["router"]

router = APIRouter()


@router.get("/api/version")
async def version() -> dict[str, str]:
    """``GET /api/version``: ``{"version": "..."}`` (this package's version)."""
    return {"version": __version__}
