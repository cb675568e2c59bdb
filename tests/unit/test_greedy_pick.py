"""Greedy decoding in numpy picks exactly the token llama.cpp's penalties -> greedy chain picks.

The oracle is llama.cpp itself: the same logits go through a real
``llama_sampler_init_penalties`` + ``llama_sampler_init_greedy`` chain that accepted the
same history. Rows are drawn to make the rule's edges likely: ties, negative and zero
logits, a penalised token that was the maximum, histories longer than ``repeat_last_n``.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from local_llm_runtime import RuntimeSettings
from local_llm_runtime.llama import sampling
from local_llm_runtime.llama.engine import Engine
from local_llm_runtime.llama.sampling import GreedyPick, SamplingOptions

N_VOCAB = 512

PENALTIES = [
    {},  # Ollama's defaults: repeat_penalty 1.1 over the last 64
    {"repeat_penalty": 1.0},  # a no-op chain
    {"repeat_penalty": 1.5, "repeat_last_n": 4},
    {"repeat_penalty": 0.7, "repeat_last_n": 8},  # < 1 favours repeats
    {"repeat_penalty": 1.3, "frequency_penalty": 0.4, "presence_penalty": 0.25},
    {"repeat_penalty": 1.0, "frequency_penalty": 1.5, "repeat_last_n": 16},
    {"repeat_last_n": 0},
    {"repeat_last_n": -1},  # llama.cpp clamps it to 0
]


def _oracle(options: SamplingOptions, history: list[int], row: np.ndarray) -> int:
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    try:
        llama_cpp.llama_sampler_chain_add(
            chain,
            llama_cpp.llama_sampler_init_penalties(
                N_VOCAB,
                options.repeat_last_n,
                options.repeat_penalty,
                options.frequency_penalty,
                options.presence_penalty,
            ),
        )
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        for token in history:
            llama_cpp.llama_sampler_accept(chain, token)
        data = (llama_cpp.llama_token_data * N_VOCAB)()
        for i, logit in enumerate(row.tolist()):
            data[i].id, data[i].logit, data[i].p = i, logit, 0.0
        array = llama_cpp.llama_token_data_array(data=data, size=N_VOCAB, selected=-1, sorted=False)
        llama_cpp.llama_sampler_apply(chain, ctypes.byref(array))
        return int(data[array.selected].id)
    finally:
        llama_cpp.llama_sampler_free(chain)


def _row(rng: np.random.Generator, kind: int) -> np.ndarray:
    if kind == 0:
        return rng.normal(0, 3, N_VOCAB).astype(np.float32)
    if kind == 1:  # few distinct values: many ties
        return rng.integers(-3, 4, N_VOCAB).astype(np.float32)
    row = rng.normal(-5, 1, N_VOCAB).astype(np.float32)  # all negative, one near-zero spike
    row[rng.integers(N_VOCAB)] = 0.0
    return row


@pytest.mark.parametrize("penalties", PENALTIES, ids=lambda p: str(p) or "defaults")
def test_greedy_pick_equals_llama_cpp(penalties: dict[str, float]) -> None:
    options = SamplingOptions(temperature=0.0, **penalties)  # type: ignore[arg-type]
    rng = np.random.default_rng(12345)
    for trial in range(60):
        row = _row(rng, trial % 3)
        top = int(row.argmax())
        history = [int(t) for t in rng.integers(0, 24, rng.integers(0, 90))]
        if trial % 4 == 0:
            history.append(top)  # the maximum itself is penalised
        pick = GreedyPick(options, N_VOCAB)
        for token in history:
            pick.accept(token)
        ours = pick.pick(row.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        assert ours == _oracle(options, history, row), (trial, history)


def test_greedy_pick_never_writes_the_logits() -> None:
    row = np.linspace(-1, 1, N_VOCAB, dtype=np.float32)
    before = row.copy()
    pick = GreedyPick(SamplingOptions(temperature=0.0, repeat_penalty=2.0), N_VOCAB)
    pick.accept(N_VOCAB - 1)
    assert pick.pick(row.ctypes.data_as(ctypes.POINTER(ctypes.c_float))) == N_VOCAB - 2
    assert np.array_equal(row, before)


@pytest.mark.parametrize(
    "penalties", [{}, {"repeat_penalty": 1.8, "repeat_last_n": 8}, {"frequency_penalty": 0.9}]
)
def test_generation_is_the_same_as_with_llama_cpps_chain(
    tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch, penalties: dict[str, float]
) -> None:
    options = {"temperature": 0.0, "num_predict": 24, **penalties}
    prompts = ["alpha beta", "one two three four", "x"]

    def answers() -> list[str]:
        engine = Engine(RuntimeSettings.from_env())
        try:
            return [
                engine.generate(str(tiny_gguf), p, raw=True, options=options).text for p in prompts
            ]
        finally:
            engine.pool.close()

    fast = answers()
    monkeypatch.setattr(sampling, "GreedyPick", lambda *args: None)  # llama.cpp's chain
    assert answers() == fast
