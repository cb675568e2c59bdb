"""Typed errors of the runtime.

Every error the runtime raises on purpose derives from :class:`LocalLLMError` and
also from the builtin that matches its meaning, so callers can catch either
(``except LookupError`` keeps working for a missing model). Messages are one
line and say what to do next; the CLI prints them without a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AuthenticationError",
    "ChecksumMismatchError",
    "ContextLengthExceededError",
    "DownloadError",
    "GenerationError",
    "InvalidModelFileError",
    "InvalidModelNameError",
    "InvalidOptionError",
    "LlamaBindingError",
    "LocalLLMError",
    "ModelExistsError",
    "ModelLoadError",
    "ModelNotFoundError",
    "OfflineError",
    "QuantizationNotFoundError",
    "StoreError",
    "TemplateError",
]


class LocalLLMError(Exception):
    """Base class of every error raised on purpose by ``local_llm_runtime``."""


class InvalidModelNameError(LocalLLMError, ValueError):
    """A model reference is malformed (bad characters, path tricks, empty parts)."""


class ModelNotFoundError(LocalLLMError, LookupError):
    """A well-formed reference names no model in the store, the catalog or the Hub.

    Attributes:
        suggestions: Close matches the user may have meant, best first.
    """

    def __init__(self, message: str, suggestions: Sequence[str] = ()) -> None:
        self.suggestions = list(suggestions)
        if self.suggestions:
            message = f"{message} Did you mean {_or_list(self.suggestions)}?"
        super().__init__(message)


class QuantizationNotFoundError(ModelNotFoundError):
    """The repository exists but holds no GGUF file of the requested quantization."""


class ModelExistsError(LocalLLMError, FileExistsError):
    """A name is already taken in the store (``cp``/``create`` will not overwrite it)."""


class InvalidOptionError(LocalLLMError, ValueError):
    """An option (``--param KEY=VALUE`` or a keyword argument) is unknown or badly typed."""


class InvalidModelFileError(LocalLLMError, ValueError):
    """A file is not a readable GGUF model (truncated, zero bytes, wrong magic, ...)."""


class DownloadError(LocalLLMError, ConnectionError):
    """The Hub could not be reached or a transfer failed after retries."""


class OfflineError(DownloadError):
    """Offline mode is on (``HF_HUB_OFFLINE=1``) and the model is not on disk yet."""


class AuthenticationError(LocalLLMError, PermissionError):
    """The repository is gated or private and the token is missing or lacks access."""


class ChecksumMismatchError(LocalLLMError, ValueError):
    """A downloaded or imported file does not hash to the sha256 the source reported."""


class StoreError(LocalLLMError, OSError):
    """The local store (``LOCAL_LLM_HOME``) cannot be read or written."""


class TemplateError(LocalLLMError, ValueError):
    """A chat template is malformed, unsafe, or failed to render these messages."""


class ModelLoadError(LocalLLMError, RuntimeError):
    """llama.cpp could not load a model; the message carries llama.cpp's own reason."""


class GenerationError(LocalLLMError, RuntimeError):
    """llama.cpp failed while generating (e.g. out of device memory mid-request)."""


class ContextLengthExceededError(LocalLLMError, ValueError):
    """A prompt does not fit in the context window.

    Attributes:
        prompt_tokens: Tokens in the prompt.
        num_ctx: The context window.
    """

    def __init__(self, prompt_tokens: int, num_ctx: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.num_ctx = num_ctx
        super().__init__(
            f"The prompt is {prompt_tokens} tokens but the context window is {num_ctx}; "
            "shorten the input or raise num_ctx."
        )


def _or_list(items: Sequence[str]) -> str:
    quoted = [f"'{item}'" for item in items]
    if len(quoted) == 1:
        return quoted[0]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


class LlamaBindingError(ModelLoadError):
    """The installed llama-cpp-python lacks a function (or signature) the runtime calls."""
