"""The RAM prompt cache (LOCAL_LLM_CACHE_RAM, as llama-server's --cache-ram) on the tiny model.

With fewer slots than conversations, a request of one conversation cuts the
slot another was using; the cache saves that slot's state first and restores it
when the other conversation comes back, so its follow-up evaluates only the new
turn (``timings.prompt_tokens`` counts the tokens evaluated).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from local_llm_runtime import RuntimeSettings
from local_llm_runtime.errors import InvalidOptionError
from local_llm_runtime.llama.batching import BatchDecoder
from local_llm_runtime.llama.engine import Engine
from local_llm_runtime.llama.prompt_cache import PromptCache
from local_llm_runtime.llama.slot_files import SlotFiles
from local_llm_runtime.types import ChatResult

GREEDY = {"temperature": 0.0, "num_predict": 8}

Messages = list[dict[str, str]]

CONVO_A: Messages = [{"role": "user", "content": "a " * 200}]
CONVO_B: Messages = [{"role": "user", "content": "b " * 200}]
CONVO_C: Messages = [{"role": "user", "content": "c " * 200}]


def _engine(
    monkeypatch: pytest.MonkeyPatch, *, parallel: int = 1, cache_mib: int = 64, disk_mib: int = 0
) -> Engine:
    monkeypatch.setenv("LOCAL_LLM_NUM_PARALLEL", str(parallel))
    monkeypatch.setenv("LOCAL_LLM_CACHE_RAM", str(cache_mib))
    monkeypatch.setenv("LOCAL_LLM_CACHE_DISK", str(disk_mib))
    monkeypatch.setenv("LOCAL_LLM_SLOT_SAVE_MIN", "100")
    return Engine(RuntimeSettings.from_env())


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    made: list[Engine] = []
    yield made
    for engine in made:
        engine.pool.close()


@pytest.fixture
def make_engine(monkeypatch: pytest.MonkeyPatch, engines: list[Engine]) -> Callable[..., Engine]:
    def make(**kwargs: Any) -> Engine:
        engine = _engine(monkeypatch, **kwargs)
        engines.append(engine)
        return engine

    return make


def _batcher(engine: Engine) -> BatchDecoder:
    (entry,) = engine.pool._entries.values()
    assert entry.batcher is not None
    return entry.batcher


def _follow(convo: Messages, answer: ChatResult, text: str) -> Messages:
    return [
        *convo,
        {"role": "assistant", "content": answer.text},
        {"role": "user", "content": text},
    ]


def _interleave(engine: Engine, model: Path) -> list[ChatResult]:
    """A, B, follow-up A, follow-up B (then A and B once more) on one engine."""
    a1 = engine.chat(str(model), CONVO_A, options=GREEDY)
    b1 = engine.chat(str(model), CONVO_B, options=GREEDY)
    a2_msgs, b2_msgs = _follow(CONVO_A, a1, "more a"), _follow(CONVO_B, b1, "more b")
    a2 = engine.chat(str(model), a2_msgs, options=GREEDY)
    b2 = engine.chat(str(model), b2_msgs, options=GREEDY)
    a3 = engine.chat(str(model), _follow(a2_msgs, a2, "again a"), options=GREEDY)
    b3 = engine.chat(str(model), _follow(b2_msgs, b2, "again b"), options=GREEDY)
    return [a1, b1, a2, b2, a3, b3]


def test_interleaved_conversations_on_one_slot_all_hit(
    make_engine: Callable[..., Engine], tiny_gguf: Path
) -> None:
    engine = make_engine()
    a1, b1, a2, b2, a3, b3 = _interleave(engine, tiny_gguf)
    assert a1.timings.prompt_tokens > 200 and b1.timings.prompt_tokens > 200  # cold
    for follow_up in (a2, b2, a3, b3):  # only the new turn (and the answer before it)
        assert follow_up.timings.prompt_tokens < 60, follow_up.timings
    stats = engine.pool.prompt_cache.stats
    assert stats.restored == 4 and stats.saved >= 4
    assert _batcher(engine).n_slots == 1


def test_without_the_cache_one_slot_evaluates_each_follow_up_again(
    make_engine: Callable[..., Engine], tiny_gguf: Path
) -> None:
    engine = make_engine(cache_mib=0)
    _a1, _b1, a2, b2, _a3, _b3 = _interleave(engine, tiny_gguf)
    assert a2.timings.prompt_tokens > 200 and b2.timings.prompt_tokens > 200
    assert _batcher(engine).prompt_cache is None
    assert engine.pool.prompt_cache.stats.saved == 0


def test_greedy_answers_are_the_same_with_and_without_the_cache(
    make_engine: Callable[..., Engine], tiny_gguf: Path
) -> None:
    cached = [r.text for r in _interleave(make_engine(), tiny_gguf)]
    uncached = [r.text for r in _interleave(make_engine(cache_mib=0), tiny_gguf)]
    assert cached == uncached
    assert any(cached)


def test_another_prompt_cutting_only_a_short_tail_still_saves_it(
    make_engine: Callable[..., Engine], tiny_gguf: Path
) -> None:
    # B shares all but A's last word: few cells are cut, but they are another prompt's
    engine = make_engine()
    convo_a: Messages = [{"role": "user", "content": "a " * 200 + "x"}]
    a1 = engine.chat(str(tiny_gguf), convo_a, options={**GREEDY, "num_predict": 1})
    engine.chat(str(tiny_gguf), [{"role": "user", "content": "a " * 200 + "y"}], options=GREEDY)
    assert engine.pool.prompt_cache.stats.saved == 1
    engine.chat(str(tiny_gguf), _follow(convo_a, a1, "z"), options=GREEDY)
    assert engine.pool.prompt_cache.stats.restored == 1


def test_a_follow_up_in_the_same_conversation_saves_nothing(
    make_engine: Callable[..., Engine], tiny_gguf: Path
) -> None:
    engine = make_engine()
    a1 = engine.chat(str(tiny_gguf), CONVO_A, options=GREEDY)
    a2 = engine.chat(str(tiny_gguf), _follow(CONVO_A, a1, "more"), options=GREEDY)
    assert a2.timings.prompt_tokens < 60
    assert engine.pool.prompt_cache.stats.saved == 0


def test_an_unrelated_prompt_misses(make_engine: Callable[..., Engine], tiny_gguf: Path) -> None:
    engine = make_engine()
    engine.chat(str(tiny_gguf), CONVO_A, options=GREEDY)
    engine.chat(str(tiny_gguf), CONVO_B, options=GREEDY)  # saves A
    c = engine.chat(str(tiny_gguf), CONVO_C, options=GREEDY)  # saves B, restores nothing
    assert c.timings.prompt_tokens > 200
    stats = engine.pool.prompt_cache.stats
    assert stats.restored == 0 and stats.saved == 2


def test_the_least_recently_used_state_goes_when_the_budget_is_full(
    make_engine: Callable[..., Engine], tiny_gguf: Path
) -> None:
    engine = make_engine()
    a1 = engine.chat(str(tiny_gguf), CONVO_A, options=GREEDY)
    engine.chat(str(tiny_gguf), CONVO_B, options=GREEDY)
    c1 = engine.chat(str(tiny_gguf), CONVO_C, options=GREEDY)  # saves B: A and B kept
    cache = engine.pool.prompt_cache
    sizes = [e.size for e in cache.entries(next(iter(cache._lru))[0])]
    assert len(sizes) == 2
    cache.limit_bytes = cache.size + max(sizes) // 2  # room for two states, not three
    engine.chat(str(tiny_gguf), CONVO_B, options=GREEDY)  # saves C, restores B: A, B, C > budget
    assert cache.stats.evicted == 1 and cache.size <= cache.limit_bytes
    a2 = engine.chat(str(tiny_gguf), _follow(CONVO_A, a1, "more"), options=GREEDY)
    assert a2.timings.prompt_tokens > 200  # A was the least recently used: evicted
    c2 = engine.chat(str(tiny_gguf), _follow(CONVO_C, c1, "more"), options=GREEDY)
    assert c2.timings.prompt_tokens < 60  # C was kept


def test_a_state_larger_than_the_budget_is_skipped(
    make_engine: Callable[..., Engine], tiny_gguf: Path
) -> None:
    engine = make_engine()
    engine.pool.prompt_cache.limit_bytes = 1024  # smaller than any state of 200 tokens
    engine.chat(str(tiny_gguf), CONVO_A, options=GREEDY)
    engine.chat(str(tiny_gguf), CONVO_B, options=GREEDY)
    cache = engine.pool.prompt_cache
    assert cache.stats.skipped == 1 and cache.stats.saved == 0 and cache.size == 0


def test_more_conversations_than_slots_keep_their_prefix(
    make_engine: Callable[..., Engine], tiny_gguf: Path
) -> None:
    engine = make_engine(parallel=2)
    a1 = engine.chat(str(tiny_gguf), CONVO_A, options=GREEDY)
    engine.chat(str(tiny_gguf), CONVO_B, options=GREEDY)  # the other slot
    engine.chat(str(tiny_gguf), CONVO_C, options=GREEDY)  # evicts A's slot (least recent)
    a2 = engine.chat(str(tiny_gguf), _follow(CONVO_A, a1, "more"), options=GREEDY)
    assert a2.timings.prompt_tokens < 60
    assert engine.pool.prompt_cache.stats.restored == 1


def test_unload_frees_the_models_states(
    make_engine: Callable[..., Engine], tiny_gguf: Path
) -> None:
    engine = make_engine()
    engine.chat(str(tiny_gguf), CONVO_A, options=GREEDY)
    engine.chat(str(tiny_gguf), CONVO_B, options=GREEDY)
    cache = engine.pool.prompt_cache
    assert cache.size > 0
    assert engine.unload() == 1
    assert cache.size == 0 and not cache._lru


def test_seeded_requests_save_but_do_not_restore(
    make_engine: Callable[..., Engine], tiny_gguf: Path
) -> None:
    # a seed promises the same answer whatever ran before: its whole prompt is evaluated
    engine = make_engine()
    seeded = {**GREEDY, "seed": 3}
    a1 = engine.chat(str(tiny_gguf), CONVO_A, options=seeded)
    engine.chat(str(tiny_gguf), CONVO_B, options=seeded)
    a2 = engine.chat(str(tiny_gguf), _follow(CONVO_A, a1, "more"), options=seeded)
    assert a2.timings.prompt_tokens > 200
    assert engine.pool.prompt_cache.stats.restored == 0
    assert engine.pool.prompt_cache.stats.saved >= 1


# ---- long shared prefixes saved to disk (LOCAL_LLM_SLOT_SAVE_PATH) -------------

SYSTEM = "s " * 150  # a system prompt two conversations share (> LOCAL_LLM_SLOT_SAVE_MIN)


def _with_system(text: str) -> Messages:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def _slot_files(engine: Engine) -> SlotFiles:
    batcher = _batcher(engine)
    assert batcher.prompt_cache is not None and batcher.prompt_cache.disk is not None
    return batcher.prompt_cache.disk


def _save_shared_prefix(make_engine: Callable[..., Engine], model: Path) -> list[Path]:
    """Two conversations with one system prompt, then the engine is closed (a restart).

    Their questions share a few words: the prefix saved ends inside the user's turn.
    """
    engine = make_engine(disk_mib=64)
    engine.chat(str(model), _with_system("what is " + "a " * 30), options=GREEDY)
    engine.chat(str(model), _with_system("what is " + "b " * 30), options=GREEDY)
    disk = _slot_files(engine)
    disk.flush()
    assert disk.saved == 1
    files = sorted(disk.folder.glob("*.slot"))
    engine.pool.close()
    return files


def test_a_shared_prefix_saved_to_disk_is_loaded_after_a_restart(
    make_engine: Callable[..., Engine], tiny_gguf: Path
) -> None:
    (saved,) = _save_shared_prefix(make_engine, tiny_gguf)
    restarted = make_engine(disk_mib=64)
    c = restarted.chat(str(tiny_gguf), _with_system("c " * 30), options=GREEDY)
    # the system prompt came from the file: only the user's turn was evaluated
    assert c.usage.prompt_tokens - c.timings.prompt_tokens >= 150
    assert _slot_files(restarted).loaded == 1 and saved.exists()
    cold = make_engine()  # no disk: the same greedy answer from a full prefill
    assert cold.chat(str(tiny_gguf), _with_system("c " * 30), options=GREEDY).text == c.text


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _flip_a_state_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))


def _garbage(path: Path) -> None:
    path.write_bytes(b"not a slot file at all")


@pytest.mark.parametrize("damage", [_truncate, _flip_a_state_byte, _garbage])
def test_a_damaged_file_is_ignored_and_removed(
    make_engine: Callable[..., Engine], tiny_gguf: Path, damage: Callable[[Path], None]
) -> None:
    (saved,) = _save_shared_prefix(make_engine, tiny_gguf)
    damage(saved)
    restarted = make_engine(disk_mib=64)
    c = restarted.chat(str(tiny_gguf), _with_system("c " * 30), options=GREEDY)
    assert c.timings.prompt_tokens == c.usage.prompt_tokens  # evaluated in full
    assert not saved.exists()
    assert _slot_files(restarted).loaded == 0


def test_disk_budget_removes_the_least_recently_used_file(
    make_engine: Callable[..., Engine], tiny_gguf: Path
) -> None:
    (first,) = _save_shared_prefix(make_engine, tiny_gguf)
    engine = make_engine(disk_mib=64)
    disk = _slot_files_after(engine, tiny_gguf)
    disk.limit_bytes = first.stat().st_size * 3 // 2  # room for one file
    other = [{"role": "system", "content": "o " * 150}]
    engine.chat(str(tiny_gguf), [*other, {"role": "user", "content": "a " * 30}], options=GREEDY)
    engine.chat(str(tiny_gguf), [*other, {"role": "user", "content": "b " * 30}], options=GREEDY)
    disk.flush()
    assert disk.saved == 1
    assert not first.exists()
    assert len(list(disk.folder.glob("*.slot"))) == 1


def _slot_files_after(engine: Engine, model: Path) -> SlotFiles:
    engine.chat(str(model), [{"role": "user", "content": "x"}], options=GREEDY)  # loads it
    return _slot_files(engine)


# ---- the cache's own rules (real bytes, no llama.cpp) -------------------------


def _state(n: int) -> Any:
    return (ctypes.c_uint8 * n)()


def test_cache_keeps_the_longest_prefix_and_drops_covered_states() -> None:
    cache = PromptCache(1000)
    assert cache.add("m", [1, 2, 3], _state(100), 100)
    found = cache.best("m", [1, 2, 3])
    assert found is not None and found[1] == 2  # the last prompt token is evaluated again
    assert cache.best("m", [1, 2, 3], more_than=2) is None
    assert cache.add("m", [1, 2, 3, 4, 5], _state(100), 100)  # covers [1, 2, 3]: replaces it
    assert [e.tokens for e in cache.entries("m")] == [(1, 2, 3, 4, 5)]
    assert cache.add("m", [1, 2], _state(100), 100)  # already covered: nothing added
    assert cache.size == 100
    found = cache.best("m", [1, 2, 3, 9])
    assert found is not None and found[1] == 3
    assert cache.best("other model", [1, 2, 3]) is None
    assert cache.best("m", [7, 8]) is None


def test_cache_evicts_least_recently_used_first() -> None:
    cache = PromptCache(250)
    cache.add("m", [1], _state(100), 100)
    cache.add("m", [2], _state(100), 100)
    assert cache.best("m", [1, 5]) is not None  # touches [1]: [2] is now the oldest
    cache.add("m", [3], _state(100), 100)
    assert sorted(e.tokens for e in cache.entries("m")) == [(1,), (3,)]
    assert cache.stats.evicted == 1 and cache.size == 200
    assert not cache.add("m", [4], _state(300), 300)  # larger than the whole budget
    assert cache.stats.skipped == 1
    cache.drop_model("m")
    assert cache.size == 0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, 0), ("", 0), ("0", 0), ("256", 256)],
)
def test_cache_ram_setting(raw: str | None, expected: int) -> None:
    env = {"LOCAL_LLM_HOME": "/tmp/x"}
    if raw is not None:
        env["LOCAL_LLM_CACHE_RAM"] = raw
    assert RuntimeSettings.from_env(env).cache_ram == expected


@pytest.mark.parametrize("raw", ["-1", "lots"])
def test_cache_ram_setting_rejects(raw: str) -> None:
    with pytest.raises(InvalidOptionError, match="LOCAL_LLM_CACHE_RAM"):
        RuntimeSettings.from_env({"LOCAL_LLM_HOME": "/tmp/x", "LOCAL_LLM_CACHE_RAM": raw})
