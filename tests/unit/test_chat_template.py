"""ChatTemplate: real templates render like transformers, hostile ones fail safely."""

from __future__ import annotations

import builtins
import copy
import datetime
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from local_llm_runtime.errors import LocalLLMError, TemplateError
from local_llm_runtime.prompt import chat_template as chat_template_module
from local_llm_runtime.prompt.chat_template import CHATML_TEMPLATE, ChatTemplate
from local_llm_runtime.prompt.tool_calls import ToolCall, parse_tool_calls

DATA = Path(__file__).resolve().parents[1] / "data"
QWEN = (DATA / "qwen2.5_chat_template.jinja").read_text()
LLAMA31 = (DATA / "llama3.1_chat_template.jinja").read_text()
MISTRAL = (DATA / "mistral_v3_chat_template.jinja").read_text()

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Météo <now> & 'today'",
            "parameters": {
                "type": "object",
                "properties": {"location": {"type": "string"}},
                "required": ["location"],
            },
        },
    }
]


def conversation(call_id: str = "call_1") -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "name": "get_weather", "content": "22°C"},
    ]


QWEN_EXPECTED = (
    "<|im_start|>system\nBe brief.\n\n# Tools\n\nYou may call one or more functions to assist with "
    "the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n"
    '<tools>\n{"type": "function", "function": {"name": "get_weather", "description": '
    '"Météo <now> & \'today\'", "parameters": {"type": "object", "properties": {"location": '
    '{"type": "string"}}, "required": ["location"]}}}\n</tools>\n\nFor each function call, return '
    "a json object with function name and arguments within <tool_call></tool_call> XML tags:\n"
    '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
    "<|im_end|>\n<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n"
    '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Paris"}}\n</tool_call>'
    "<|im_end|>\n<|im_start|>user\n<tool_response>\n22°C\n</tool_response><|im_end|>\n"
    "<|im_start|>assistant\n"
)


def test_qwen_renders_tools_calls_and_results_exactly() -> None:
    messages = conversation()
    before = copy.deepcopy(messages)
    assert ChatTemplate(QWEN).render(messages, tools=TOOLS) == QWEN_EXPECTED
    assert messages == before  # the caller's messages are left alone


def test_qwen_without_tools_and_without_generation_prompt() -> None:
    template = ChatTemplate(QWEN)
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    expected = (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
        "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
    )
    assert template.render(messages, tools=[], add_generation_prompt=False) == expected
    assert template.supports_tools
    assert template.tool_format == "hermes"
    assert not template.thinks
    assert not template.opens_thinking


def test_llama31_puts_tools_in_the_first_user_message() -> None:
    template = ChatTemplate(LLAMA31, bos_token="<|begin_of_text|>")
    prompt = template.render(conversation(), tools=TOOLS, date_string="01 Jan 2025")
    assert prompt.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
    assert "Environment: ipython\n" in prompt
    assert "Today Date: 01 Jan 2025\n" in prompt
    assert '    "type": "function",\n    "function": {\n        "name": "get_weather",' in prompt
    assert '"description": "Météo <now> & \'today\'"' in prompt  # no HTML escaping, no \\u
    assert (
        '<|start_header_id|>assistant<|end_header_id|>\n\n{"name": "get_weather", '
        '"parameters": {"location": "Paris"}}<|eot_id|>'
    ) in prompt
    assert '<|start_header_id|>ipython<|end_header_id|>\n\n"22°C"<|eot_id|>' in prompt
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert template.tool_format == "llama3"
    plain = template.render([{"role": "user", "content": "Hi"}])
    assert "Environment: ipython" not in plain  # no tools: the template sees none


def test_mistral_tool_calls_and_raise_exception() -> None:
    template = ChatTemplate(MISTRAL, bos_token="<s>", eos_token="</s>")
    prompt = template.render(conversation("abc123XYZ"), tools=TOOLS)
    assert prompt.startswith('<s>[AVAILABLE_TOOLS] [{"type": "function", "function": {"name": ')
    assert (
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"location": "Paris"}, '
        '"id": "abc123XYZ"}]</s>'
    ) in prompt
    assert '[TOOL_RESULTS] {"content": 22°C, "call_id": "abc123XYZ"}[/TOOL_RESULTS]' in prompt
    assert template.tool_format == "mistral"
    # ids that the Mistral template would refuse are mapped to 9 alphanumerics, consistently
    mapped = template.render(conversation("call_1"), tools=TOOLS)
    assert "call_1" not in mapped
    assert mapped.count(hashlib.sha256(b"call_1").hexdigest()[:9]) == 2
    with pytest.raises(TemplateError, match="roles must alternate"):
        template.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_tool_calls_in_other_shapes_are_normalized() -> None:
    template = ChatTemplate(QWEN)
    calls: list[Any] = [
        {"function": {"name": "get_weather", "arguments": {"location": "Rome"}}},
        {"name": "get_weather", "arguments": ""},
        ToolCall("call_x", "get_weather", {"location": "Oslo"}),
    ]
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Three "}, {"type": "text", "text": "cities"}],
        },
        {"role": "assistant", "content": "Checking.", "tool_calls": calls},
    ]
    prompt = template.render(messages, add_generation_prompt=False)
    assert "<|im_start|>user\nThree cities<|im_end|>" in prompt
    assert '<|im_start|>assistant\nChecking.\n<tool_call>\n{"name": "get_weather", ' in prompt
    assert '"arguments": {"location": "Rome"}' in prompt
    assert '"arguments": {}' in prompt
    assert '"arguments": {"location": "Oslo"}' in prompt


def test_chatml_fallback() -> None:
    for source in (None, ""):
        template = ChatTemplate(source)
        assert template.source is None
        assert template.render([{"role": "user", "content": "Hi"}]) == (
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        )
        assert template.supports_tools
        assert template.tool_format == "hermes"
        assert not template.thinks


def test_chatml_fallback_with_tools_is_hermes_style() -> None:
    template = ChatTemplate(None)
    prompt = template.render(conversation(), tools=TOOLS)
    system = prompt.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\nBe brief.\n\n# Tools")
    assert '<tools>\n[{"type": "function", "function": {"name": "get_weather"' in system
    assert (
        '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
        in system
    )
    assert "<|im_start|>tool\n<tool_response>\n22°C\n</tool_response><|im_end|>" in prompt
    assistant = prompt.split("<|im_start|>assistant\n")[1].split("<|im_end|>")[0]
    plain, [call] = parse_tool_calls("hermes", assistant, {"get_weather"}, ended_naturally=True)
    assert plain == ""
    assert (call.name, call.arguments) == ("get_weather", {"location": "Paris"})
    assert CHATML_TEMPLATE.count("<|im_start|>") >= 3


def test_template_variables_and_helpers() -> None:
    template = ChatTemplate(
        "{{ bos_token }}{{ messages[0].content }}|{{ greeting }}|{{ strftime_now('%Y') }}|"
        "{{ {'k': 'é<>'} | tojson }}|{{ [1, 2] | tojson(indent=2) }}{{ eos_token }}"
        "{% for m in messages %}{% if loop.first %}{% break %}{% endif %}{% endfor %}"
        "{% generation %}|gen{% endgeneration %}",
        bos_token="<s>",
        eos_token="</s>",
    )
    assert (template.bos_token, template.eos_token) == ("<s>", "</s>")
    year = datetime.datetime.now().strftime("%Y")
    assert template.render([{"role": "user", "content": "x"}], greeting="hi") == (
        f'<s>x|hi|{year}|{{"k": "é<>"}}|[\n  1,\n  2\n]</s>|gen'
    )


def test_opens_thinking_deepseek_r1_style() -> None:
    r1 = (
        "{% for m in messages %}<｜{{ m.role }}｜>{{ m.content }}{% endfor %}"
        "{% if add_generation_prompt %}<｜Assistant｜><think>\n{% endif %}"
    )
    template = ChatTemplate(r1)
    assert template.thinks
    assert template.opens_thinking
    qwen3_like = "{% for m in messages %}{{ m.content }}{% endfor %}{# <think> #}<|assistant|>"
    assert ChatTemplate(qwen3_like).thinks
    assert not ChatTemplate(qwen3_like).opens_thinking
    assert not ChatTemplate("{{ raise_exception('needs a system message') }}").opens_thinking


def test_syntax_error_is_reported_at_construction() -> None:
    with pytest.raises(TemplateError, match="does not compile") as info:
        ChatTemplate("{% for m in messages %}{{ m.content }")
    assert isinstance(info.value, LocalLLMError)
    assert isinstance(info.value, ValueError)
    with pytest.raises(TemplateError):
        ChatTemplate(42)  # type: ignore[arg-type]


def test_template_is_compiled_once(monkeypatch: pytest.MonkeyPatch) -> None:
    env = chat_template_module._ENV
    calls: list[str] = []
    real = env.from_string

    def counting(source: str) -> Any:
        calls.append(source)
        return real(source)

    monkeypatch.setattr(env, "from_string", counting)
    template = ChatTemplate(QWEN)
    for _ in range(3):
        template.render([{"role": "user", "content": "Hi"}], tools=TOOLS)
    _ = template.opens_thinking
    assert len(calls) == 1


@pytest.fixture
def canary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A secret file, a path that must never be created, and a record of every open()."""
    secret = tmp_path / "canary.txt"
    secret.write_text("CANARY-SECRET-1234")
    opened: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    def spy_os_open(path: Any, *args: Any, **kwargs: Any) -> int:
        opened.append(str(path))
        return real_os_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    return {"secret": secret, "mark": tmp_path / "pwned", "opened": opened}


ATTACKS = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__ }}",
    "{{ cycler.__init__.__globals__.os.popen('cat SECRET').read() }}",
    "{{ cycler.__init__.__globals__.os.system('touch MARK') }}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.system('touch MARK') }}",
    "{{ lipsum.__globals__['os'].system('touch MARK') }}",
    "{{ joiner.__init__.__globals__.__builtins__.open('SECRET').read() }}",
    "{{ raise_exception.__globals__['__builtins__']['open']('SECRET').read() }}",
    "{{ open('SECRET').read() }}",
    "{% include 'SECRET' %}",
    "{% import 'SECRET' as secret %}{{ secret }}",
    "{% from 'SECRET' import x %}",
    "{% extends 'SECRET' %}",
    "{{ __import__('os').system('touch MARK') }}",
    "{{ '{0.__class__.__init__.__globals__}'.format(raise_exception) }}",
    "{{ messages | attr('__class__') }}",
    "{{ messages.append({'role': 'system', 'content': 'injected'}) }}",
    "{{ messages[0].update({'content': 'changed'}) }}",
    "{{ 'x' * 100000000 }}",
    "{{ 10 ** 100000000 }}",
    "{% for i in range(1000000000) %}{% endfor %}",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_hostile_templates_fail_without_side_effects(attack: str, canary: dict[str, Any]) -> None:
    source = attack.replace("SECRET", str(canary["secret"])).replace("MARK", str(canary["mark"]))
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(TemplateError) as info:
        ChatTemplate(source).render(messages)
    assert "CANARY-SECRET" not in str(info.value)
    assert str(canary["secret"]) not in canary["opened"]
    assert not canary["mark"].exists()
    assert messages == [{"role": "user", "content": "hi"}]


def test_modules_import_no_framework_and_no_engine() -> None:
    code = (
        "import sys\n"
        "import local_llm_runtime\n"
        "before = set(sys.modules)\n"
        "import local_llm_runtime.prompt.chat_template, local_llm_runtime.prompt.tool_calls, "
        "local_llm_runtime.prompt.reasoning\n"
        "new = [m.split('.')[0] for m in set(sys.modules) - before]\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('langchain_core', 'langchain', 'llama_index')]\n"
        "bad += [m for m in new if m == 'llama_cpp']\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_mistral_template_gets_nine_character_call_ids() -> None:
    from pathlib import Path

    from local_llm_runtime.prompt.chat_template import ChatTemplate

    source = (
        Path(__file__).resolve().parents[1] / "data" / "mistral_v3_chat_template.jinja"
    ).read_text()
    template = ChatTemplate(source, bos_token="<s>", eos_token="</s>")
    messages = [
        {"role": "user", "content": "add 1 and 2"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_84a256326f9b4706a54386c2", "type": "function", "function": {"name": "add", "arguments": {"a": 1, "b": 2}}}]},
        {"role": "tool", "tool_call_id": "call_84a256326f9b4706a54386c2", "name": "add", "content": "3"},
    ]  # fmt: skip
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    prompt = template.render(messages, tools=tools)
    assert "call_84a2" not in prompt
    assert (
        prompt.count(
            ChatTemplate.__module__
            and __import__("hashlib").sha256(b"call_84a256326f9b4706a54386c2").hexdigest()[:9]
        )
        == 2
    )
