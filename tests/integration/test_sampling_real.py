"""The grammar fast path on the real model: same tokens as constraining first, few rejections."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import llama_cpp
import pytest
from llama_cpp.llama_grammar import LlamaGrammar

from local_llm_runtime.llama import repack
from local_llm_runtime.llama.batching import BatchDecoder
from local_llm_runtime.llama.sampling import Sampler, SamplingOptions
from local_llm_runtime.prompt.tool_calls import json_schema_gbnf

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "languages": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age", "languages"],
}
PROMPT = (
    "<|im_start|>user\nDescribe Ada Lovelace as JSON with name, age and languages."
    "<|im_end|>\n<|im_start|>assistant\n"
)


@pytest.fixture(scope="module")
def llm(demo_model: Path) -> Iterator[llama_cpp.Llama]:
    with repack.like_the_runtime():  # no AMX buffers where they crash llama.cpp
        model = llama_cpp.Llama(str(demo_model), n_ctx=1024, verbose=False)
    yield model
    model.close()


def _until_eog(llm: llama_cpp.Llama, tokens: Iterator[int], limit: int = 96) -> list[int]:
    out: list[int] = []
    for token in tokens:
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
            break
        out.append(token)
        if len(out) == limit:
            break
    return out


def test_fast_path_matches_llama_cpp_python_grammar_sampling(llm: llama_cpp.Llama) -> None:
    gbnf = json_schema_gbnf(SCHEMA)
    prompt = llm.tokenize(PROMPT.encode(), special=True)
    reference_gen = llm.generate(
        prompt, temp=0.0, repeat_penalty=1.1, grammar=LlamaGrammar.from_string(gbnf, verbose=False)
    )
    reference = _until_eog(llm, reference_gen)
    reference_gen.close()

    # The runtime's single-request token loop: a one-slot batch on the model's own context.
    decoder = BatchDecoder(llm, n_slots=1, num_ctx=1024, n_batch=512)
    with Sampler(llm, SamplingOptions(temperature=0.0), seed=0, grammar=gbnf) as sampler:
        run = decoder.start(prompt, sampler, max_tokens=96, reuse=False)
        try:
            ours = _until_eog(llm, iter(run))
        finally:
            run.close()
            decoder.close()
        rejections = sampler.rejections

    assert ours == reference
    jsonschema.validate(json.loads(llm.detokenize(ours).decode()), SCHEMA)
    # The point of the fast path: the model mostly picks allowed tokens by itself,
    # so most steps cost one grammar check instead of a vocabulary-wide pass.
    assert rejections < len(ours) / 2, (rejections, len(ours))
