"""GPU check: the offload decision and generation speed on a GPU, ours vs raw llama-cpp-python.

Usage: ``python benchmarks/gpu_check.py`` (needs a CUDA/Metal build of llama-cpp-python;
``benchmarks/gpu_check.sh`` builds one offline and runs this). It writes a random-weight
f16 llama GGUF (2048 dims, 16 layers, 32k vocabulary, 1.6 GB: random weights decode at
the same speed as trained ones), then runs each step in its own process (a crash in one
cannot hide the others):

* ``raw_gpu``: ``llama_cpp.Llama(n_gpu_layers=-1)``, 256 greedy tokens (the ceiling);
* ``ours_auto``: ``Engine.chat`` with automatic offload (``ps()`` says what it decided);
* ``ours_8``: ``num_gpu=8`` (partial offload);
* ``ours_parallel``: ``LOCAL_LLM_NUM_PARALLEL=4``, 8 concurrent requests vs one alone;
* ``raw_cpu``: the same model on the CPU, for scale;
* ``tool_bench``/``tool_batched``: llama.cpp's own ``llama-bench`` (tg N, all layers on the
  GPU) and ``llama-batched-bench`` (B=1,4,8) from the same CUDA build, when
  ``LLAMA_TOOLS_DIR`` names their folder (``gpu_check.sh`` builds them); the end prints
  our tokens/s against theirs.

``GPU_CHECK_DEADLINE`` (epoch seconds) skips the steps that would run past it.

``SMALL=1`` shrinks everything for a dry run on a CPU-only machine.
"""

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.getcwd())
SMALL = bool(os.environ.get("SMALL"))
N = 16 if SMALL else 256
PROMPT = "the world is " * 100


def raw(model, n_gpu, threads=None):
    import llama_cpp

    llm = llama_cpp.Llama(
        str(model),
        n_gpu_layers=n_gpu,
        n_ctx=4096,
        verbose=bool(os.environ.get("VERBOSE")),
        **({"n_threads": threads} if threads else {}),
    )
    llm.create_completion(PROMPT, max_tokens=8, temperature=0)
    t = time.perf_counter()
    out = llm.create_completion(PROMPT, max_tokens=N, temperature=0)
    dt = time.perf_counter() - t
    return out["usage"]["completion_tokens"] / dt


def ours(model, opts):
    from local_llm_runtime.llama.engine import Engine

    eng = Engine()
    msgs = [{"role": "user", "content": PROMPT}]
    o = {"temperature": 0, "num_predict": N, **opts}
    eng.chat(str(model), msgs, options={**o, "num_predict": 8})
    r = eng.chat(str(model), msgs, options=o)
    ps = eng.ps()[0]
    eng.unload()
    return r.usage.completion_tokens / r.timings.generation_s, ps


def step(name, model):
    os.environ["LOCAL_LLM_HOME"] = str(Path(model).parent / "home")
    if name == "raw_gpu":
        tps = raw(model, -1)
        print(f"raw llama-cpp-python n_gpu_layers=-1: {tps:.1f} tok/s\nRESULT raw_gpu {tps}")
    elif name == "raw_cpu":
        print(f"raw llama-cpp-python CPU (default threads): {raw(model, 0):.1f} tok/s")
    elif name == "ours_auto":
        tps, ps = ours(model, {})
        print(f"RESULT ours_auto {tps}")
        print(
            f"ours auto offload: {tps:.1f} tok/s; gpu_layers={ps.gpu_layers}; offload={ps.offload!r}"
        )
    elif name == "ours_8":
        tps, ps = ours(model, {"num_gpu": 8})
        print(
            f"ours num_gpu=8: {tps:.1f} tok/s; gpu_layers={ps.gpu_layers}; offload={ps.offload!r}"
        )
    elif name == "ours_parallel":
        os.environ["LOCAL_LLM_NUM_PARALLEL"] = "4"
        from local_llm_runtime.llama.engine import Engine

        eng = Engine()
        eng.chat(str(model), [{"role": "user", "content": "hi"}], options={"num_predict": 4})
        res = []

        def one(i):
            r = eng.chat(
                str(model),
                [{"role": "user", "content": f"hello {i} " * 20}],
                options={"temperature": 0, "num_predict": 128},
            )
            res.append(r.usage.completion_tokens)

        t = time.perf_counter()
        ths = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        [x.start() for x in ths]
        [x.join() for x in ths]
        dt = time.perf_counter() - t
        t = time.perf_counter()
        one(99)
        dt1 = time.perf_counter() - t
        print(
            f"ours NUM_PARALLEL=4, 8 requests x 128 tokens: {sum(res[:8]) / dt:.1f} tok/s aggregate vs one alone {res[-1] / dt1:.1f} tok/s ({sum(res[:8]) / dt / (res[-1] / dt1):.2f}x); parallel={eng.ps()[0].parallel}"
        )
        print(f"RESULT ours_parallel {sum(res[:8]) / dt}\nRESULT ours_single {res[-1] / dt1}")
        eng.unload()
    elif name in ("tool_bench", "tool_batched"):
        tool_step(name, model)


def tool_step(name, model):
    """Run llama.cpp's own tool (all layers on the GPU, flash attention off as in our build)."""
    import json

    tools = Path(os.environ["LLAMA_TOOLS_DIR"])
    if name == "tool_bench":
        cmd = [
            tools / "llama-bench",
            "-m",
            model,
            "-ngl",
            "99",
            "-fa",
            "0",
            "-p",
            "0",
            "-n",
            str(N),
            "-d",
            str(len(PROMPT.split()) * 2),
            "-r",
            "3",
            "-o",
            "json",
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
        tps = json.loads(out.stdout)[0]["avg_ts"]
        print(f"llama-bench tg{N} (all layers on the GPU): {tps:.1f} tok/s\nRESULT tool_tg {tps}")
    else:
        cmd = [
            tools / "llama-batched-bench",
            "-m",
            model,
            "-ngl",
            "99",
            "-fa",
            "off",
            "-c",
            "8192",
            "-npp",
            "128",
            "-ntg",
            "128",
            "-npl",
            "1,4,8",
            "--output-format",
            "jsonl",
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
        for line in (out.stdout + out.stderr).splitlines():
            if line.startswith("{") and '"speed_tg"' in line:
                row = json.loads(line)
                print(
                    f"llama-batched-bench B={row['pl']}: S_TG {row['speed_tg']:.1f} tok/s, "
                    f"S {row['speed']:.1f} tok/s\nRESULT tool_batched_{row['pl']} {row['speed_tg']}"
                )


def compare(results):
    """Our tokens/s against llama.cpp's own tools from the same build."""
    pairs = [
        ("generation, ours auto offload / llama-bench tg", "ours_auto", "tool_tg"),
        ("generation, raw llama-cpp-python / llama-bench tg", "raw_gpu", "tool_tg"),
        (
            "batched, ours NUM_PARALLEL=4 x 8 requests / batched-bench S_TG B=4",
            "ours_parallel",
            "tool_batched_4",
        ),
        ("one request alone (ours) / batched-bench S_TG B=1", "ours_single", "tool_batched_1"),
    ]
    print("\n# ours vs llama.cpp's tools (same CUDA build)")
    for label, ours_key, ref_key in pairs:
        if ours_key in results and ref_key in results:
            ratio = results[ours_key] / results[ref_key]
            print(f"{label}: {results[ours_key]:.1f} / {results[ref_key]:.1f} = {ratio:.2f}")
        else:
            print(f"{label}: not measured")


if __name__ == "__main__":
    if len(sys.argv) > 2:
        step(sys.argv[1], sys.argv[2])
        sys.exit(0)
    import llama_cpp

    from tests.support.tiny_gguf import write_tiny_gguf

    print(
        "llama_cpp", llama_cpp.__version__, "gpu offload:", llama_cpp.llama_supports_gpu_offload()
    )
    d = Path(tempfile.mkdtemp())
    t = time.time()
    model = write_tiny_gguf(
        d / "big.gguf",
        n_embd=64 if SMALL else 2048,
        n_layer=2 if SMALL else 16,
        n_ctx=4096,
        f16=True,
        extra_words=32000,
    )
    print(
        f"wrote {model.stat().st_size / 1e9:.2f} GB random-weight f16 llama (32k vocab) in {time.time() - t:.1f}s"
    )
    steps = ["raw_gpu", "ours_auto", "ours_8", "ours_parallel"]
    if os.environ.get("LLAMA_TOOLS_DIR"):
        steps += ["tool_bench", "tool_batched"]
    steps.append("raw_cpu")
    deadline = float(os.environ.get("GPU_CHECK_DEADLINE") or time.time() + 3600)
    results = {}
    started = time.time()
    for s in steps:
        budget = min(150.0, deadline - time.time())
        if budget < 20:
            print(f"{s}: skipped, the budget is spent ({time.time() - started:.0f} s in)")
            continue
        t = time.time()
        try:
            p = subprocess.run(
                [sys.executable, "-X", "faulthandler", __file__, s, str(model)],
                capture_output=True,
                text=True,
                timeout=budget,
                check=False,
            )
        except subprocess.TimeoutExpired:
            print(f"{s}: timed out after {budget:.0f} s")
            continue
        lines = p.stdout.strip().splitlines()
        for line in lines:
            if line.startswith("RESULT "):
                _, key, value = line.split()
                results[key] = float(value)
        shown = "\n".join(x for x in lines if not x.startswith("RESULT "))
        print(shown or f"{s}: rc={p.returncode}\n" + p.stderr[-2500:])
        print(f"  ({s}: {time.time() - t:.0f} s)")
    compare(results)
