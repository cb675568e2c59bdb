"""Structured output on the demo model: the pydantic schema table, enforced end to end.

Every convertible schema of ``tests/support/schema_table.py`` goes through
``Engine.chat(format=schema)`` at temperature 0; each output that ends by itself
validates with ``jsonschema`` (2020-12 formats) and pydantic. A handful go through
LangChain ``with_structured_output`` and one through LlamaIndex ``structured_predict``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from pydantic import BaseModel

from local_llm_runtime.llama.engine import Engine
from tests.support.schema_table import CASES, SchemaCase

FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER
CONVERTING = [case for case in CASES if case.unsupported is None]
LANGCHAIN = ["nested", "pattern-d", "datetime-date-time-uuid", "int-bounds", "discriminated-union"]


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    eng = Engine()
    yield eng
    eng.pool.close()


@pytest.mark.parametrize("case", CONVERTING, ids=lambda c: c.name)
def test_demo_model_output_validates(case: SchemaCase, engine: Engine, demo_model: Path) -> None:
    result = engine.chat(
        str(demo_model),
        [{"role": "user", "content": "Give one realistic example as JSON."}],
        format=case.schema,
        options={"temperature": 0, "seed": 1, "num_predict": 384},
    )
    if result.finish_reason != "stop":
        pytest.xfail(f"cut by num_predict after {result.usage.completion_tokens} tokens")
    jsonschema.validate(json.loads(result.text), case.schema, format_checker=FORMATS)
    case.validate_with_pydantic(result.text)


@pytest.mark.parametrize("name", LANGCHAIN)
def test_langchain_with_structured_output(name: str, demo_model: Path) -> None:
    from local_llm_integrations import ChatLocal

    case = next(c for c in CASES if c.name == name)
    assert isinstance(case.type_, type) and issubclass(case.type_, BaseModel)
    llm = ChatLocal(model=str(demo_model), temperature=0, seed=1, num_predict=384)
    answer = llm.with_structured_output(case.type_).invoke("Give one realistic example.")
    assert isinstance(answer, case.type_)
    jsonschema.validate(answer.model_dump(mode="json"), case.schema, format_checker=FORMATS)


def test_llama_index_structured_predict(demo_model: Path) -> None:
    from llama_index.core.prompts import PromptTemplate

    from local_llm_integrations.llama_index import LocalLLM

    case = next(c for c in CASES if c.name == "pattern-w-s")
    llm = LocalLLM(model=str(demo_model), temperature=0, num_predict=128)
    answer = llm.structured_predict(case.type_, PromptTemplate("Give a person's full name."))
    assert isinstance(answer, case.type_)
    jsonschema.validate(answer.model_dump(mode="json"), case.schema, format_checker=FORMATS)
