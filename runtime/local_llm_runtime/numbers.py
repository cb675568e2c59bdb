"""Number fields that refuse booleans.

Pydantic's lax mode turns JSON ``true``/``false`` (and Python ``True``/``False``) into
``1``/``0`` for an ``int`` or ``float`` field. For a count that silently changes the
request: ``"logprobs": false`` on ``/v1/completions`` asked for log-probabilities
(``0`` alternatives), ``"dimensions": true`` returned one-value vectors,
``"max_tokens": true`` one token. These annotated types keep the lax conversions that
help (``"8"``, ``8.0``) and refuse a boolean with a message naming what is expected.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

__all__ = ["NotBoolFloat", "NotBoolInt"]


def _refuse_bool(kind: str) -> Any:
    def check(value: Any) -> Any:
        if isinstance(value, bool):
            raise PydanticCustomError(
                f"{kind}_type",
                "Input should be a valid {kind}, not a boolean ({value})",
                {"kind": "integer" if kind == "int" else "number", "value": value},
            )
        return value

    return BeforeValidator(check)


NotBoolInt = Annotated[int, _refuse_bool("int")]
"""An ``int`` field: ``3``, ``"3"``, ``3.0`` are 3; ``true``/``false`` are refused."""

NotBoolFloat = Annotated[float, _refuse_bool("float")]
"""A ``float`` field: numbers and numeric text; ``true``/``false`` are refused."""
