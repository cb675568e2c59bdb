"""Modelfiles end to end on the tiny GGUF: the seed article's recipe through the CLI, the
``show --modelfile`` / ``create -f`` round trip, TEMPLATE and MESSAGE in the engine's prompt
(chat, completion, token counts), one-line errors, the Python API and the Ollama server."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import local_llm_runtime as rt
from local_llm_runtime.cli.main import main
from local_llm_runtime.errors import InvalidOptionError, TemplateError
from local_llm_runtime.llama.engine import Engine
from local_llm_runtime.store.library import ModelLibrary
from local_llm_runtime.store.modelfile import JINJA_CHATML_EXAMPLE

ECHO = (
    # Refuses a conversation whose last message is ECHO, naming what it was given:
    # the roles and contents in order (what the engine put into the prompt).
    "{% if messages[-1].content == 'ECHO' %}{{ raise_exception('seen ' ~ "
    "(messages | map(attribute='role') | join(',')) ~ ' | ' ~ "
    "(messages | map(attribute='content') | join(','))) }}{% endif %}" + JINJA_CHATML_EXAMPLE
)


@pytest.fixture
def base(tiny_gguf: Path) -> str:
    """A stored model named like the article's (``qwen2.5``), from the tiny GGUF."""
    assert main(["create", "qwen2.5", "--from", str(tiny_gguf), "--param", "num_predict=8"]) == 0
    return "qwen2.5"


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine()
    yield eng
    eng.pool.close()


def _show_modelfile(name: str, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(["show", name, "--modelfile"]) == 0
    return capsys.readouterr().out


def test_seed_recipe(
    base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # local-llm show qwen2.5 --modelfile > Modelfile
    text = _show_modelfile(base, capsys)
    assert "FROM qwen2.5" in text and "PARAMETER num_predict 8" in text
    # edit: a SYSTEM and a temperature
    edited = text + '\nSYSTEM """You are Mario from Super Mario Bros."""\nPARAMETER temperature 1\n'
    monkeypatch.chdir(tmp_path)
    Path("Modelfile").write_text(edited, "utf-8")
    # local-llm create my-qwen -f Modelfile
    assert main(["create", "my-qwen", "-f", "Modelfile"]) == 0
    assert "created 'my-qwen" in capsys.readouterr().out
    # local-llm run my-qwen "..."
    assert main(["run", "my-qwen", "Who are you?"]) == 0
    assert capsys.readouterr().out.strip()
    shown = ModelLibrary().show("my-qwen")
    assert shown["system"] == "You are Mario from Super Mario Bros."
    assert shown["parameters"] == {"num_predict": 8, "temperature": 1.0}
    # as ollama create: without -f, ./Modelfile
    assert main(["create", "my-qwen2"]) == 0
    assert ModelLibrary().show("my-qwen2")["system"] == shown["system"]


def test_show_modelfile_round_trip(
    base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lib = ModelLibrary()
    first = lib.create_from_modelfile(
        "full",
        f"FROM {base}\n"
        'SYSTEM """Say "hi".\nThen:\n"""\n'
        f'TEMPLATE """{JINJA_CHATML_EXAMPLE}"""\n'
        'PARAMETER stop "<|im_end|>"\nPARAMETER stop """\n"""\n'
        "PARAMETER temperature 0.25\nPARAMETER keep_alive 10m\n"
        "MESSAGE user Is Toronto in Canada?\nMESSAGE assistant yes\n"
        "LICENSE '''MIT \"\"\"\nline'''\n",
    )
    path = tmp_path / "Modelfile"
    path.write_text(_show_modelfile("full", capsys), "utf-8")
    assert main(["create", "again", "-f", str(path)]) == 0
    second = lib.store.get("again:latest")
    assert second is not None
    ignore = {"name", "modified_at", "origin"}
    assert second.model_dump(exclude=ignore) == first.model_dump(exclude=ignore)
    assert first.template == JINJA_CHATML_EXAMPLE and first.license == 'MIT """\nline'
    assert first.parameters["stop"] == ["<|im_end|>", "\n"]
    assert first.messages == [
        {"role": "user", "content": "Is Toronto in Canada?"},
        {"role": "assistant", "content": "yes"},
    ]


def test_template_replaces_the_gguf_one_and_messages_come_after_the_system(
    base: str, engine: Engine
) -> None:
    rt.create(
        "echo",
        modelfile=f'FROM {base}\nSYSTEM Be Mario.\nTEMPLATE """{ECHO}"""\n'
        "MESSAGE user Hi\nMESSAGE assistant Hello!\n",
    )
    echo = [{"role": "user", "content": "ECHO"}]
    chat_seen = re.escape("seen system,user,assistant,user | Be Mario.,Hi,Hello!,ECHO")
    with pytest.raises(TemplateError, match=chat_seen):
        engine.chat("echo", echo)
    with pytest.raises(TemplateError, match=chat_seen):
        engine.count_chat_tokens("echo", echo)
    own = [{"role": "system", "content": "S2"}, *echo]  # the caller's system replaces SYSTEM
    with pytest.raises(TemplateError, match=re.escape("user,assistant,user | S2,Hi,Hello!,ECHO")):
        engine.count_chat_tokens("echo", own)
    # a completion gets the template and SYSTEM but not the history (as Ollama)
    with pytest.raises(TemplateError, match=re.escape("seen system,user | Be Mario.,ECHO")):
        engine.generate("echo", "ECHO")
    # the base model (the GGUF's own template) takes ECHO as any text
    assert engine.count_chat_tokens(base, echo) > 0
    assert engine.ps() == []  # all of this before any load


def test_template_changes_the_prompt_that_runs(base: str, engine: Engine) -> None:
    preamble = "{{ 'hello world ' * 20 }}"
    rt.create("long", modelfile=f'FROM {base}\nTEMPLATE """{preamble}{JINJA_CHATML_EXAMPLE}"""')
    rt.create("short", modelfile=f'FROM {base}\nTEMPLATE """{JINJA_CHATML_EXAMPLE}"""')
    rt.create("hist", modelfile=f"FROM {base}\nMESSAGE user hello\nMESSAGE assistant world")
    messages = [{"role": "user", "content": "hello world"}]
    plain = engine.count_chat_tokens(base, messages)
    longer = engine.count_chat_tokens("long", messages)
    assert longer >= engine.count_chat_tokens("short", messages) + 40  # the preamble's words
    assert engine.count_chat_tokens("hist", messages) > plain
    result = engine.chat("long", messages, options={"num_predict": 2})
    assert result.usage.prompt_tokens == longer
    result = engine.chat("hist", messages, options={"num_predict": 2})
    assert result.usage.prompt_tokens == engine.count_chat_tokens("hist", messages)


ERRORS = {
    "unknown instruction": ("FROM {base}\nPARAMETERS top_k 1\n", "Modelfile line 2: unknown"),
    "Go template": (
        'FROM {base}\n\nTEMPLATE """{{{{ .System }}}} {{{{ .Prompt }}}}"""\n',
        "Modelfile line 3: TEMPLATE is in Ollama's Go template syntax",
    ),
    "bad parameter": ("FROM {base}\nPARAMETER top_p 3\n", "Modelfile line 2: PARAMETER top_p"),
    "no FROM": ("SYSTEM hi\n", "no FROM line"),
}


@pytest.mark.parametrize(("text", "expected"), ERRORS.values(), ids=list(ERRORS))
def test_create_errors_are_one_line(
    base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    path = tmp_path / "Modelfile"
    path.write_text(text.format(base=base), "utf-8")
    capsys.readouterr()
    assert main(["create", "bad", "-f", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and expected in err
    assert len(err.strip().splitlines()) == 1
    assert ModelLibrary().store.get("bad") is None


def test_create_without_modelfile_or_source_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["create", "x", "-f", "missing"]) == 1
    assert "Cannot read the Modelfile missing" in capsys.readouterr().err
    assert main(["create", "x"]) == 1
    assert "Give a Modelfile with -f" in capsys.readouterr().err


def test_adapter_lines_round_trip_through_the_store(
    base: str, tmp_path: Path, tiny_lora_gguf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A relative ``ADAPTER`` path is relative to the Modelfile; show/create keeps it."""
    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copyfile(tiny_lora_gguf, folder / "lora.gguf")
    (folder / "Modelfile").write_text(f"FROM {base}\nADAPTER ./lora.gguf\n", "utf-8")
    assert main(["create", "with-lora", "-f", str(folder / "Modelfile")]) == 0
    record = ModelLibrary().resolve("with-lora", pull=False).record
    assert record is not None and len(record.adapters) == 1
    capsys.readouterr()
    assert main(["show", "with-lora", "--modelfile"]) == 0
    text = capsys.readouterr().out
    assert "ADAPTER " in text
    (tmp_path / "Modelfile.again").write_text(text, "utf-8")
    assert main(["create", "again", "-f", str(tmp_path / "Modelfile.again")]) == 0
    again = ModelLibrary().resolve("again", pull=False).record
    assert again is not None
    assert [f.sha256 for f in again.adapters] == [f.sha256 for f in record.adapters]


def test_python_api(base: str) -> None:
    record = rt.create("py", modelfile=f"FROM {base}\nSYSTEM hi\nPARAMETER stop END")
    assert record.system == "hi" and record.parameters["stop"] == ["END"]
    with pytest.raises(InvalidOptionError):
        rt.create("py2", base, modelfile=f"FROM {base}")
    with pytest.raises(InvalidOptionError):
        rt.create("py3")
    with pytest.raises(TemplateError, match="Go template"):
        ModelLibrary().create("py4", base, template="{{ .Prompt }}")
    with pytest.raises(InvalidOptionError, match="messages"):
        ModelLibrary().create("py5", base, messages=[{"role": "tool", "content": "x"}])


def test_python_api_binds_what_a_modelfile_binds(base: str, tiny_lora_gguf: Path) -> None:
    record = rt.create(
        "py-all",
        base,
        template=JINJA_CHATML_EXAMPLE,
        messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Ahoy"}],
        adapters=[tiny_lora_gguf],
        license="MIT",
    )
    assert record.template == JINJA_CHATML_EXAMPLE
    assert [m["content"] for m in record.messages] == ["Hi", "Ahoy"]
    assert len(record.adapters) == 1 and record.license == "MIT"
    with pytest.raises(InvalidOptionError):
        rt.create("py-both", modelfile=f"FROM {base}", license="MIT")
