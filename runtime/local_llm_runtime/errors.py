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
    "InvalidAdapterError",
    "InsufficientMemoryError",
    "InvalidModelFileError",
    "InvalidModelNameError",
    "InvalidOptionError",
    "InvalidToolCallError",
    "LlamaBindingError",
    "LocalLLMError",
    "ModelExistsError",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelfileError",
    "OfflineError",
    "QuantizationNotFoundError",
    "RequestTimeoutError",
    "ServerUnavailableError",
    "SourceUnreachableError",
    "StoreError",
    "StreamReclaimedError",
    "TemplateError",
    "ToolCallMissingError",
    "UnknownOptionError",
    "UnsupportedSchemaError",
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

    def __init__(self, prompt_tokens: int, num_ctx: int, *, embedding: bool = False) -> None:
        self.prompt_tokens = prompt_tokens
        self.num_ctx = num_ctx
        if embedding:  # an embedding input with truncate=False
            message = (
                f"A text to embed is {prompt_tokens} tokens but the context window is "
                f"{num_ctx}; shorten or split it, raise num_ctx, or pass truncate=True to "
                "embed its first tokens."
            )
        else:
            message = (
                f"The prompt is {prompt_tokens} tokens but the context window is {num_ctx}; "
                "shorten the input or raise num_ctx."
            )
        super().__init__(message)


def _or_list(items: Sequence[str]) -> str:
    quoted = [f"'{item}'" for item in items]
    if len(quoted) == 1:
        return quoted[0]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


class RequestTimeoutError(LocalLLMError, TimeoutError):
    """A request ran past its ``timeout`` (no partial answer is returned as complete).

    The clock starts when the request is made and covers resolving (or pulling)
    the model, preparing the prompt, loading, waiting for the model, prompt
    evaluation and generation.

    Attributes:
        timeout: The limit, in seconds.
        phases: Seconds spent per phase: ``resolve`` (resolve/pull and prompt
            preparation), ``load``, ``queue``, ``prompt``, ``generation``.
        model: The model's name (``""`` when it was not reached).
    """

    def __init__(self, timeout: float, phases: dict[str, float], *, model: str = "") -> None:
        self.timeout = timeout
        self.phases = dict(phases)
        self.model = model
        spent = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.phases.items())
        slowest = max(self.phases, key=lambda k: self.phases[k]) if self.phases else ""
        advice = {
            "resolve": "pull the model first (local-llm pull) or raise timeout=",
            "load": "preload the model (preload=True) or raise timeout=",
            "queue": "other requests held the model: raise timeout= or LOCAL_LLM_NUM_PARALLEL",
            "prompt": "shorten the prompt or raise timeout=",
            "generation": "lower num_predict or raise timeout=",
        }.get(slowest, "raise timeout=")
        about = f" ({model})" if model else ""
        super().__init__(f"The request{about} timed out after {timeout:g} s: {spent}; {advice}.")


class StreamReclaimedError(LocalLLMError, RuntimeError):
    """A stream was read after it sat idle while other requests waited, and was cancelled.

    Attributes:
        model: The model's name.
        idle_timeout: The idle time after which waiting requests reclaim a model.
    """

    def __init__(self, model: str, idle_timeout: float) -> None:
        self.model = model
        self.idle_timeout = idle_timeout
        super().__init__(
            f"This stream of {model or 'the model'} was not read for {idle_timeout:g} s while "
            "other requests waited, so it was cancelled and the model handed on; read streams "
            "to the end or close them (use `with` or .close()), or raise stream_idle_timeout."
        )


class UnknownOptionError(InvalidOptionError, TypeError):
    """A keyword argument or option name is not one the callee knows (often a typo).

    Raised instead of ignoring it, with the closest known name suggested. It is
    also a ``TypeError``, as Python's own "unexpected keyword argument" is.
    """


class InvalidToolCallError(LocalLLMError, ValueError):
    """The model called a tool with arguments that do not match the tool's JSON schema.

    Attributes:
        tool_name: The tool the model called.
        arguments: The arguments it gave (decoded JSON).
        error: What the schema check found.
    """

    def __init__(self, tool_name: str, arguments: object, error: str) -> None:
        self.tool_name = tool_name
        self.arguments = arguments
        self.error = error
        super().__init__(
            f"The model called tool {tool_name!r} with arguments that do not match its "
            f"schema ({error}); the call was not run. Ask again, force the call with "
            "tool_required=True/tool_choice (a grammar then keeps the arguments valid), "
            "or use a larger model."
        )


class UnsupportedSchemaError(InvalidOptionError):
    """A JSON schema holds a constraint that no grammar can enforce (checked before load).

    Attributes:
        keyword: The JSON-schema keyword at fault, e.g. ``"uniqueItems"``.
        pointer: Where it is, as a JSON pointer into the schema, e.g.
            ``"#/properties/tags/uniqueItems"``.
    """

    def __init__(self, keyword: str, pointer: str, reason: str) -> None:
        self.keyword = keyword
        self.pointer = pointer
        super().__init__(
            f"This JSON schema cannot be turned into a grammar: {keyword!r} at {pointer} "
            f"{reason}. Remove or loosen that constraint (and check it after generation)."
        )


class LlamaBindingError(ModelLoadError):
    """The installed llama-cpp-python lacks a function (or signature) the runtime calls."""


class ServerUnavailableError(LocalLLMError, ConnectionError):
    """A remote server (``base_url``) could not be reached, or kept failing after retries.

    Attributes:
        url: The URL that was tried (never with credentials).
        status: The last HTTP status (``None``: no answer at all).
    """

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        self.url = url
        self.status = status
        super().__init__(message)


class ToolCallMissingError(InvalidToolCallError):
    """A tool call was forced (``tool_choice`` required or a name) but the answer has none.

    Raised by the remote backend when the server ignores ``tool_choice`` (Ollama
    does) or did not honour it, instead of passing a plain answer off as the call.

    Attributes:
        tool_choice: What was forced.
    """

    def __init__(self, tool_choice: str, server: str) -> None:
        self.tool_choice = tool_choice
        self.tool_name = "" if tool_choice in ("required", "any") else tool_choice
        self.arguments = {}
        self.error = "no tool call"
        forced = "a tool call" if not self.tool_name else f"a call of tool {self.tool_name!r}"
        LocalLLMError.__init__(
            self,
            f"tool_choice forced {forced}, but the answer from {server} has none (the "
            "server does not enforce tool_choice; Ollama ignores it). Ask again, use a "
            "server that enforces it (vLLM, llama-server, local-llm serve over /v1), or "
            "run the model in-process.",
        )


class ModelfileError(LocalLLMError, ValueError):
    """A Modelfile (``local-llm create -f``) has an unknown instruction or a malformed line.

    The message names the line (``line 3: ...``) and what to write instead.

    Attributes:
        line: The 1-based line number at fault (``None`` when the whole file is at fault,
            e.g. no ``FROM``).
    """

    def __init__(self, message: str, *, line: int | None = None) -> None:
        self.line = line
        super().__init__(f"Modelfile line {line}: {message}" if line is not None else message)


class InvalidAdapterError(InvalidModelFileError):
    """A Modelfile ``ADAPTER`` file is not a LoRA adapter GGUF for the base model's architecture."""


class SourceUnreachableError(DownloadError):
    """A model source (the Hugging Face Hub or ModelScope) could not be reached at all.

    The connection failed (refused, reset, DNS, timeout) rather than the source answering
    with an error: a catalog name then falls back to its other source.
    """


class InsufficientMemoryError(LocalLLMError, MemoryError):
    """No file of a model fits this machine's memory (``:auto`` quantization).

    Raised before anything is downloaded: the store never pulls a model that cannot run.

    Attributes:
        needs: Bytes each quantization would need (weights + KV cache + compute), by name.
        available: Bytes usable (free GPU memory or available RAM, less headroom).
    """

    def __init__(self, message: str, *, needs: dict[str, int], available: int) -> None:
        self.needs = dict(needs)
        self.available = available
        super().__init__(message)
