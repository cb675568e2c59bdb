"""The tool-syntax registry: one module per syntax, detection, and the unknown-syntax warning."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import llama_cpp
import pytest

from local_llm_runtime import Engine
from local_llm_runtime.errors import InvalidOptionError
from local_llm_runtime.prompt import tool_syntaxes
from local_llm_runtime.prompt.chat_template import ChatTemplate
from local_llm_runtime.prompt.tool_calls import detect_tool_format, parse_tool_calls, tool_call_gbnf
from local_llm_runtime.prompt.tool_syntaxes import SYNTAXES, ToolSyntax, get_syntax
from local_llm_runtime.prompt.tool_syntaxes.base import CallStream
from local_llm_runtime.prompt.tool_syntaxes.grammar import JSON_GBNF, json_schema_gbnf

DATA = Path(__file__).resolve().parents[1] / "data"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}
CITY = {  # an enum: a random model forced by the grammar finishes its call quickly
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"location": {"enum": ["Paris", "Rome"]}},
            "required": ["location"],
        },
    },
}
USER = [{"role": "user", "content": "Weather in Paris?"}]
LOGGER = "local_llm_runtime.prompt.tool_syntaxes"


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no template warned about."""
    monkeypatch.setattr(tool_syntaxes, "_warned", set())


class FunctionTag(ToolSyntax):
    """A made-up syntax, as a newcomer would add one: ``<fn>{json}</fn>``."""

    name: ClassVar[str] = "fn-tag"
    markers: ClassVar[tuple[str, ...]] = ("<fn>",)

    def step(self, stream: CallStream) -> bool:
        if stream.mode != "block":
            return stream.text_until("<fn>", "</fn>")
        end = stream.buf.find("</fn>")
        if end < 0:
            return False
        stream.block("<fn>" + stream.buf[: end + 5], stream.buf[:end])
        stream.buf, stream.mode = stream.buf[end + 5 :], "text"
        return True

    def grammar_root(self, parallel: bool) -> str:
        return '"<fn>" call-root "</fn>"'


FN_TEMPLATE = (
    "{% if tools %}{{ 'Call tools as <fn>{json}</fn>: ' + (tools | tojson) + '\\n' }}{% endif %}"
    "{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
)


def test_registry_names_are_unique_and_resolvable() -> None:
    names = [syntax.name for syntax in SYNTAXES]
    assert len(set(names)) == len(names)
    assert {"hermes", "mistral", "llama3"} <= set(names)
    for syntax in SYNTAXES:
        assert get_syntax(syntax.name) is syntax
        assert syntax.markers, f"{syntax.name} has no template marker to be detected by"
    with pytest.raises(InvalidOptionError, match="known: hermes"):
        get_syntax("xml")


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda s: s.name)
def test_every_registered_syntax_is_detected_parsed_and_forced(syntax: ToolSyntax) -> None:
    """The contract each module fulfils: its markers select it, its grammar's output parses."""
    source = "{{ '" + syntax.markers[0] + "' }}{{ messages }}"
    assert ChatTemplate(source).tool_syntax is syntax
    gbnf = tool_call_gbnf(syntax.name, [WEATHER])
    assert gbnf.startswith(f"root ::= {syntax.grammar_root(False)}\n")
    assert "call-root ::= " in gbnf


def test_adding_a_syntax_is_one_module_and_one_registry_entry(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert detect_tool_format(FN_TEMPLATE) == "hermes"  # unknown before the entry
    monkeypatch.setattr(tool_syntaxes, "SYNTAXES", [*SYNTAXES, FunctionTag()])
    template = ChatTemplate(FN_TEMPLATE, metadata={"general.name": "fn-model"})
    assert template.tool_format == "fn-tag"
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        template.render(USER, tools=[WEATHER])
    assert caplog.records == []  # known now: no warning
    text = 'Sure. <fn>{"name": "get_weather", "arguments": {"location": "Paris"}}</fn>'
    plain, calls = parse_tool_calls("fn-tag", text, {"get_weather"}, ended_naturally=True)
    assert plain == "Sure."
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", {"location": "Paris"})]
    assert tool_call_gbnf("fn-tag", [WEATHER]).startswith('root ::= "<fn>" call-root "</fn>"')


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine()
    yield eng
    eng.pool.close()


def test_engine_forces_and_parses_a_newly_registered_syntax(
    engine: Engine, tiny_gguf_factory: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tool_syntaxes, "SYNTAXES", [*SYNTAXES, FunctionTag()])
    model = tiny_gguf_factory(chat_template=FN_TEMPLATE + "{# fn-engine #}")
    result = engine.chat(
        str(model),
        USER,
        tools=[CITY],
        tool_choice="required",
        parallel_tool_calls=False,
        options={"temperature": 0.0, "seed": 1, "num_predict": 200},
    )
    assert result.finish_reason == "tool_calls", result
    [call] = result.tool_calls
    assert call.name == "get_weather" and call.arguments["location"] in ("Paris", "Rome")


def test_an_unknown_template_warns_once_naming_the_model(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = "{% for m in messages %}{{ m.content }}{% endfor %}{% if tools %}{{ tools | tojson }}{% endif %}"
    meta = {"general.name": "Mystery-7B", "general.architecture": "mystery"}
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        template = ChatTemplate(source, metadata=meta)
        assert template.tool_format == "hermes"
        template.render(USER)  # no tools: the assumption does not matter yet
        assert caplog.records == []
        for _ in range(3):
            template.render(USER, tools=[WEATHER])
        ChatTemplate(source, metadata=meta).render(USER, tools=[WEATHER])  # same template
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "Mystery-7B" in message
    assert "Hermes-style" in message
    assert "tool_syntaxes" in message and "SYNTAXES" in message
    assert "hermes, mistral, llama3" in message


@pytest.mark.parametrize(
    "source",
    [
        None,  # the ChatML fallback is Hermes by construction
        (DATA / "qwen2.5_chat_template.jinja").read_text(),
        (DATA / "llama3.1_chat_template.jinja").read_text(),
        (DATA / "mistral_v3_chat_template.jinja").read_text(),
    ],
)
def test_known_templates_do_not_warn(source: str | None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert not tool_syntaxes.warn_unknown_syntax(source, {"general.name": "m"})
        ChatTemplate(source, bos_token="<s>", eos_token="</s>").render(USER, tools=[WEATHER])
    assert caplog.records == []


def test_the_engine_warns_once_per_model_not_per_request(
    engine: Engine, tiny_gguf: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The tiny model's ChatML template has no tool markup: Hermes is assumed, said once."""
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(2):
            engine.chat(str(tiny_gguf), USER, tools=[WEATHER], options={"num_predict": 2})
            engine.count_chat_tokens(str(tiny_gguf), USER, tools=[WEATHER])
    warnings = [r for r in caplog.records if r.name == LOGGER]
    assert len(warnings) == 1, warnings
    assert "tiny-llama" in warnings[0].getMessage()


def test_json_grammar_is_llama_cpps_without_importing_it() -> None:
    from llama_cpp.llama_grammar import JSON_GBNF as LLAMA_CPP_JSON

    assert JSON_GBNF == LLAMA_CPP_JSON
    assert json_schema_gbnf(None) == LLAMA_CPP_JSON
    assert llama_cpp.LlamaGrammar.from_string(JSON_GBNF, verbose=False) is not None


def test_syntaxes_and_families_import_no_llama_cpp() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from local_llm_runtime.prompt import families, tool_calls, tool_syntaxes\n"
        "tool_calls.json_schema_gbnf(None)\n"
        "tool = {'name': 't', 'parameters': {'type': 'object', 'properties': {}}}\n"
        "for s in tool_syntaxes.SYNTAXES:\n"
        "    tool_calls.tool_call_gbnf(s.name, [tool])\n"
        "families.traits_for({'general.architecture': 'nomic-bert'})\n"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'llama_cpp' or "
        "m.startswith('local_llm_runtime.llama')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
