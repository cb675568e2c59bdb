"""A hostile chat template cannot hang the process or exhaust its memory.

Every template below would, unbounded, run for hours or allocate gigabytes; each
must fail fast with ``TemplateError`` (pytest-timeout bounds the run; no times
are asserted). Real templates still render.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from local_llm_runtime.errors import TemplateError
from local_llm_runtime.prompt.chat_template import CHATML_TEMPLATE, ChatTemplate
from tests.support.tiny_gguf import CHATML_TEMPLATE as TINY_CHATML
from tests.support.tiny_gguf import TEMPLATE_FAMILIES

HOSTILE = {
    "huge range": "{% for i in range(10**9) %}x{% endfor %}",
    "nested ranges": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "nested loops over a string": (
        "{% set s = 'x' * 100000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}"
    ),
    "doubling with ~": (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}{{ ns.s | length }}"
    ),
    "doubling with +": (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
        "{% endfor %}{{ ns.s | length }}"
    ),
    "doubling lists with +": (
        "{% set ns = namespace(s=[1]) %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
        "{% endfor %}{{ ns.s | length }}"
    ),
    "doubling with join": (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}"
        "{% set ns.s = [ns.s, ns.s] | join %}{% endfor %}{{ ns.s | length }}"
    ),
    "doubling with format filter": (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}"
        "{% set ns.s = '%s%s' | format(ns.s, ns.s) %}{% endfor %}{{ ns.s | length }}"
    ),
    "doubling with str.format": (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}"
        "{% set ns.s = '{}{}'.format(ns.s, ns.s) %}{% endfor %}{{ ns.s | length }}"
    ),
    "doubling with %": (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}"
        "{% set ns.s = '%s%s' % (ns.s, ns.s) %}{% endfor %}{{ ns.s | length }}"
    ),
    "growth by replace filter": (
        "{% set ns = namespace(s='xx') %}{% for i in range(64) %}"
        "{% set ns.s = ns.s | replace('x', ns.s) %}{% endfor %}{{ ns.s | length }}"
    ),
    "growth by str.replace": (
        "{% set ns = namespace(s='xx') %}{% for i in range(64) %}"
        "{% set ns.s = ns.s.replace('x', ns.s) %}{% endfor %}{{ ns.s | length }}"
    ),
    "huge join of a big separator": "{{ ('y' * 1000000).join(['a'] * 1000000) | length }}",
    "huge join filter": "{{ (['a'] * 1000000) | join('y' * 1000000) | length }}",
    "wide center": "{{ 'x'.center(10**9) | length }}",
    "wide center filter": "{{ 'x' | center(10**9) | length }}",
    "wide printf field": "{{ ('%999999999s' % 'x') | length }}",
    "wide format field": "{{ '{:>999999999}'.format('x') | length }}",
    "wide indent": "{{ 'a\nb' | indent(10**9) | length }}",
    "output in a loop": "{% for i in range(100000) %}{{ 'x' * 1000000 }}{% endfor %}",
    "exponential macro recursion": (
        "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{{ f(40) }}"
    ),
    "deep macro recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "recursive loop": (
        "{% for i in [range(100000)] * 100 recursive %}{{ loop(range(100000)) if i is "
        "not number }}{% endfor %}"
    ),
    "huge integer power": "{{ ((10 ** 4000) ** 4000) | string | length }}",
    "huge integer product": (
        "{% set ns = namespace(n=10 ** 4000) %}{% for i in range(64) %}"
        "{% set ns.n = ns.n * ns.n %}{% endfor %}{{ ns.n > 0 }}"
    ),
    "loop over a filter chain": (
        "{% for i in range(100000) | list %}{% for j in range(100000) | list %}"
        "{% endfor %}{% endfor %}"
    ),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_template_raises_template_error(name: str) -> None:
    template = ChatTemplate(HOSTILE[name])
    with pytest.raises(TemplateError):
        template.render([{"role": "user", "content": "hi"}])


@pytest.mark.parametrize(
    "source",
    [
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "{% for i in [0] recursive %}{{ loop([i]) }}{% endfor %}",
        "{% macro f(n) %}{% if n < 100 %}{{ f(n + 1) }}{% endif %}{% endmacro %}{{ f(0) }}",
    ],
)
def test_deep_calls_stop_at_the_call_depth_not_pythons_recursion_limit(source: str) -> None:
    """A recursion is refused by its nesting depth (64), before Python's own limit is near:
    a ``RecursionError`` also fires in unrelated finalizers (seen in CI as an unraisable error)."""
    with pytest.raises(TemplateError, match="nests calls more than 64 deep"):
        ChatTemplate(source).render([{"role": "user", "content": "hi"}])


def test_calls_nested_within_the_depth_render() -> None:
    source = (
        "{% macro f(n) %}{% if n < 60 %}{{ f(n + 1) }}{% else %}{{ n }}{% endif %}{% endmacro %}"
    )
    assert ChatTemplate(source + "{{ f(0) }}").render([{"role": "user", "content": "hi"}]) == "60"


REAL = {
    "chatml default": CHATML_TEMPLATE,
    "tiny chatml": TINY_CHATML,
    **{f"tiny {name}": str(kw["chat_template"]) for name, kw in TEMPLATE_FAMILIES.items()},
}
DATA = Path(__file__).resolve().parents[1] / "data"
REAL.update(
    {f"data {p.name}": p.read_text() for p in sorted(DATA.rglob("*.jinja"))}
    if DATA.is_dir()
    else {}
)


@pytest.mark.parametrize("name", list(REAL))
def test_real_templates_still_render(name: str) -> None:
    template = ChatTemplate(REAL[name], bos_token="<s>", eos_token="</s>")
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the weather in Paris? " * 200},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "call1", "function": {"name": "weather", "arguments": {"city": "Paris"}}}
            ],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "call1", "name": "weather"},
    ]
    tools = [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "Weather of a city.",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    prompt = template.render(messages, tools=tools)
    assert "Be brief." in prompt or "weather" in prompt


def test_a_long_conversation_fits_the_budget() -> None:
    """Legitimate work scales with the input: 2,000 turns of 2,000 characters render."""
    template = ChatTemplate(CHATML_TEMPLATE)
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": "w" * 2000} for i in range(2000)
    ]
    assert len(template.render(messages)) > 4_000_000


def test_large_outputs_beyond_the_input_are_refused() -> None:
    template = ChatTemplate("{% for m in messages %}{{ m.content * 400000 }}{% endfor %}")
    with pytest.raises(TemplateError, match="hostile or broken"):
        template.render([{"role": "user", "content": "ab"}] * 10)
