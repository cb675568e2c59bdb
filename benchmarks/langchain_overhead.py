"""Streaming overhead of ``ChatLocal`` vs raw llama-cpp-python vs langchain-community.

Usage: python benchmarks/langchain_overhead.py [MODEL_PATH] [--rounds 5] [--threads N]
       [--max-tokens 128]                              (default model: the demo model)

Three implementations stream the same chat request on the same GGUF file, each with
its own loaded instance, same thread count, same context (4096), same prompt batch
(512), CPU only:

* ``raw``       -- ``llama_cpp.Llama.create_chat_completion(stream=True)``
* ``ChatLocal`` -- ``ChatLocal.stream`` (this project's adapter over the shared runtime)
* ``community`` -- ``langchain_community.chat_models.ChatLlamaCpp.stream``

Sampling is identical and deterministic: temperature 0 (llama-cpp-python's chain is
then repetition penalties -> greedy, so top_k/top_p/min_p play no part), repeat penalty
1.1 over the last 64 tokens, the same seed, the same max tokens. Every call evaluates
the whole prompt: ChatLocal does so because a seed is set (reproducibility); raw and
community get ``Llama.reset()`` before each call, so time-to-first-token compares the
same work (otherwise llama-cpp-python would reuse the cached prompt).

Each implementation is warmed up once (load + first call excluded); then rounds run
interleaved (raw, ChatLocal, community, raw, ...) and medians are reported, so a
neighbour process loading the CPU hurts all three alike.

Per call, measured by the consumer of the stream:
* TTFT: from the call to the first chunk carrying text;
* generation tokens/s: (completion tokens - 1) / (time from first to last text chunk),
  i.e. the decode rate without prompt processing. Completion tokens are counted the
  same way for all three: the streamed text re-tokenized with the raw model's
  tokenizer (ChatLocal's own usage count is printed next to it as a cross-check).
* CPU ms/tok: process CPU time (all threads) per token over the same span;
* host us/tok: wall time per token spent *outside* llama.cpp's decode and sampler
  calls (``LlamaContext.decode`` / ``LlamaSampler.sample`` and the runtime's own
  ``Sampler.sample``, which does the same job, are wrapped with a timer, for all
  three alike): the per-token cost of the Python layers -- llama-cpp-python's own
  loop, the runtime and the LangChain adapter. Unlike tokens/s it barely moves when
  other processes compete for the cores, so it shows the wrappers' cost directly.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, model_path, spread, summary_row, write_json

PROMPT = "Write a Python function that returns the n-th Fibonacci number, with a docstring."
SEED = 42
N_CTX = 4096
N_BATCH = 512
TEMPERATURE = 0.0
TOP_K = 40
TOP_P = 0.95
REPEAT_PENALTY = 1.1

# Seconds spent inside llama.cpp's decode and sampler calls (see instrument_llama).
_IN_LLAMA = [0.0]


def instrument_llama() -> None:
    """Time every llama.cpp decode and sampler call (all instances, ours and llama-cpp-python's)."""
    from llama_cpp import _internals

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def timed_call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                _IN_LLAMA[0] += time.perf_counter() - started

        return timed_call

    _internals.LlamaContext.decode = wrap(_internals.LlamaContext.decode)  # type: ignore[method-assign]
    _internals.LlamaSampler.sample = wrap(_internals.LlamaSampler.sample)  # type: ignore[method-assign]
    # The runtime samples with its own Sampler (grammar fast path): the same work as
    # llama-cpp-python's sampler call, so it counts as sampling too, not as host time.
    from local_llm_runtime.llama.sampling import Sampler

    Sampler.sample = wrap(Sampler.sample)  # type: ignore[method-assign]
    # The runtime decodes through its BatchDecoder (llama_decode on the model's own
    # context, one slot being a batch of one): that call is llama.cpp's decode too.
    from local_llm_runtime.llama.batching import BatchDecoder

    BatchDecoder._decode = wrap(BatchDecoder._decode)  # type: ignore[method-assign]


@dataclass
class Run:
    ttft_s: float
    gen_s: float
    total_s: float
    text: str
    finish: str | None
    ttft_cpu_s: float
    """Process CPU time (all threads) from the call to the first text chunk."""
    gen_cpu_s: float
    """Process CPU time (all threads) from the first to the last text chunk."""
    gen_llama_s: float
    """Of ``gen_s``, the time spent inside llama.cpp decode and sampler calls."""
    reported_tokens: int | None = None


def timed(stream: Callable[[], Iterable[Any]], piece: Callable[[Any], str]) -> tuple[Run, Any]:
    """Consume a stream, timing the first and last chunk that carries text.

    Wall clock (``perf_counter``) and process CPU time (``process_time``) are both
    read at each text chunk: CPU time per token is far less sensitive than wall time
    to other processes competing for the cores.
    """
    parts: list[str] = []
    first = last = None
    first_cpu = last_cpu = 0.0
    first_llama = last_llama = 0.0
    final = None
    started_cpu = time.process_time()
    started = time.perf_counter()
    for item in stream():
        text = piece(item)
        if text:
            now = time.perf_counter()
            now_cpu = time.process_time()
            now_llama = _IN_LLAMA[0]
            if first is None:
                first, first_cpu, first_llama = now, now_cpu, now_llama
            last, last_cpu, last_llama = now, now_cpu, now_llama
            parts.append(text)
        final = item
    ended = time.perf_counter()
    if first is None or last is None:
        first = last = ended
        first_cpu = last_cpu = time.process_time()
    run = Run(
        ttft_s=first - started,
        gen_s=last - first,
        total_s=ended - started,
        text="".join(parts),
        finish=None,
        ttft_cpu_s=first_cpu - started_cpu,
        gen_cpu_s=last_cpu - first_cpu,
        gen_llama_s=last_llama - first_llama,
    )
    return run, final


def _message_piece(finish: list[str | None]) -> Callable[[Any], str]:
    """Text of an ``AIMessageChunk``; records the finish reason when one carries it."""

    def piece(chunk: Any) -> str:
        finish[0] = chunk.response_metadata.get("finish_reason") or finish[0]
        return str(chunk.content)

    return piece


class Raw:
    name = "raw llama-cpp"

    def __init__(self, path: str, threads: int, max_tokens: int) -> None:
        import llama_cpp

        self.max_tokens = max_tokens
        self.llm = llama_cpp.Llama(
            model_path=path,
            n_ctx=N_CTX,
            n_batch=N_BATCH,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=0,
            seed=SEED,
            verbose=False,
        )

    def __call__(self) -> Run:
        self.llm.reset()  # evaluate the whole prompt, like seeded ChatLocal
        finish: list[str | None] = [None]

        def piece(chunk: Any) -> str:
            choice = chunk["choices"][0]
            finish[0] = choice.get("finish_reason") or finish[0]
            return choice["delta"].get("content") or ""

        run, _ = timed(
            lambda: self.llm.create_chat_completion(
                messages=[{"role": "user", "content": PROMPT}],
                stream=True,
                temperature=TEMPERATURE,
                top_k=TOP_K,
                top_p=TOP_P,
                repeat_penalty=REPEAT_PENALTY,
                max_tokens=self.max_tokens,
                seed=SEED,
            ),
            piece,
        )
        run.finish = finish[0]
        return run

    def count(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))


class Local:
    name = "ChatLocal"

    def __init__(self, path: str, threads: int, max_tokens: int) -> None:
        from local_llm_integrations.langchain import ChatLocal

        self.chat = ChatLocal(
            model=path,
            num_ctx=N_CTX,
            num_thread=threads,
            num_gpu=0,
            seed=SEED,
            temperature=TEMPERATURE,
            top_k=TOP_K,
            top_p=TOP_P,
            repeat_penalty=REPEAT_PENALTY,
            max_tokens=max_tokens,
            keep_alive=-1,
        )

    def __call__(self) -> Run:
        run, final = timed(lambda: self.chat.stream(PROMPT), _message_piece(finish := [None]))
        run.finish = finish[0]
        if final.usage_metadata:
            run.reported_tokens = final.usage_metadata["output_tokens"]
        return run


class Community:
    name = "ChatLlamaCpp"

    def __init__(
        self, path: str, threads: int, max_tokens: int, rope_defaults: bool = False
    ) -> None:
        # ChatLlamaCpp passes rope_freq_base=10000.0 and rope_freq_scale=1.0 to Llama
        # explicitly, overriding the model's own RoPE settings (Qwen2.5: base 1e6), so
        # its default output differs. 0.0 is llama-cpp-python's "from the model".
        rope = {} if rope_defaults else {"rope_freq_base": 0.0, "rope_freq_scale": 0.0}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from langchain_community.chat_models import ChatLlamaCpp

        self.chat = ChatLlamaCpp(
            model_path=path,
            n_ctx=N_CTX,
            n_batch=N_BATCH,  # its default is 8; same prompt batching as the others
            n_threads=threads,
            n_gpu_layers=0,
            seed=SEED,
            temperature=TEMPERATURE,
            top_k=TOP_K,
            top_p=TOP_P,
            repeat_penalty=REPEAT_PENALTY,
            max_tokens=max_tokens,
            verbose=False,
            model_kwargs={"n_threads_batch": threads},
            **rope,
        )

    def __call__(self) -> Run:
        self.chat.client.reset()  # evaluate the whole prompt, like seeded ChatLocal
        run, _ = timed(lambda: self.chat.stream(PROMPT), _message_piece(finish := [None]))
        run.finish = finish[0]
        return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="GGUF file (default: the demo model)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument(
        "--community-rope-defaults",
        action="store_true",
        help="keep ChatLlamaCpp's own rope_freq_base=10000/rope_freq_scale=1 (wrong for Qwen2.5)",
    )
    parser.add_argument("--json", help="write the figures here (for benchmarks/report.py)")
    args = parser.parse_args()
    path = model_path(args.model)

    print(f"model: {path}")
    print(
        f"threads: {args.threads} (n_threads = n_threads_batch)  n_ctx: {N_CTX}  n_batch: {N_BATCH}"
        f"  max tokens: {args.max_tokens}  rounds: {args.rounds}  CPUs: {os.cpu_count()}"
        f"  loadavg at start: {os.getloadavg()[0]:.2f}"
    )
    print(
        f"sampling: temperature {TEMPERATURE} (greedy), repeat_penalty {REPEAT_PENALTY},"
        f" seed {SEED}; every call evaluates the whole prompt"
    )
    print(f"prompt: {PROMPT!r}")
    print(
        "ChatLlamaCpp: "
        + (
            "its own RoPE defaults (rope_freq_base=10000, rope_freq_scale=1)"
            if args.community_rope_defaults
            else "rope_freq_base=0, rope_freq_scale=0 (from the model; its defaults"
            " 10000/1 override the model's RoPE)"
        )
        + ", n_batch=512 (its default: 8)"
    )

    instrument_llama()
    impls: list[Any] = []
    for cls in (Raw, Local, Community):
        started = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):
            if cls is Community:
                impl = cls(path, args.threads, args.max_tokens, args.community_rope_defaults)
            else:
                impl = cls(path, args.threads, args.max_tokens)
        built = time.perf_counter() - started
        warm = impl()  # ChatLocal loads the model here (lazily)
        print(
            f"warm-up {impl.name:<14} construct {built:6.2f} s, first call {warm.total_s:6.2f} s"
            " (excluded)"
        )
        impls.append(impl)
    raw = impls[0]

    runs: dict[str, list[Run]] = {impl.name: [] for impl in impls}
    for _ in range(args.rounds):
        for impl in impls:
            runs[impl.name].append(impl())
    print(f"loadavg at end: {os.getloadavg()[0]:.2f}")

    reference = runs[raw.name][0].text
    counts = {name: [raw.count(r.text) for r in series] for name, series in runs.items()}

    def rates(name: str) -> list[float]:
        return [
            (n - 1) / r.gen_s for n, r in zip(counts[name], runs[name], strict=True) if r.gen_s > 0
        ]

    def cpu_ms_per_token(name: str) -> list[float]:
        return [
            r.gen_cpu_s * 1000 / (n - 1)
            for n, r in zip(counts[name], runs[name], strict=True)
            if n > 1
        ]

    print()
    print(
        f"{'implementation':<14} {'tokens':>6} {'usage':>5} {'finish':>7} {'same text':>9}"
        f" {'total s':>7}"
    )
    for impl in impls:
        series = runs[impl.name]
        usage = {r.reported_tokens for r in series} - {None}
        print(
            f"{impl.name:<14} {'/'.join(map(str, sorted(set(counts[impl.name])))):>6}"
            f" {'/'.join(map(str, sorted(usage))) or '-':>5}"
            f" {'/'.join(sorted({str(r.finish) for r in series})):>7}"
            f" {'yes' if all(r.text == reference for r in series) else 'NO':>9}"
            f" {median([r.total_s for r in series]):>7.2f}"
        )
    print(
        "(tokens: streamed text re-tokenized with the raw model's tokenizer, used for every"
        " rate below; usage: ChatLocal's own count)"
    )

    def host_us_per_token(name: str) -> list[float]:
        return [
            (r.gen_s - r.gen_llama_s) * 1e6 / (n - 1)
            for n, r in zip(counts[name], runs[name], strict=True)
            if n > 1
        ]

    print()
    print(
        f"{'implementation':<14} {'gen tok/s':>9} {'(min..max)':>13} {'TTFT ms':>8}"
        f" {'(min..max)':>15} {'CPU ms/tok':>10} {'(min..max)':>11} {'TTFT CPU ms':>11}"
        f" {'host us/tok':>11} {'(min..max)':>11}"
    )
    for impl in impls:
        series = runs[impl.name]
        ttft = [r.ttft_s * 1000 for r in series]
        cpu = cpu_ms_per_token(impl.name)
        print(
            f"{impl.name:<14} {median(rates(impl.name)):>9.2f} {spread(rates(impl.name), 2):>13}"
            f" {median(ttft):>8.1f} {spread(ttft, 0):>15}"
            f" {median(cpu):>10.2f} {spread(cpu, 1):>11}"
            f" {median([r.ttft_cpu_s * 1000 for r in series]):>11.1f}"
            f" {median(host_us_per_token(impl.name)):>11.1f}"
            f" {spread(host_us_per_token(impl.name), 0):>11}"
        )
    print(
        "(medians over the rounds; gen tok/s = (tokens - 1) / (last - first text chunk);"
        " CPU = process CPU time, all threads;\n host = wall time per token outside"
        " llama.cpp decode + sampler calls)"
    )
    print()
    raw_rate = median(rates(raw.name))
    raw_ttft = median([r.ttft_s for r in runs[raw.name]])
    raw_cpu = median(cpu_ms_per_token(raw.name))
    raw_host = median(host_us_per_token(raw.name))
    summary = []
    for impl in impls[1:]:
        ratio = median(rates(impl.name)) / raw_rate
        summary.append(summary_row(
            f"{impl.name} generation", median(rates(impl.name)), raw_rate,
            "raw llama-cpp-python", goal=0.98 if impl is impls[1] else None,
        ))  # fmt: skip
        ttft_ratio = median([r.ttft_s for r in runs[impl.name]]) / raw_ttft
        cpu_ratio = raw_cpu / median(cpu_ms_per_token(impl.name))
        print(
            f"{impl.name}/raw: generation tokens/s ratio {ratio:.3f}"
            + ("  (target >= 0.98)" if impl is impls[1] else "")
            + f"; TTFT ratio {ttft_ratio:.3f}; CPU-per-token efficiency (raw/it) {cpu_ratio:.3f}"
        )
        host = median(host_us_per_token(impl.name))
        print(
            f"  host-side cost per token: {host:.1f} us vs raw {raw_host:.1f} us"
            f" ({host - raw_host:+.1f} us/token = {(host - raw_host) / 1e6 * raw_rate:+.2%}"
            " of the raw generation time per token)"
        )
    for impl in impls[1:]:
        per_round = [a / b for a, b in zip(rates(impl.name), rates(raw.name), strict=False)]
        print(
            f"{impl.name}/raw tokens/s per round (adjacent runs): "
            + " ".join(f"{x:.3f}" for x in per_round)
            + f"  median {median(per_round):.3f}"
        )
    texts_match = all(r.text == reference for series in runs.values() for r in series)
    print(f"all {sum(map(len, runs.values()))} texts identical: {'yes' if texts_match else 'NO'}")
    if not texts_match:
        for impl in impls:
            print(f"--- {impl.name}: {runs[impl.name][0].text!r}")
    write_json(args.json, "langchain_overhead", summary, texts_identical=texts_match)


if __name__ == "__main__":
    from local_llm_runtime.llama import repack

    with repack.like_the_runtime():  # raw baselines and peers load as the runtime does
        main()
