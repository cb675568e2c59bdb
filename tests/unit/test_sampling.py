"""The token loop and the grammar fast-path sampler, on a tiny random-weight model.

A random model's favourite token is almost never one the grammar allows, so
these tests drive the slow (constrain-everything) path on nearly every token;
tests/integration/test_sampling_real.py checks the fast path on the real model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import llama_cpp
import pytest
from llama_cpp.llama_grammar import LlamaGrammar

from local_llm_runtime import InvalidOptionError
from local_llm_runtime.llama.engine import Engine
from local_llm_runtime.llama.sampling import Sampler, SamplingOptions, decode, prepare
from local_llm_runtime.prompt.tool_calls import json_schema_gbnf

SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"enum": ["yes", "no", "maybe"]},
        "sure": {"type": "boolean"},
    },
    "required": ["answer", "sure"],
}
GBNF = json_schema_gbnf(SCHEMA)


@pytest.fixture
def llm(tiny_gguf: Path) -> Iterator[llama_cpp.Llama]:
    model = llama_cpp.Llama(str(tiny_gguf), n_ctx=512, verbose=False)
    yield model
    model.close()


def _ours(llm: llama_cpp.Llama, prompt: list[int], options: SamplingOptions, n: int) -> list[int]:
    with Sampler(llm, options, seed=7, grammar=GBNF) as sampler:
        gen = decode(llm, prepare(llm, prompt, reuse=False), sampler)
        out = [next(gen) for _ in range(n)]
        gen.close()
    return out


def test_greedy_matches_constraining_the_whole_vocabulary_first(llm: llama_cpp.Llama) -> None:
    prompt = llm.tokenize(b"Answer in JSON: is the sky blue?")
    options = SamplingOptions(temperature=0.0, repeat_penalty=1.1)
    reference = []
    for token in llm.generate(
        prompt, temp=0.0, repeat_penalty=1.1, grammar=LlamaGrammar.from_string(GBNF, verbose=False)
    ):
        reference.append(token)
        if len(reference) == 24 or llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
            break
    assert len(reference) > 8  # '{"answer": ...' takes several tokens even with byte fallback
    assert _ours(llm, prompt, options, len(reference)) == reference


def test_grammar_output_always_validates(tiny_gguf: Path) -> None:
    engine = Engine()
    try:
        for seed in range(6):
            result = engine.chat(
                str(tiny_gguf),
                [{"role": "user", "content": "Is the sky blue? Answer in JSON."}],
                format=SCHEMA,
                options={"seed": seed, "temperature": 1.0, "num_predict": 64},
            )
            jsonschema.validate(json.loads(result.text), SCHEMA)
    finally:
        engine.pool.close()


def test_rejections_are_counted_and_resampled(llm: llama_cpp.Llama) -> None:
    prompt = llm.tokenize(b"hello")
    with Sampler(llm, SamplingOptions(temperature=1.0), seed=3, grammar=GBNF) as sampler:
        gen = decode(llm, prepare(llm, prompt, reuse=False), sampler)
        text = llm.detokenize([next(gen) for _ in range(4)]).decode()
        gen.close()
        assert text.startswith("{")
        assert sampler.rejections >= 1  # a random model rarely picks the grammar's token


def test_unparseable_grammar_is_a_typed_error(llm: llama_cpp.Llama) -> None:
    with pytest.raises(InvalidOptionError, match="grammar"):
        Sampler(llm, SamplingOptions(), seed=1, grammar='root ::= "unterminated')


def test_prefix_reuse_keeps_the_cached_part_but_not_the_last_token(llm: llama_cpp.Llama) -> None:
    first = llm.tokenize(b"The quick brown fox jumps")
    llm.eval(prepare(llm, first, reuse=False))
    second = llm.tokenize(b"The quick brown fox sleeps")
    shared = next(i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b)
    assert prepare(llm, second, reuse=True) == second[shared:]
    llm.eval(second[shared:])
    assert prepare(llm, second, reuse=True) == second[-1:]  # its logits are needed again
    assert prepare(llm, second, reuse=False) == second
    assert llm.n_tokens == 0


def test_same_seed_same_tokens_without_grammar(llm: llama_cpp.Llama) -> None:
    prompt = llm.tokenize(b"hello")
    runs = []
    for _ in range(2):
        with Sampler(llm, SamplingOptions(temperature=0.9), seed=11) as sampler:
            gen = decode(llm, prepare(llm, prompt, reuse=False), sampler)
            runs.append([next(gen) for _ in range(16)])
            gen.close()
    assert runs[0] == runs[1]


def test_repeat_last_n_is_honoured_per_request(tiny_gguf: Path) -> None:
    engine = Engine()

    def run(**options: float) -> str:
        return engine.chat(
            str(tiny_gguf),
            [{"role": "user", "content": "hello"}],
            options={"temperature": 0, "num_predict": 32, **options},
        ).text

    try:
        plain = run(repeat_penalty=1.0)
        assert run(repeat_penalty=5.0, repeat_last_n=0) == plain  # an empty window: no penalty
        assert run(repeat_penalty=5.0, repeat_last_n=64) != plain
        assert run(repeat_penalty=5.0, repeat_last_n=-1) != plain  # -1: the whole context
    finally:
        engine.pool.close()
