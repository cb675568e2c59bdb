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
from local_llm_runtime.llama.batching import BatchDecoder
from local_llm_runtime.llama.engine import Engine
from local_llm_runtime.llama.sampling import Sampler, SamplingOptions
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


@pytest.fixture
def decoder(llm: llama_cpp.Llama) -> Iterator[BatchDecoder]:
    """One slot on the model's own context: the runtime's single-request token loop."""
    dec = BatchDecoder(llm, n_slots=1, num_ctx=512, n_batch=512)
    yield dec
    dec.close()


def _tokens(decoder: BatchDecoder, prompt: list[int], sampler: Sampler, n: int) -> list[int]:
    run = decoder.start(prompt, sampler, max_tokens=n, reuse=False)
    try:
        return list(run)
    finally:
        run.close()


def _ours(decoder: BatchDecoder, llm: llama_cpp.Llama, prompt: list[int], n: int) -> list[int]:
    options = SamplingOptions(temperature=0.0, repeat_penalty=1.1)
    return _tokens(decoder, prompt, Sampler(llm, options, seed=7, grammar=GBNF), n)


def test_greedy_matches_constraining_the_whole_vocabulary_first(
    llm: llama_cpp.Llama, decoder: BatchDecoder
) -> None:
    prompt = llm.tokenize(b"Answer in JSON: is the sky blue?")
    reference = []
    for token in llm.generate(
        prompt, temp=0.0, repeat_penalty=1.1, grammar=LlamaGrammar.from_string(GBNF, verbose=False)
    ):
        reference.append(token)
        if len(reference) == 24 or llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
            break
    assert len(reference) > 8  # '{"answer": ...' takes several tokens even with byte fallback
    assert _ours(decoder, llm, prompt, len(reference)) == reference


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


def test_rejections_are_counted_and_resampled(llm: llama_cpp.Llama, decoder: BatchDecoder) -> None:
    prompt = llm.tokenize(b"hello")
    sampler = Sampler(llm, SamplingOptions(temperature=1.0), seed=3, grammar=GBNF)
    tokens = _tokens(decoder, prompt, sampler, 4)
    assert llm.detokenize(tokens).decode().startswith("{")
    assert sampler.rejections >= 1  # a random model rarely picks the grammar's token


def test_unparseable_grammar_is_a_typed_error(llm: llama_cpp.Llama) -> None:
    with pytest.raises(InvalidOptionError, match="grammar"):
        Sampler(llm, SamplingOptions(), seed=1, grammar='root ::= "unterminated')


def test_prefix_reuse_keeps_the_cached_part_but_not_the_last_token(
    llm: llama_cpp.Llama, decoder: BatchDecoder
) -> None:
    greedy = SamplingOptions(temperature=0.0)

    def reused(tokens: list[int], *, reuse: bool) -> int:
        run = decoder.start(tokens, Sampler(llm, greedy, seed=1), max_tokens=1, reuse=reuse)
        try:
            assert len(list(run)) == 1
        finally:
            run.close()
        return run.reused

    first = llm.tokenize(b"The quick brown fox jumps")
    second = llm.tokenize(b"The quick brown fox sleeps")
    shared = next(i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b)
    assert reused(first, reuse=False) == 0
    assert reused(second, reuse=True) == shared  # one slot: any shared prefix is kept
    assert reused(second, reuse=True) == len(second) - 1  # its logits are needed again
    assert reused(second, reuse=False) == 0


def test_same_seed_same_tokens_without_grammar(llm: llama_cpp.Llama, decoder: BatchDecoder) -> None:
    prompt = llm.tokenize(b"hello")
    options = SamplingOptions(temperature=0.9)
    runs = [_tokens(decoder, prompt, Sampler(llm, options, seed=11), 16) for _ in range(2)]
    assert len(runs[0]) == 16
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
