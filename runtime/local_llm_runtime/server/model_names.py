r"""What a model may be called over HTTP: a name, never a path on the server.

In-process, ``ChatLocal(model="./model.gguf")`` may name a file; over HTTP a
client must not make the server open (or probe) arbitrary files, so every
request field that names a model (both APIs) is a :data:`ModelName`: a valid
reference (:func:`~local_llm_runtime.store.names.parse_ref`) that is not a file
path, without ``..`` or ``\\``. A GGUF on the server gets a name with
``POST /api/create {"model": NAME, "from": PATH}`` (or ``local-llm create``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from local_llm_runtime.store.names import FileRef, parse_ref

__all__ = ["ModelName", "check_model_name"]


def check_model_name(name: str) -> str:
    """``name`` if it is a model name fit for HTTP.

    Raises:
        ValueError: A malformed reference, or a file path (the message says what to do).
    """
    ref = parse_ref(name)  # InvalidModelNameError is a ValueError
    if isinstance(ref, FileRef) or ".." in name or "\\" in name:
        raise ValueError(
            f"{name!r} is a file path; over HTTP a model is named (e.g. 'qwen2.5:7b'). "
            "Give a GGUF file a name with POST /api/create {'model': NAME, 'from': PATH}"
        )
    return name


ModelName = Annotated[str, Field(min_length=1), AfterValidator(check_model_name)]
"""A request field naming a model: checked by :func:`check_model_name` (400 otherwise)."""
