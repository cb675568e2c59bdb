"""One request and a continuous batch run the same token loop (a slot is a batch of one).

With ``num_parallel=1`` the decoder drives the model's own context from the
consumer's thread; with more slots a decoding thread serves a batched context.
The same request must give the same greedy tokens, the same errors and the
same cancel behaviour on both, on the tiny model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from local_llm_runtime import ContextLengthExceededError, GenerationError, RuntimeSettings
from local_llm_runtime.llama.engine import Engine
from local_llm_runtime.llama.sampling import Sampler, SamplingOptions
from local_llm_runtime.types import FinalChunk
from tests.support.events import SetAfter

GREEDY = {"temperature": 0.0, "num_predict": 24, "seed": 5}
PROMPTS = ["hello", "The quick brown fox " * 6, "a b c d e f g"]


@pytest.fixture
def engines(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[int, Engine]]:
    made = {}
    for parallel in (1, 3):
        monkeypatch.setenv("LOCAL_LLM_NUM_PARALLEL", str(parallel))
        made[parallel] = Engine(RuntimeSettings.from_env())
    yield made
    for engine in made.values():
        engine.pool.close()


def _decoder_mode(engine: Engine) -> bool:
    (entry,) = engine.pool._entries.values()
    assert entry.batcher is not None
    return entry.batcher.synchronous


def test_single_and_batched_give_the_same_greedy_tokens(
    engines: dict[int, Engine], tiny_gguf: Path
) -> None:
    results: dict[int, list[tuple[str, int, str]]] = {}
    for parallel, engine in engines.items():
        results[parallel] = []
        for prompt in [*PROMPTS, PROMPTS[0]]:  # the last one again: cache reused or not
            r = engine.chat(str(tiny_gguf), [{"role": "user", "content": prompt}], options=GREEDY)
            results[parallel].append((r.text, r.usage.completion_tokens, r.finish_reason))
    assert _decoder_mode(engines[1]) is True  # one slot: synchronous, no thread
    assert _decoder_mode(engines[3]) is False
    assert all(n > 0 for _text, n, _finish in results[1])
    assert results[1] == results[3]


def test_single_and_batched_reject_an_over_long_prompt_alike(
    engines: dict[int, Engine], tiny_gguf: Path
) -> None:
    messages = [{"role": "user", "content": "word " * 300}]
    errors = []
    for engine in engines.values():
        with pytest.raises(ContextLengthExceededError) as info:
            engine.chat(str(tiny_gguf), messages, options={**GREEDY, "num_ctx": 128})
        errors.append(str(info.value))
    assert errors[0] == errors[1]


def test_single_and_batched_abort_a_long_prompt_alike(
    engines: dict[int, Engine], tiny_gguf: Path
) -> None:
    messages = [{"role": "user", "content": "a " * 1400}]  # 3 prompt batches of 512
    for engine in engines.values():
        cancel = SetAfter(3)
        chunks = list(engine.chat_stream(str(tiny_gguf), messages, options=GREEDY, cancel=cancel))
        final = chunks[-1]
        assert isinstance(final, FinalChunk)
        assert final.finish_reason == "cancelled"
        assert final.timings.sampled_tokens == 0  # stopped inside prompt evaluation
        assert cancel.checks < 50
    done = [
        engine.chat(str(tiny_gguf), messages, options=GREEDY).text for engine in engines.values()
    ]
    assert done[0] == done[1]  # each cache was left consistent


def test_single_and_batched_map_a_failed_step_alike(
    engines: dict[int, Engine], tiny_gguf: Path
) -> None:
    class Broken:
        vocab = None

        def sample(self, ctx: object, index: int = -1) -> int:
            raise GenerationError("sampler exploded")

        def close(self) -> None:
            pass

    for engine in engines.values():
        engine.chat(str(tiny_gguf), [{"role": "user", "content": "x"}], options=GREEDY)
        (entry,) = engine.pool._entries.values()
        assert entry.batcher is not None
        tokens = entry.llm.tokenize(b"hello world")
        run = entry.batcher.start(tokens, Broken(), max_tokens=5, reuse=False)  # type: ignore[arg-type]
        with pytest.raises(GenerationError, match="exploded"):
            list(run)
        run.close()
        with Sampler(entry.llm, SamplingOptions(temperature=0), seed=1) as sampler:
            good = entry.batcher.start(tokens, sampler, max_tokens=5, reuse=False)
            assert len(list(good)) == 5  # the decoder (and its slot) still work
            good.close()


def test_the_unloaded_model_is_a_generation_error_on_both(
    engines: dict[int, Engine], tiny_gguf: Path
) -> None:
    for engine in engines.values():
        engine.chat(str(tiny_gguf), [{"role": "user", "content": "x"}], options=GREEDY)
        (entry,) = engine.pool._entries.values()
        assert entry.batcher is not None
        tokens = entry.llm.tokenize(b"hello world")
        entry.batcher.close()
        with pytest.raises(GenerationError, match="unloaded"):
            entry.batcher.start(
                tokens, Sampler(entry.llm, SamplingOptions(), seed=1), max_tokens=5, reuse=False
            )
        engine.pool._entries.clear()
        entry.llm.close()
