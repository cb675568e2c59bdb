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
* ``raw_cpu``: the same model on the CPU, for scale.

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
        print(f"raw llama-cpp-python n_gpu_layers=-1: {raw(model, -1):.1f} tok/s")
    elif name == "raw_cpu":
        print(f"raw llama-cpp-python CPU (default threads): {raw(model, 0):.1f} tok/s")
    elif name == "ours_auto":
        tps, ps = ours(model, {})
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
        eng.unload()


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
    for s in ["raw_gpu", "ours_auto", "ours_8", "ours_parallel", "raw_cpu"]:
        p = subprocess.run(
            [sys.executable, "-X", "faulthandler", __file__, s, str(model)],
            capture_output=True,
            text=True,
            timeout=150,
            check=False,
        )
        print(p.stdout.strip() or f"{s}: rc={p.returncode}\n" + p.stderr[-2500:])
