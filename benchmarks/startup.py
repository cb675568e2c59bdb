"""Start-up: import + construct, ``local-llm list`` / ``show``, and GGUF header parses per load.

Every figure comes from fresh interpreters (``python -c`` / ``python -m``), so
nothing is warm but the OS page cache. Rounds are interleaved (A, B, A, B, ...)
so a busy machine slows both sides alike; medians of ``--rounds`` (default 5).

* ``import`` rows: the seconds from the first import to the constructed object,
  measured inside the child (``time.perf_counter`` around the code). ``ChatLocal``
  is compared with two baselines: ``import langchain_core.language_models`` (a
  lazy package: it imports little) and the LangChain classes the adapters
  subclass (``BaseChatModel``, ``BaseLLM``, ``Embeddings``, the message and
  output types), subtracted across interpreters. The goal (<= 50 ms) is checked on
  the adapters' own cost measured in one interpreter: every module that importing
  ``ChatLocal`` brings in from LangChain, pydantic and the standard library is
  imported first, then ``ChatLocal`` is imported and constructed (the subtraction
  also counts LangChain modules missing from the baseline list and reads two noisy
  clocks). The child also reports whether ``llama_cpp`` / ``huggingface_hub`` were
  imported (goal: no).
* ``cli`` rows: wall seconds of ``python -m local_llm_runtime list``, ``show demo``
  and ``--help`` (goal: list <= 0.2 s, show <= 0.3 s), against a bare
  ``python -c pass``. The store (``LOCAL_LLM_HOME``) is a benchmark folder under
  ``~/.cache/local-llm-integrations/`` holding ``demo`` (the demo model, imported
  once: a 491 MB copy).
* ``load`` row: how many times the GGUF header is parsed, and the seconds spent
  parsing it, in one cold request (resolve, load, one token) of the demo model
  (goal: once).

Usage::

    python benchmarks/startup.py [MODEL_PATH] [--rounds 5] [--json PATH]

To measure another checkout (e.g. before a change), run this file with that
checkout first on ``PYTHONPATH`` (``PYTHONPATH=CHECKOUT:CHECKOUT/runtime``), or let
``benchmarks/report.py --before CHECKOUT`` do it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import median, model_path, spread, summary_row

LANGCHAIN_BASES = (
    "from langchain_core.language_models import BaseChatModel, BaseLLM\n"
    "from langchain_core.embeddings import Embeddings\n"
    "from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage\n"
    "from langchain_core.outputs import ChatGenerationChunk, ChatResult, GenerationChunk\n"
    "from langchain_core.callbacks import CallbackManagerForLLMRun\n"
    "from langchain_core.runnables import Runnable\n"
    "from langchain_core.tools import BaseTool\n"
    "from langchain_core.utils.function_calling import convert_to_openai_tool\n"
    "from langchain_core.output_parsers import JsonOutputParser\n"
    "from pydantic import BaseModel"
)
IMPORTS: dict[str, str] = {
    "langchain_core.language_models": "import langchain_core.language_models",
    "langchain bases": LANGCHAIN_BASES,
    "ChatLocal(model=...)": (
        "from local_llm_integrations import ChatLocal\nChatLocal(model='qwen2.5:0.5b')"
    ),
    "import local_llm_runtime": "import local_llm_runtime",
    "default_engine()": "import local_llm_runtime\nlocal_llm_runtime.backends.default_engine()",
}
_PROBE = """
import time
_t0, _c0 = time.perf_counter(), time.process_time()
{code}
_t1, _c1 = time.perf_counter(), time.process_time()
import json, sys
print(json.dumps({{"s": _t1 - _t0, "cpu_s": _c1 - _c0, "heavy": sorted(
    m for m in ("llama_cpp", "huggingface_hub", "jinja2", "numpy") if m in sys.modules)}}))
"""
_COUNT_PARSES = """
import json, sys, time
from local_llm_runtime.store import gguf_meta
calls = []
real = gguf_meta._parse
def counting(reader):
    started = time.perf_counter()
    try:
        return real(reader)
    finally:
        calls.append(time.perf_counter() - started)
gguf_meta._parse = counting
from local_llm_runtime.llama.engine import LlamaEngine
started = time.perf_counter()
LlamaEngine().generate(sys.argv[1], "Hi", options={"num_predict": 1}, keep_alive=0)
print(json.dumps({"parses": len(calls), "parse_s": sum(calls),
                  "request_s": time.perf_counter() - started}))
"""


_LIST_IMPORTED = """
import json, sys
before = set(sys.modules)
from local_llm_integrations import ChatLocal
ChatLocal(model='qwen2.5:0.5b')
print(json.dumps(sorted(m for m in set(sys.modules) - before
                        if not m.startswith(("local_llm_runtime", "local_llm_integrations")))))
"""
_OWN_COST = """
import importlib, json, time
for name in json.loads({modules!r}):
    try:
        importlib.import_module(name)
    except Exception:
        pass
_t0, _c0 = time.perf_counter(), time.process_time()
from local_llm_integrations import ChatLocal
ChatLocal(model='qwen2.5:0.5b')
print(json.dumps({{"s": time.perf_counter() - _t0, "cpu_s": time.process_time() - _c0}}))
"""


def summary_rows(figures: dict[str, Any]) -> list[dict[str, object]]:
    """The report's rows from this script's figures (goals of issue 12 as budgets)."""
    rows = [
        summary_row(
            "ChatLocal import+construct over LangChain bases", figures["chatlocal_over_langchain_ms"],
            50.0, "budget 50 ms (two interpreters subtracted)", unit="ms",
            higher_is_better=False,
        ),
    ]  # fmt: skip
    if "chatlocal_own_ms" in figures:
        rows.append(summary_row(
            "ChatLocal own modules (its LangChain imports done)", figures["chatlocal_own_ms"],
            50.0, "budget 50 ms", goal=1.0, unit="ms", higher_is_better=False,
        ))  # fmt: skip
    cli = figures["cli_s"]
    rows += [
        summary_row("local-llm list", cli["local-llm list"], 0.2, "budget 0.2 s", goal=1.0,
                    unit="s", higher_is_better=False),
        summary_row("local-llm show", cli["local-llm show demo"], 0.3, "budget 0.3 s",
                    goal=1.0, unit="s", higher_is_better=False),
        summary_row("GGUF header parses per cold load", float(figures["load"]["parses"]), 1.0,
                    "once", goal=1.0, unit="parses", higher_is_better=False),
    ]  # fmt: skip
    return rows


def _child(code: str, env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if done.returncode != 0:
        raise SystemExit(f"child failed:\n{code}\n{done.stderr[-2000:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _wall(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, check=False, capture_output=True, text=True, env=env, timeout=300)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    return elapsed


def _bench_env(model: str) -> dict[str, str]:
    """The environment of every child: a benchmark store that holds ``demo``."""
    home = Path.home() / ".cache" / "local-llm-integrations" / "bench-startup-home"
    env = dict(os.environ)
    env.update(
        LOCAL_LLM_HOME=str(home),
        HF_HOME=str(home / "hf"),
        HF_HUB_OFFLINE="1",
        OMP_WAIT_POLICY=env.get("OMP_WAIT_POLICY", "passive"),
    )
    env.pop("LOCAL_LLM_BASE_URL", None)
    cli = [sys.executable, "-m", "local_llm_runtime"]
    if (
        subprocess.run([*cli, "show", "demo"], check=False, capture_output=True, env=env).returncode
        != 0
    ):
        print(f"importing {model} as 'demo' into {home} (once) ...", flush=True)
        subprocess.run([*cli, "create", "demo", "--from", model], check=True, env=env)
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    model = model_path(args.model)
    env = _bench_env(model)
    imports: dict[str, list[float]] = {name: [] for name in IMPORTS}
    cpu: dict[str, list[float]] = {name: [] for name in IMPORTS}
    heavy: dict[str, list[str]] = {}
    cli_cmds = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "local-llm --help": [sys.executable, "-m", "local_llm_runtime", "--help"],
        "local-llm list": [sys.executable, "-m", "local_llm_runtime", "list"],
        "local-llm show demo": [sys.executable, "-m", "local_llm_runtime", "show", "demo"],
    }
    cli: dict[str, list[float]] = {name: [] for name in cli_cmds}
    modules = json.loads(
        subprocess.run(
            [sys.executable, "-c", _LIST_IMPORTED], check=True, capture_output=True, text=True,
            env=env,
        ).stdout.strip().splitlines()[-1]
    )  # fmt: skip
    own: list[float] = []
    for _ in range(args.rounds):
        own.append(float(_child(_OWN_COST.format(modules=json.dumps(modules)), env)["s"]))  # type: ignore[arg-type]
        for name, code in IMPORTS.items():
            result = _child(_PROBE.format(code=code), env)
            imports[name].append(float(result["s"]))  # type: ignore[arg-type]
            cpu[name].append(float(result["cpu_s"]))  # type: ignore[arg-type]
            heavy[name] = list(result["heavy"])  # type: ignore[call-overload]
        for name, argv in cli_cmds.items():
            cli[name].append(_wall(argv, env))
    done = subprocess.run(
        [sys.executable, "-c", _COUNT_PARSES, model],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if done.returncode != 0:
        raise SystemExit(f"cold request failed:\n{done.stderr[-2000:]}")
    load = json.loads(done.stdout.strip().splitlines()[-1])

    import local_llm_runtime  # only to say which checkout was measured

    print(f"checkout: {Path(local_llm_runtime.__file__).resolve().parents[2]}")
    print(f"model: {model}; rounds: {args.rounds} (fresh interpreters, interleaved)\n")
    print(f"{'import + construct':<34}{'median s':>9}  {'min..max':>13}  {'cpu s':>6}  imported")
    for name, values in imports.items():
        print(
            f"{name:<34}{median(values):>9.3f}  {spread(values, 3):>13}  "
            f"{median(cpu[name]):>6.3f}  {', '.join(heavy[name]) or '-'}"
        )
    base = median(imports["langchain bases"])
    lazy_base = median(imports["langchain_core.language_models"])
    chat = median(imports["ChatLocal(model=...)"])
    chat_cpu = median(cpu["ChatLocal(model=...)"]) - median(cpu["langchain bases"])
    print(
        f"\nChatLocal over the LangChain classes it subclasses: {1000 * (chat - base):+.0f} ms "
        f"wall, {1000 * chat_cpu:+.0f} ms CPU ({chat / base:.2f}x; goal <= +50 ms); over "
        f"'import langchain_core.language_models': {1000 * (chat - lazy_base):+.0f} ms\n"
        f"ChatLocal's own modules (the {len(modules)} modules it imports from LangChain, "
        f"pydantic and the standard library already imported): {1000 * median(own):+.0f} ms\n"
    )
    print(f"{'command (wall)':<34}{'median s':>9}  {'min..max':>13}")
    for name, values in cli.items():
        print(f"{name:<34}{median(values):>9.3f}  {spread(values, 3):>13}")
    print("goals: list <= 0.2 s, show <= 0.3 s\n")
    print(
        f"cold request of {Path(model).name}: GGUF header parsed {load['parses']} time(s), "
        f"{load['parse_s']:.3f} s parsing (request {load['request_s']:.2f} s); goal: once"
    )
    if args.json_path:
        figures = {
            "benchmark": "startup",
            "rounds": args.rounds,
            "import_s": {name: median(v) for name, v in imports.items()},
            "imported": heavy,
            "import_cpu_s": {name: median(v) for name, v in cpu.items()},
            "chatlocal_over_langchain_ms": 1000 * (chat - base),
            "chatlocal_over_langchain_cpu_ms": 1000 * chat_cpu,
            "chatlocal_own_ms": 1000 * median(own),
            "cli_s": {name: median(v) for name, v in cli.items()},
            "load": load,
        }
        figures["summary"] = summary_rows(figures)
        Path(args.json_path).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
