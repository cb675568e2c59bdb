"""Model-family traits come from one table keyed by GGUF metadata; a new row changes behaviour."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from local_llm_runtime import Engine
from local_llm_runtime.prompt import families
from local_llm_runtime.prompt.chat_template import ChatTemplate
from local_llm_runtime.prompt.families import FAMILIES, Family, traits_for
from local_llm_runtime.store.gguf_meta import GGUFInfo, summarize

DATA = Path(__file__).resolve().parents[1] / "data"
NOMIC = {"query": "search_query: ", "document": "search_document: "}
THINK = ("<think>", "</think>")
R1_TEMPLATE = "{{ messages[0].content }}<｜Assistant｜><think>\n"
QWEN3_TEMPLATE = "{% if enable_thinking is false %}<think>\n\n</think>{% endif %}{{ messages }}"

# (GGUF metadata, expected families, think tags, embedding prefixes)
CASES: list[tuple[dict[str, Any], tuple[str, ...], tuple[str, str] | None, dict[str, str]]] = [
    ({"general.architecture": "nomic-bert"}, ("nomic-embed",), None, NOMIC),
    ({"general.architecture": "nomic-bert-moe"}, ("nomic-embed",), None, NOMIC),
    ({"general.architecture": "bert"}, (), None, {}),
    (  # DeepSeek-R1 distills keep their base architecture: the template tells
        {"general.architecture": "qwen2", "tokenizer.chat_template": R1_TEMPLATE},
        ("think-tags",), THINK, {},
    ),
    (
        {"general.architecture": "qwen3", "tokenizer.chat_template": QWEN3_TEMPLATE},
        ("think-tags",), THINK, {},
    ),
    (
        {
            "general.architecture": "qwen2",
            "tokenizer.chat_template": (DATA / "qwen2.5_chat_template.jinja").read_text(),
        },
        (), None, {},
    ),
    (
        {
            "general.architecture": "llama",
            "tokenizer.chat_template": (DATA / "llama3.1_chat_template.jinja").read_text(),
        },
        (), None, {},
    ),
    ({}, (), None, {}),
]  # fmt: skip


@pytest.mark.parametrize(("metadata", "names", "think", "prefixes"), CASES)
def test_traits_by_metadata(
    metadata: dict[str, Any],
    names: tuple[str, ...],
    think: tuple[str, str] | None,
    prefixes: dict[str, str],
) -> None:
    traits = traits_for(metadata)
    assert traits.families == names
    assert traits.think_tags == think
    assert dict(traits.embedding_prefixes) == prefixes
    template = ChatTemplate(metadata.get("tokenizer.chat_template"), metadata=metadata)
    assert template.think_tags == think
    assert template.thinks == (think is not None)
    info = GGUFInfo(
        path=Path("m.gguf"), version=3, metadata=metadata, tensor_count=0, parameter_count=0
    )
    assert ("thinking" in summarize([info])["capabilities"]) == (think is not None)


def test_every_row_of_the_table_is_covered_by_a_case() -> None:
    covered = {name for _, names, _, _ in CASES for name in names}
    assert covered == {family.name for family in FAMILIES}


def test_the_first_matching_row_that_sets_a_trait_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [
        Family("a", architectures=("x",), think_tags=("<a>", "</a>")),
        Family("b", architectures=("x",), think_tags=("<b>", "</b>"), embedding_prefixes={"query": "q: "}),
    ]  # fmt: skip
    monkeypatch.setattr(families, "FAMILIES", rows)
    traits = traits_for({"general.architecture": "x"})
    assert traits.families == ("a", "b")
    assert traits.think_tags == ("<a>", "</a>")
    assert traits.embedding_prefixes == {"query": "q: "}


REASON = ("<reasoning>", "</reasoning>")
REASONER = Family("reasoner", architectures=("reasoner",), think_tags=REASON)


def test_a_new_row_gives_a_made_up_architecture_its_think_tags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = "{{ messages[0].content }}\nassistant: <reasoning>\n"
    meta = {"general.architecture": "reasoner"}
    before = ChatTemplate(source, metadata=meta)
    assert not before.thinks and not before.opens_thinking
    monkeypatch.setattr(families, "FAMILIES", [REASONER, *FAMILIES])
    after = ChatTemplate(source, metadata=meta)
    assert after.think_tags == REASON
    assert after.opens_thinking
    assert not ChatTemplate(source, metadata={"general.architecture": "llama"}).thinks


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine()
    yield eng
    eng.pool.close()


def test_the_engine_splits_reasoning_by_the_rows_tags(
    engine: Engine, tiny_gguf_factory: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tiny llama's template opens ``<reasoning>``: with a row for llama, the output is
    reasoning; without one, it is text."""
    template = (
        "{% for m in messages %}{{ m.content }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '\\n<reasoning>\\n' }}{% endif %}"
    )
    model = str(tiny_gguf_factory(chat_template=template))
    options = {"temperature": 0.0, "seed": 1, "num_predict": 8}
    plain = engine.chat(model, [{"role": "user", "content": "Hi"}], options=options)
    assert plain.text and not plain.reasoning
    llama = Family("tiny-reasoner", architectures=("llama",), think_tags=REASON)
    monkeypatch.setattr(families, "FAMILIES", [llama, *FAMILIES])
    other = str(tiny_gguf_factory(chat_template=template + "{# another template #}"))
    result = engine.chat(other, [{"role": "user", "content": "Hi"}], options=options)
    assert result.reasoning and not result.text.strip()
