"""Input checks done before a request reaches the pool (no I/O, no model).

Every entry point of the engine (chat, generate, embed, token counting) and of
the adapters calls these first, so a malformed request fails at once with a
typed error that names what is wrong, instead of a template error, a
``SystemError`` from ctypes or a llama.cpp crash after a load.

* :func:`validate_messages`: a non-empty list of ``{"role", "content"}``
  mappings; content is text, ``None`` or a list of text parts (as OpenAI's).
* :func:`validate_prompt` / :func:`validate_texts`: text, and lists of text.
* :func:`check_arguments`: keyword arguments against the names a callee knows,
  with the closest known name suggested (``temprature`` -> ``temperature``).
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from local_llm_runtime.errors import InvalidOptionError, UnknownOptionError

__all__ = [
    "check_arguments",
    "closest",
    "validate_messages",
    "validate_prompt",
    "validate_texts",
]

_EXAMPLE = '[{"role": "user", "content": "Hello"}]'


def validate_messages(messages: object) -> list[dict[str, Any]]:
    """Check a chat request's messages; return shallow copies.

    Rules (OpenAI's chat format, which Ollama and the adapters share):

    * ``messages`` is a non-empty sequence (not a string, not a single mapping);
    * each message is a mapping with a non-empty string ``role``. The role is
      not limited to ``system``/``user``/``assistant``/``tool``: the model's chat
      template decides what it accepts (``ipython``, ``developer``, ...), as in
      Ollama;
    * ``content`` is a string, ``None``/absent (empty, as for an assistant turn
      that only calls tools), or a list of text parts (strings or
      ``{"type": "text", "text": str}``). Images and other parts are refused:
      the runtime handles text only and never drops part of a message silently.

    Args:
        messages: The messages as given by the caller.

    Returns:
        The messages as new dicts (the caller's objects are not modified).

    Raises:
        InvalidOptionError: On the first message that breaks a rule; the message
            says which one (by index) and why.
    """
    if isinstance(messages, str | bytes | Mapping):
        raise InvalidOptionError(
            f"messages must be a list of messages such as {_EXAMPLE}, "
            f"not a single {type(messages).__name__}."
        )
    if not isinstance(messages, Iterable):
        raise InvalidOptionError(
            f"messages must be a list of messages such as {_EXAMPLE}, "
            f"not {type(messages).__name__}."
        )
    out = [_message(i, message) for i, message in enumerate(messages)]
    if not out:
        raise InvalidOptionError(
            f"messages is empty: a chat request needs at least one message, e.g. {_EXAMPLE}."
        )
    return out


def _message(index: int, message: object) -> dict[str, Any]:
    where = f"messages[{index}]"
    if not isinstance(message, Mapping):
        raise InvalidOptionError(
            f"{where} must be a mapping with 'role' and 'content' "
            f"(e.g. {{'role': 'user', 'content': 'Hello'}}), not {type(message).__name__}."
        )
    role = message.get("role")
    if not isinstance(role, str) or not role.strip():
        raise InvalidOptionError(
            f"{where} has no role: give 'role' as a non-empty string "
            f"('system', 'user', 'assistant' or 'tool'), got {role!r}."
        )
    _content(where, message.get("content"))
    return dict(message)


def _content(where: str, content: object) -> None:
    if content is None or isinstance(content, str):
        return
    if isinstance(content, list | tuple):
        for j, part in enumerate(content):
            if isinstance(part, str):
                continue
            if isinstance(part, Mapping) and part.get("type") == "text":
                if isinstance(part.get("text"), str):
                    continue
                raise InvalidOptionError(
                    f"{where}.content[{j}] is a text part whose 'text' is not a string."
                )
            kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
            raise InvalidOptionError(
                f"{where}.content[{j}] is a {kind!r} part: only text parts are supported "
                "(strings or {'type': 'text', 'text': ...})."
            )
        return
    raise InvalidOptionError(
        f"{where}.content must be a string, None or a list of text parts, "
        f"not {type(content).__name__} ({content!r:.40})."
    )


def validate_prompt(prompt: object) -> str:
    """Check a completion prompt is text.

    Raises:
        InvalidOptionError: If it is not a ``str``.
    """
    if not isinstance(prompt, str):
        raise InvalidOptionError(f"prompt must be a string, not {type(prompt).__name__}.")
    return prompt


def validate_texts(texts: object) -> list[str]:
    """Check the inputs of an embedding request: a sequence of strings.

    Empty strings are valid (each still gets one vector).

    Raises:
        InvalidOptionError: On a single string, a non-sequence, or an item that
            is not a string (named by index).
    """
    if isinstance(texts, str | bytes):
        raise InvalidOptionError("embed() takes a list of texts, not one string.")
    if not isinstance(texts, Sequence | Iterable):
        raise InvalidOptionError(f"embed() takes a list of texts, not {type(texts).__name__}.")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise InvalidOptionError(
                f"texts[{i}] must be a string, not {type(text).__name__} ({text!r:.40})."
            )
    return out


SYNONYMS: dict[str, str] = {
    "api_base": "base_url",  # LlamaIndex OpenAI/OpenAILike, old openai SDK
    "openai_api_base": "base_url",  # LangChain ChatOpenAI
    "host": "base_url",  # ollama.Client
    "endpoint": "base_url",
    "url": "base_url",
    "openai_api_key": "api_key",  # LangChain ChatOpenAI
    "max_new_tokens": "num_predict",  # transformers
}
"""Other libraries' names for our arguments: suggested before spelling neighbours."""


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to ``name``, or ``None`` if none is close.

    Another library's name for the same thing (:data:`SYNONYMS`) first, then the
    same name in another case, then a spelling neighbour (``difflib``).
    """
    candidates = sorted(set(known))
    synonym = SYNONYMS.get(name.lower())
    if synonym in candidates:
        return synonym
    lowered = {k.lower(): k for k in candidates}
    if name.lower() in lowered:
        return lowered[name.lower()]
    found = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return found[0] if found else None


def check_arguments(owner: str, given: Iterable[str], known: Collection[str]) -> None:
    """Refuse keyword arguments that ``owner`` does not know.

    Args:
        owner: Who takes them, for the message (``"ChatLocal"``, ``"LocalLLM.chat"``).
        given: The argument names passed.
        known: The names accepted.

    Raises:
        UnknownOptionError: Naming every unknown argument, each with the closest
            known name when there is one, and the list of known names (an
            ``InvalidOptionError`` and a ``TypeError``).
    """
    unknown = [name for name in given if name not in known]
    if not unknown:
        return
    parts = []
    for name in unknown:
        match = closest(name, known)
        parts.append(f"{name!r} (did you mean {match!r}?)" if match else repr(name))
    public = ", ".join(sorted(k for k in known if not k.startswith("_")))
    noun = "argument" if len(unknown) == 1 else "arguments"
    raise UnknownOptionError(
        f"{owner} got unknown {noun} {', '.join(parts)}; it would have been ignored. "
        f"Known: {public}."
    )
