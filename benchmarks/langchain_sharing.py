"""One loaded model behind many LangChain objects: loads, resident memory, construction time.

Usage: python benchmarks/langchain_sharing.py [MODEL_PATH]      (default: the demo model)

Three measurements, each in its own fresh subprocess so they cannot pollute each other:

* ``chatlocal``: 10 ``ChatLocal(model=path)`` + 1 ``LocalLLM(model=path)`` (same load
  options), each invoked once (max_tokens=8). The pool's loader is wrapped with a
  counter before the first call; ``local_llm_runtime.ps()`` lists what is loaded.
* ``raw``: one ``llama_cpp.Llama(model_path=path, n_ctx=4096, verbose=False)`` and one
  chat completion (max_tokens=8) -- the memory floor for this file.
* ``community``: 5 langchain-community ``ChatLlamaCpp(model_path=path, n_ctx=4096,
  verbose=False)`` kept alive (each loads its own copy of the model).

RSS is read from ``/proc/self/statm`` at the start of each subprocess (before any
import beyond the standard library), after the imports and after the work. Figures are
printed, never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, model_path, rss_mib

PROMPT = "Say hi."
N_CHAT = 10
N_COMMUNITY = 5


def part_chatlocal(path: str) -> dict[str, Any]:
    rss_start = rss_mib()
    import local_llm_runtime
    from local_llm_integrations.langchain import ChatLocal, LocalLLM
    from local_llm_runtime.llama.engine import default_engine

    rss_imports = rss_mib()
    pool = default_engine().pool
    loader = pool._loader
    loads: list[str] = []

    def counting_loader(model: Any, options: Any, *args: Any) -> Any:
        loads.append(f"{Path(model.path).name} {options}")
        return loader(model, options, *args)

    pool._loader = counting_loader

    construct_s: list[float] = []
    models: list[Any] = []
    for _ in range(N_CHAT):
        started = time.perf_counter()
        models.append(ChatLocal(model=path, temperature=0, max_tokens=8))
        construct_s.append(time.perf_counter() - started)
    started = time.perf_counter()
    models.append(LocalLLM(model=path, temperature=0, max_tokens=8))
    llm_construct_s = time.perf_counter() - started
    rss_constructed = rss_mib()
    loads_after_construct = len(loads)

    answers = []
    call_s = []
    for model in models:
        started = time.perf_counter()
        reply = model.invoke(PROMPT)
        call_s.append(time.perf_counter() - started)
        answers.append(reply if isinstance(reply, str) else str(reply.content))
    rss_after = rss_mib()
    running = local_llm_runtime.ps()
    return {
        "rss_start": rss_start,
        "rss_imports": rss_imports,
        "rss_constructed": rss_constructed,
        "rss_after": rss_after,
        "loads": loads,
        "loads_after_construct": loads_after_construct,
        "construct_s": construct_s,
        "llm_construct_s": llm_construct_s,
        "call_s": call_s,
        "answers": answers,
        "ps": [
            {
                "name": r.name,
                "size_mib": r.size / 2**20,
                "num_ctx": r.num_ctx,
                "gpu_layers": r.gpu_layers,
                "embedding": r.embedding,
                "active_requests": r.active_requests,
                "expires_at": r.expires_at.isoformat() if r.expires_at else None,
            }
            for r in running
        ],
    }


def part_raw(path: str) -> dict[str, Any]:
    rss_start = rss_mib()
    import llama_cpp

    rss_imports = rss_mib()
    started = time.perf_counter()
    llm = llama_cpp.Llama(model_path=path, n_ctx=4096, verbose=False)
    load_s = time.perf_counter() - started
    rss_loaded = rss_mib()
    reply = llm.create_chat_completion(
        messages=[{"role": "user", "content": PROMPT}], temperature=0, max_tokens=8
    )
    rss_after = rss_mib()
    return {
        "rss_start": rss_start,
        "rss_imports": rss_imports,
        "rss_loaded": rss_loaded,
        "rss_after": rss_after,
        "load_s": load_s,
        "answer": reply["choices"][0]["message"]["content"],
    }


def part_community(path: str) -> dict[str, Any]:
    rss_start = rss_mib()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from langchain_community.chat_models import ChatLlamaCpp

    rss_imports = rss_mib()
    construct_s: list[float] = []
    rss_each: list[float] = []
    kept = []
    for _ in range(N_COMMUNITY):
        started = time.perf_counter()
        kept.append(ChatLlamaCpp(model_path=path, n_ctx=4096, verbose=False))
        construct_s.append(time.perf_counter() - started)
        rss_each.append(rss_mib())
    return {
        "rss_start": rss_start,
        "rss_imports": rss_imports,
        "rss_each": rss_each,
        "construct_s": construct_s,
        "instances": len(kept),
    }


PARTS = {"chatlocal": part_chatlocal, "raw": part_raw, "community": part_community}


def run_part(name: str, path: str) -> dict[str, Any]:
    """Run one part in a fresh interpreter; its last stdout line is the JSON result."""
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--part", name, path],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"part {name!r} failed with status {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--part"]:
        print(json.dumps(PARTS[args[1]](args[2])))
        return
    path = model_path(args[0] if args else None)
    print(f"model: {path} ({Path(path).stat().st_size / 2**20:.1f} MiB on disk)")

    local = run_part("chatlocal", path)
    raw = run_part("raw", path)
    community = run_part("community", path)

    print()
    print(f"ChatLocal x{N_CHAT} + LocalLLM x1 in one process, one invoke each (max_tokens=8):")
    print(
        f"  model loads counted at the pool's loader: {len(local['loads'])}"
        f" (after construction: {local['loads_after_construct']})"
    )
    for load in local["loads"]:
        print(f"    load: {load}")
    print(
        f"  local_llm_runtime.ps(): {len(local['ps'])} entr{'y' if len(local['ps']) == 1 else 'ies'}"
    )
    for entry in local["ps"]:
        print(
            f"    {entry['name']}  size {entry['size_mib']:.1f} MiB  num_ctx {entry['num_ctx']}"
            f"  gpu_layers {entry['gpu_layers']}  embedding {entry['embedding']}"
            f"  active {entry['active_requests']}  expires {entry['expires_at']}"
        )
    calls = local["call_s"]
    print(
        f"  invoke times: first {calls[0]:.2f} s (includes the load), others median"
        f" {median(calls[1:]):.2f} s"
    )
    print(f"  answers: {sorted(set(local['answers']))}")

    print()
    print(
        f"{'process (fresh each)':<34} {'start':>8} {'imports':>8} {'work':>8} {'work-imports':>13}"
    )
    rows = [
        (
            f"ChatLocal x{N_CHAT} + LocalLLM, after calls",
            local["rss_start"],
            local["rss_imports"],
            local["rss_after"],
        ),
        (
            "raw Llama x1, after 1 completion",
            raw["rss_start"],
            raw["rss_imports"],
            raw["rss_after"],
        ),
    ]
    rows += [
        (
            f"ChatLlamaCpp x{i + 1} (constructed)",
            community["rss_start"],
            community["rss_imports"],
            rss,
        )
        for i, rss in enumerate(community["rss_each"])
    ]
    for label, start, imports, work in rows:
        print(f"{label:<34} {start:>8.1f} {imports:>8.1f} {work:>8.1f} {work - imports:>13.1f}")
    print("(RSS in MiB; 'work-imports' = memory added by the model(s) and the calls)")
    print(
        f"  ChatLocal process after constructing 11 objects, before any call: "
        f"{local['rss_constructed']:.1f} MiB (+{local['rss_constructed'] - local['rss_imports']:.1f})"
    )
    print(f"  raw: after load {raw['rss_loaded']:.1f} MiB, load {raw['load_s']:.2f} s")

    total_ratio = local["rss_after"] / raw["rss_after"]
    model_ratio = (local["rss_after"] - local["rss_imports"]) / (
        raw["rss_after"] - raw["rss_imports"]
    )
    print()
    print(
        f"RSS ratio, 11 shared objects / 1 raw Llama: whole process {total_ratio:.3f}x;"
        f" model + calls (work-imports) {model_ratio:.3f}x  (target <= 1.1x)"
    )
    print(
        f"  import footprint: langchain + local_llm_integrations"
        f" {local['rss_imports'] - local['rss_start']:.1f} MiB vs llama_cpp alone"
        f" {raw['rss_imports'] - raw['rss_start']:.1f} MiB"
    )
    each = community["rss_each"]
    print(
        "ChatLlamaCpp: RSS grows per instance: "
        + ", ".join(f"x{i + 1} +{rss - community['rss_imports']:.0f}" for i, rss in enumerate(each))
        + " MiB over its imports; x3 / raw x1 (work-imports):"
        f" {(each[2] - community['rss_imports']) / (raw['rss_after'] - raw['rss_imports']):.2f}x"
    )

    print()
    chat_ms = [s * 1000 for s in local["construct_s"]]
    comm_ms = [s * 1000 for s in community["construct_s"]]
    print(
        f"construction: ChatLocal median {median(chat_ms):.3f} ms over {len(chat_ms)}"
        f" (first {chat_ms[0]:.3f} ms; no I/O, no load); LocalLLM {local['llm_construct_s'] * 1000:.3f} ms"
    )
    print(
        f"construction: ChatLlamaCpp median {median(comm_ms):.1f} ms over {len(comm_ms)}"
        f" ({', '.join(f'{x:.0f}' for x in comm_ms)} ms; loads the model each time)"
    )
    print(f"ratio ChatLlamaCpp/ChatLocal construction: {median(comm_ms) / median(chat_ms):,.0f}x")


if __name__ == "__main__":
    from local_llm_runtime.llama import repack

    with repack.like_the_runtime():  # raw baselines and peers load as the runtime does
        main()
