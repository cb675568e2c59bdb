"""OpenAI's API (``/v1/...``), as OpenAI's API reference documents it."""

from __future__ import annotations

from fastapi import APIRouter

__all__ = ["router"]

router = APIRouter(prefix="/v1")
