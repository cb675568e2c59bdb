"""Issue 13's features as a demanding new user meets them: Modelfiles from Ollama's docs and
tutorials and broken ones, the ``show --modelfile`` / ``create -f`` round trip for every kind
of model through the CLI and the server, LoRA adapters and the store, ModelScope pulls that
race, and the compute thread under many callers.

Each table row is an input a user can write; the rule it checks is stated once per test.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from local_llm_runtime.cli.main import main
from local_llm_runtime.errors import RequestTimeoutError
from local_llm_runtime.llama.engine import Engine
from local_llm_runtime.store.library import ModelLibrary
from local_llm_runtime.store.modelfile import JINJA_CHATML_EXAMPLE, parse_modelfile
from local_llm_runtime.testing import FakeEngine
from local_llm_runtime.types import FinalChunk
from tests.support.server import make_app
from tests.support.tiny_gguf import write_tiny_gguf, write_tiny_lora_gguf

# ---- helpers -----------------------------------------------------------------------------


def _store_files(home: Path) -> dict[str, bytes]:
    """Every file under the store (name -> bytes): 'unchanged' means equal."""
    if not home.exists():
        return {}
    return {str(p.relative_to(home)): p.read_bytes() for p in home.rglob("*") if p.is_file()}


def _create_f(path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(["create", name, "-f", str(path)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture
def files(tmp_path: Path, tiny_gguf: Path, tiny_lora_gguf: Path) -> dict[str, Path]:
    """The files a Modelfile can name: a model, an adapter, a truncated adapter, an adapter
    for another architecture, a text file named .gguf."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    data = tiny_lora_gguf.read_bytes()
    (folder / "truncated-lora.gguf").write_bytes(data[: len(data) // 2])
    (folder / "text.gguf").write_text("not a gguf\n", "utf-8")
    return {
        "model": tiny_gguf,
        "lora": tiny_lora_gguf,
        "truncated": folder / "truncated-lora.gguf",
        "qwen_lora": write_tiny_lora_gguf(folder / "qwen-lora.gguf", architecture="qwen2"),
        "text": folder / "text.gguf",
        "wide": write_tiny_gguf(folder / "wide.gguf", n_embd=32),
    }


# ---- Modelfiles: bad inputs are one-line errors and leave the store as it was ------------------

BAD_MODELFILES: list[tuple[str, str, str]] = [
    # (id, Modelfile with {model}/{lora}/... placeholders, what the error says)
    ("adapter-twice", "FROM {model}\nADAPTER {lora}\nADAPTER {lora}\n", "listed twice"),
    ("no-from", "SYSTEM hi\n", "no FROM"),
    ("empty", "", "no FROM"),
    ("only-comments", "# FROM {model}\n", "no FROM"),
    ("from-missing-file", "FROM ./nope.gguf\n", "No such model file"),
    ("from-not-gguf", "FROM {text}\n", "not a valid GGUF"),
    ("from-directory", "FROM {folder}\n", ".gguf"),
    ("from-missing-name", "FROM no-such-model-here\n", "not found"),
    ("from-hf-offline", "FROM hf.co/org/repo-GGUF:Q4_K_M\n", "Could not reach"),
    ("from-modelscope-offline", "FROM modelscope.cn/org/repo-GGUF\n", "Could not reach"),
    ("two-froms", "FROM {model}\nFROM {model}\n", "line 2"),
    ("unknown-instruction", "FROM {model}\nEMBED x\n", "line 2"),
    ("ollama-only", "FROM {model}\nREQUIRES 0.5\n", "not supported"),
    ("param-wrong-type", "FROM {model}\nPARAMETER temperature hot\n", "line 2"),
    ("param-unknown", "FROM {model}\nPARAMETER foo 1\n", "Unknown option"),
    ("param-no-value", "FROM {model}\nPARAMETER temperature\n", "line 2"),
    ("param-out-of-range", "FROM {model}\nPARAMETER num_ctx 0\n", "line 2"),
    ("param-nan", "FROM {model}\nPARAMETER top_p nan\n", "line 2"),
    ("param-empty-stop", 'FROM {model}\nPARAMETER stop ""\n', "line 2"),
    ("message-bad-role", "FROM {model}\nMESSAGE tool hi\n", "MESSAGE role"),
    ("message-no-text", "FROM {model}\nMESSAGE user\n", "line 2"),
    ("unclosed-triple", 'FROM {model}\nSYSTEM """abc\n', "never closed"),
    ("go-template", 'FROM {model}\nTEMPLATE """{{{{ .Prompt }}}}"""\n', "Go template"),
    (
        "go-mixed-with-jinja",
        'FROM {model}\nTEMPLATE """{{% for m in messages %}}{{{{ .Content }}}}{{% endfor %}}"""\n',
        "Go template",
    ),
    ("jinja-raises", 'FROM {model}\nTEMPLATE """{{{{ raise_exception(\'no\') }}}}"""\n', "no"),
    (
        "jinja-huge-loop",
        'FROM {model}\nTEMPLATE """{{% for i in range(10**9) %}}x{{% endfor %}}"""\n',
        "TEMPLATE",
    ),
    (
        "jinja-recursion",
        'FROM {model}\nTEMPLATE """{{% macro f(n) %}}{{{{ f(n) }}}}{{% endmacro %}}{{{{ f(0) }}}}"""\n',
        "TEMPLATE",
    ),
    ("jinja-syntax", 'FROM {model}\nTEMPLATE """{{% for %}}"""\n', "line 2"),
    ("template-empty", 'FROM {model}\nTEMPLATE ""\n', "empty"),
    ("adapter-missing", "FROM {model}\nADAPTER ./nope.gguf\n", "No such adapter"),
    ("adapter-is-a-model", "FROM {model}\nADAPTER {model}\n", "not a LoRA adapter"),
    ("adapter-truncated", "FROM {model}\nADAPTER {truncated}\n", "not a valid GGUF"),
    ("adapter-other-arch", "FROM {model}\nADAPTER {qwen_lora}\n", "qwen2"),
    ("adapter-other-shapes", "FROM {wide}\nADAPTER {lora}\n", "another model"),
    ("adapter-text", "FROM {model}\nADAPTER {text}\n", "not a valid GGUF"),
    ("adapter-second-bad", "FROM {model}\nADAPTER {lora}\nADAPTER {truncated}\n", "GGUF"),
    ("adapter-missing-hf-from", "FROM hf.co/org/repo-GGUF\nADAPTER ./nope.gguf\n", "No such"),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [row[1:] for row in BAD_MODELFILES],
    ids=[row[0] for row in BAD_MODELFILES],
)
def test_a_bad_modelfile_is_a_one_line_error_and_leaves_the_store_unchanged(
    text: str,
    expected: str,
    files: dict[str, Path],
    isolated_env: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.chdir(tmp_path)
    assert main(["create", "keep", "--from", str(files["model"])]) == 0
    home = isolated_env["home"]
    before = _store_files(home)
    path = tmp_path / "Modelfile"
    path.write_text(text.format(folder=tmp_path, **files), "utf-8")
    rc, out, err = _create_f(path, "bad", capsys)
    assert rc == 1, out
    assert "Traceback" not in err and err.startswith("Error: ") and err.count("\n") == 1, err
    assert expected in err
    assert _store_files(home) == before  # no record, no orphan blob


# ---- Modelfiles people copy: accepted, and what they bind ------------------------------------

GOOD_MODELFILES: list[tuple[str, str, dict[str, object]]] = [
    (
        "ollama-docs-mario",  # docs/modelfile.md, with FROM our model
        "FROM {model}\n"
        "# sets the temperature to 1 [higher is more creative, lower is more coherent]\n"
        "PARAMETER temperature 1\n"
        "# sets the context window size to 4096, this controls how many tokens the LLM can "
        "use as context to generate the next token\n"
        "PARAMETER num_ctx 4096\n\n"
        "# sets a custom system message to specify the behavior of the chat assistant\n"
        "SYSTEM You are Mario from super mario bros, acting as an assistant.\n",
        {
            "system": "You are Mario from super mario bros, acting as an assistant.",
            "parameters": {"temperature": 1.0, "num_ctx": 4096},
        },
    ),
    (
        "ollama-docs-messages",
        "FROM {model}\nMESSAGE user Is Toronto in Canada?\nMESSAGE assistant yes\n"
        "MESSAGE user Is Sacramento in Canada?\nMESSAGE assistant no\n",
        {"messages": 4},
    ),
    (
        "ollama-show-stops",  # what `ollama show --modelfile` prints for llama3.2
        'FROM {model}\nPARAMETER stop "<|start_header_id|>"\nPARAMETER stop "<|end_header_id|>"\n'
        'PARAMETER stop "<|eot_id|>"\nPARAMETER stop <|reserved_special_token\n',
        {
            "parameters": {
                "stop": [
                    "<|start_header_id|>",
                    "<|end_header_id|>",
                    "<|eot_id|>",
                    "<|reserved_special_token",
                ]
            }
        },
    ),
    (
        "windows-line-endings",
        'FROM {model}\r\nPARAMETER temperature 0.5\r\nSYSTEM """line one\r\nline two"""\r\n',
        {"system": "line one\nline two", "parameters": {"temperature": 0.5}},
    ),
    (
        "tabs-and-lowercase",
        "from\t{model}\nparameter\ttop_k\t20\nsystem\tbe brief\n",
        {"system": "be brief", "parameters": {"top_k": 20}},
    ),
    (
        "unicode-and-bom",
        "\ufeffFROM {model}\nSYSTEM 你是一个乐于助人的助手。🌍\nMESSAGE user ¿Qué tal?\n",
        {"system": "你是一个乐于助人的助手。🌍", "messages": 1},
    ),
    ("empty-system", 'FROM {model}\nSYSTEM ""\n', {"system": ""}),
    ("quotes-inside-triple", 'FROM {model}\nSYSTEM """say "hi" """\n', {"system": 'say "hi" '}),
    ("hash-inside-value", "FROM {model}\nSYSTEM use # for comments\n", {}),
    ("ignored-ollama-params", "FROM {model}\nPARAMETER use_mmap false\nPARAMETER num_keep 4\n", {}),
    ("huge-system", "FROM {model}\nSYSTEM " + "x" * 2_000_000 + "\n", {}),
    (
        "jinja-template",
        'FROM {model}\nTEMPLATE """'
        + JINJA_CHATML_EXAMPLE.replace("{", "{{").replace("}", "}}")
        + '"""\n',
        {"template": JINJA_CHATML_EXAMPLE},
    ),
    ("license-twice", "FROM {model}\nLICENSE MIT\nLICENSE '''Apache'''\n", {}),
]


@pytest.mark.parametrize(
    ("text", "bound"), [row[1:] for row in GOOD_MODELFILES], ids=[row[0] for row in GOOD_MODELFILES]
)
def test_modelfiles_people_copy_are_accepted_and_read_back_the_same(
    text: str,
    bound: dict[str, object],
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    client_for_store: Callable[[], TestClient],
) -> None:
    path = tmp_path / "Modelfile"
    path.write_bytes(text.format(**files).encode("utf-8"))
    rc, _, err = _create_f(path, "made", capsys)
    assert rc == 0, err
    lib = ModelLibrary()
    first = lib.store.get("made:latest")
    assert first is not None
    for key, value in bound.items():
        got = getattr(first, key)
        assert (len(got) if isinstance(value, int) and not isinstance(got, int) else got) == value
    _assert_round_trips("made", tmp_path, capsys, client_for_store)


def _assert_round_trips(
    name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    client_for_store: Callable[[], TestClient],
) -> None:
    """``show --modelfile`` (CLI) and ``/api/show``'s modelfile both create the same model."""
    lib = ModelLibrary()
    shown = lib.show(name)
    first = lib.store.get(name if ":" in name else f"{name}:latest")
    if first is None:  # a path: what create makes of it
        first = lib.create("first", name)
    capsys.readouterr()
    assert main(["show", name, "--modelfile"]) == 0
    cli_text = capsys.readouterr().out
    texts = [cli_text]
    if not name.endswith(".gguf"):  # over HTTP a model is named, never a path
        answer = client_for_store().post("/api/show", json={"model": name})
        assert answer.status_code == 200, answer.text
        texts.append(answer.json()["modelfile"])
    assert shown["name"]
    ignore = {"name", "modified_at", "origin"}
    for index, text in enumerate(texts):
        path = tmp_path / f"Modelfile.{index}"
        path.write_text(text, "utf-8")
        rc, _, err = _create_f(path, f"again-{index}", capsys)
        assert rc == 0, (index, err, text[:500])
        again = lib.store.get(f"again-{index}:latest")
        assert again is not None
        assert again.model_dump(exclude=ignore) == first.model_dump(exclude=ignore), index


@pytest.fixture
def client_for_store() -> Callable[[], TestClient]:
    """A server over the current store (the model routes read it; the engine is fake)."""
    clients: list[TestClient] = []

    def make() -> TestClient:
        if not clients:
            client = TestClient(
                make_app(FakeEngine(responses=["x"])), raise_server_exceptions=False
            )
            client.__enter__()
            clients.append(client)
        return clients[0]

    yield make  # type: ignore[misc]
    for client in clients:
        client.__exit__(None, None, None)


@pytest.mark.parametrize(
    "kind", ["file-import", "stored-name", "adapter", "messages", "all", "modelscope", "path"]
)
def test_show_modelfile_round_trips_every_kind_of_model(
    kind: str,
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    client_for_store: Callable[[], TestClient],
) -> None:
    model, lora = files["model"], files["lora"]
    lib = ModelLibrary()
    name = "m:latest"
    if kind == "file-import":
        lib.create("m", str(model), parameters={"seed": 3})
    elif kind == "stored-name":
        lib.create("base", str(model))
        lib.create("m", "base", system="hi")
    elif kind == "adapter":
        lib.create("m", str(model), adapters=[lora])
    elif kind == "messages":
        lib.create_from_modelfile("m", f"FROM {model}\nMESSAGE user q\nMESSAGE assistant a\n")
    elif kind == "modelscope":  # pulled, then the fake site goes away: FROM its name
        from tests.support.fake_modelscope import FakeModelScope

        with FakeModelScope() as ms, pytest.MonkeyPatch.context() as patch:
            patch.setenv("MODELSCOPE_DOMAIN", ms.url)
            ms.add_repo("Org/Tiny-GGUF", {"tiny-q4_k_m.gguf": model})
            lib = ModelLibrary()
            lib.pull("modelscope.cn/Org/Tiny-GGUF")
            lib.create("m", "modelscope.cn/Org/Tiny-GGUF:Q4_K_M", adapters=[lora], system="s")
    elif kind == "path":  # a plain .gguf path: FROM the path
        name = str(model)
    else:
        lib.create_from_modelfile(
            "m",
            f'FROM {model}\nSYSTEM """a\r\n"b"\r\rc\n"""\nPARAMETER stop "<|im_end|>"\n'
            f'TEMPLATE """{JINJA_CHATML_EXAMPLE}"""\nMESSAGE user q\nADAPTER {lora}\n'
            "LICENSE '''MIT \"\"\"\nline'''\n",
        )
    _assert_round_trips(name, tmp_path, capsys, client_for_store)


def test_server_show_modelfile_names_the_adapters_and_a_from_create_accepts(
    files: dict[str, Path], client_for_store: Callable[[], TestClient]
) -> None:
    """Before: ``/api/show``'s modelfile (a second renderer beside ``show --modelfile``) left
    out ADAPTER: a model created from it lost its adapters."""
    lib = ModelLibrary()
    record = lib.create("imp", str(files["model"]), adapters=[files["lora"]])
    client = client_for_store()
    text = client.post("/api/show", json={"model": "imp"}).json()["modelfile"]
    parsed = parse_modelfile(text)
    assert parsed.from_ == "imp:latest"
    assert [Path(a).name for a in parsed.adapters] == [f"sha256-{record.adapters[0].sha256}"]
    made = client.post("/api/create", json={"model": "imp2", "modelfile": text, "stream": False})
    assert made.status_code == 200, made.text
    again = lib.store.get("imp2:latest")
    assert again is not None and again.adapters == record.adapters


NEWLINE_TEXTS: list[tuple[str, str, str]] = [
    # (id, Modelfile, the SYSTEM every entry point binds)
    ("unix", 'FROM {model}\nSYSTEM """a\nb"""\n', "a\nb"),
    ("windows", 'FROM {model}\r\nSYSTEM """a\r\nb"""\r\n', "a\nb"),
    ("windows-no-final-newline", 'FROM {model}\r\nSYSTEM """a\r\nb"""', "a\nb"),
    ("mixed: verbatim", 'FROM {model}\nSYSTEM """a\r\nb"""\n', "a\r\nb"),
    ("lone-cr-in-value", 'FROM {model}\nSYSTEM """a\rb"""\n', "a\rb"),
]


@pytest.mark.parametrize(
    ("text", "system"), [row[1:] for row in NEWLINE_TEXTS], ids=[row[0] for row in NEWLINE_TEXTS]
)
def test_line_endings_bind_the_same_through_the_cli_the_api_and_the_server(
    text: str,
    system: str,
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    client_for_store: Callable[[], TestClient],
) -> None:
    """Before: ``create -f`` read the file with universal newlines (CRLF -> LF, and a value's
    own ``\\r`` lost: no round trip) while ``rt.create(modelfile=)`` and ``/api/create`` kept
    every ``\\r``: the same Modelfile bound different prompts."""
    import local_llm_runtime as rt

    body = text.format(**files)
    path = tmp_path / "Modelfile"
    path.write_bytes(body.encode("utf-8"))
    assert _create_f(path, "cli", capsys)[0] == 0
    rt.create("api", modelfile=body)
    made = client_for_store().post(
        "/api/create", json={"model": "srv", "modelfile": body, "stream": False}
    )
    assert made.status_code == 200, made.text
    lib = ModelLibrary()
    assert [lib.show(n)["system"] for n in ("cli", "api", "srv")] == [system] * 3
    _assert_round_trips("cli", tmp_path, capsys, client_for_store)


# ---- Ollama's own `show --modelfile` output, copied verbatim -----------------------------------

_OLLAMA_SHOW = '''# Modelfile generated by "ollama show"
# To build a new Modelfile based on this, replace FROM with:
# FROM llama3.2:latest

FROM {blob}
TEMPLATE """<|start_header_id|>system<|end_header_id|>

{{{{ if .System }}}}{{{{ .System }}}}
{{{{- end }}}}<|eot_id|>{{{{ range .Messages }}}}{{{{ .Content }}}}{{{{ end }}}}"""
PARAMETER stop <|start_header_id|>
PARAMETER stop <|end_header_id|>
PARAMETER stop <|eot_id|>
LICENSE """LLAMA 3.2 COMMUNITY LICENSE AGREEMENT
Llama 3.2 Version Release Date: September 25, 2024
"""
'''


@pytest.mark.parametrize("blob_name", ["sha256-{sha}", "sha256:{sha}"])
def test_ollama_show_output_works_once_its_go_template_is_removed(
    blob_name: str,
    tiny_gguf: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    isolated_env: dict[str, Path],
) -> None:
    """Before: ``FROM ~/.ollama/models/blobs/sha256-...`` (what ``ollama show --modelfile``
    writes) was 'Invalid model name: a path must point to a .gguf file'."""
    import hashlib

    sha = hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    blobs = tmp_path / ".ollama" / "models" / "blobs"
    blobs.mkdir(parents=True)
    blob = blobs / blob_name.format(sha=sha)
    blob.write_bytes(tiny_gguf.read_bytes())
    text = _OLLAMA_SHOW.format(blob=blob)
    path = tmp_path / "Modelfile"
    path.write_text(text, "utf-8")
    before = _store_files(isolated_env["home"])
    rc, _, err = _create_f(path, "from-ollama", capsys)
    assert rc == 1 and "line 6" in err and "Go template" in err and "{% for" in err
    assert _store_files(isolated_env["home"]) == before
    start, end = text.index("TEMPLATE"), text.index("PARAMETER")
    path.write_text(text[:start] + text[end:], "utf-8")
    rc, _, err = _create_f(path, "from-ollama", capsys)
    assert rc == 0, err
    record = ModelLibrary().store.get("from-ollama:latest")
    assert record is not None and record.digest == sha
    assert record.parameters["stop"] == ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    assert record.license is not None and record.license.startswith("LLAMA 3.2")
    # a blob that is not a GGUF (Ollama keeps templates and licenses as blobs too)
    other = blobs / ("sha256-" + "0" * 64)
    other.write_text("{{ .Prompt }}", "utf-8")
    path.write_text(f"FROM {other}\n", "utf-8")
    rc, _, err = _create_f(path, "bad-blob", capsys)
    assert rc == 1 and "not a valid GGUF" in err


@pytest.mark.parametrize(
    "text",
    [
        "/x/blobs/sha256-abc",  # not 64 hex
        "/x/blobs/sha256-" + "G" * 64,
        "/x/blobs/model.bin",
        "./folder/",
    ],
)
def test_other_paths_still_need_a_gguf_suffix(text: str) -> None:
    from local_llm_runtime.errors import InvalidModelNameError
    from local_llm_runtime.store.names import parse_ref

    with pytest.raises(InvalidModelNameError, match="gguf"):
        parse_ref(text)


# ---- the compute thread under many callers ---------------------------------------------------

LONG = [{"role": "user", "content": "hello world " * 140}]  # ~1,700 tokens: several n_batch
SHORT = [{"role": "user", "content": "hello world"}]


@pytest.fixture
def two_models(tiny_gguf: Path, tiny_gguf_factory: Callable[..., Path]) -> tuple[str, str]:
    return str(tiny_gguf), str(tiny_gguf_factory(seed=3))


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine()
    yield eng
    eng.pool.close()


def test_a_short_request_to_a_second_model_is_not_starved_by_a_long_one(
    engine: Engine, two_models: tuple[str, str]
) -> None:
    """Both models make progress: decodes take turns on the one compute thread (a job per
    token each), so 20 tokens of B finish long before A's 300."""
    a, b = two_models
    engine.preload(a)
    engine.preload(b)
    order: list[str] = []
    started = threading.Event()

    def long_a() -> None:
        for chunk in engine.chat_stream(a, SHORT, options={"num_predict": 300, "temperature": 0}):
            started.set()
            order.append("a-final" if isinstance(chunk, FinalChunk) else "a")

    thread = threading.Thread(target=long_a)
    thread.start()
    assert started.wait(60)
    result = engine.chat(b, SHORT, options={"num_predict": 20, "temperature": 0})
    order.append("b-done")
    thread.join(120)
    assert result.usage.completion_tokens == 20
    assert order[-1] == "a-final", (len(order), order[-5:])
    assert order.index("b-done") < len(order) - 100, "B waited for most of A's generation"


def test_timeouts_and_cancellations_during_long_prefills_end_promptly_typed(
    engine: Engine, two_models: tuple[str, str]
) -> None:
    """Many asyncio callers on two models: the ones with a deadline raise RequestTimeoutError
    (not a hang, not another error), cancelled tasks end as cancelled, and both models then
    answer as before (greedy: the same text)."""
    a, b = two_models
    greedy = {"num_predict": 16, "temperature": 0}
    before = {m: engine.chat(m, SHORT, options=greedy).text for m in (a, b)}

    async def one(model: str, timeout: float | None) -> str:
        stream = engine.achat_stream(model, LONG, options={"num_predict": 32}, timeout=timeout)
        try:
            async for _ in stream:
                pass
        except RequestTimeoutError:
            return "timeout"
        return "done"

    async def scenario() -> tuple[list[object], list[object]]:
        timed = await asyncio.gather(
            *[one((a, b)[i % 2], 0.001 if i % 3 == 0 else None) for i in range(9)],
            return_exceptions=True,
        )
        tasks = [asyncio.create_task(one((a, b)[i % 2], None)) for i in range(6)]
        await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        cancelled = await asyncio.gather(*tasks, return_exceptions=True)
        return timed, cancelled

    timed, cancelled = asyncio.run(asyncio.wait_for(scenario(), 300))
    assert timed == ["timeout" if i % 3 == 0 else "done" for i in range(9)]
    assert all(isinstance(x, asyncio.CancelledError) or x == "done" for x in cancelled)
    assert {m: engine.chat(m, SHORT, options=greedy).text for m in (a, b)} == before


def test_unloading_a_model_while_it_decodes_lets_the_stream_finish_then_frees_it(
    engine: Engine, two_models: tuple[str, str]
) -> None:
    a, b = two_models
    stream = engine.chat_stream(b, SHORT, options={"num_predict": 60, "temperature": 0})
    first = next(iter(stream))
    assert not isinstance(first, FinalChunk)
    other = engine.chat(a, SHORT, options={"num_predict": 4})  # another model meanwhile
    assert other.usage.completion_tokens == 4
    assert engine.unload(b) == 1
    final = [c for c in stream if isinstance(c, FinalChunk)]
    assert len(final) == 1 and final[0].usage.completion_tokens == 60
    assert b not in {str(m.path) for m in engine.ps()}
    assert engine.chat(b, SHORT, options={"num_predict": 3}).usage.completion_tokens == 3


def test_every_writable_value_reads_back_exactly_through_a_file(tmp_path: Path) -> None:
    """render -> file -> read_modelfile is the identity for values made of the characters
    that matter to the syntax (quotes, line ends of both kinds, blanks, #); a value no quoting
    can hold is a ModelfileError, never a different value."""
    import random

    from local_llm_runtime.errors import ModelfileError
    from local_llm_runtime.store.modelfile import Modelfile, read_modelfile, render_modelfile

    rng = random.Random(13)
    alphabet = ['"', "'", "\n", "\r", "\r\n", " ", "\t", "#", "x", '"""', "'''", "é"]

    def value(min_len: int = 0) -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(min_len, 8)))

    written = 0
    for index in range(400):
        stop = value(1)
        modelfile = Modelfile(
            from_="base:latest",
            system=value(),
            template=None,
            parameters={"stop": [stop]} if stop.strip(" \t") or stop else {},
            messages=({"role": "user", "content": value()},),
            license=value(),
        )
        try:
            text = render_modelfile(modelfile, name="base")
        except ModelfileError:
            continue
        path = tmp_path / f"Modelfile{index}"
        path.write_bytes(text.encode("utf-8"))
        assert read_modelfile(path) == modelfile, text
        written += 1
    assert written > 300


# ---- a concurrent rm between create's import and its commit ----------------------------------


@pytest.mark.parametrize("kind", ["file", "stored-name", "adapter"])
def test_create_never_records_files_a_concurrent_rm_deleted(
    kind: str, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: create imported (or found) its files, then another process's ``rm`` of the
    last name using them deleted them, then create committed a record whose files were gone
    ('files are missing' on first use). The rm is injected at that point: create now sees it
    under the store lock and re-imports what it can or says to try again."""
    import local_llm_runtime.store.library as library_module
    from local_llm_runtime.errors import StoreError
    from local_llm_runtime.store import records

    lib = ModelLibrary()
    if kind == "adapter":
        lib.create("base2", str(files["wide"]))
        lib.create("shared", str(files["model"]), adapters=[files["lora"]])
        lib.create("base2", str(files["model"]))  # the same model file, no adapter
    else:
        lib.create("shared", str(files["model"]), adapters=[files["lora"]])
    real_import = records.import_blob
    raced: list[str] = []

    def import_then_rm(store: records.Store, src: Path) -> records.FileRecord:
        record = real_import(store, src)
        if not raced:
            raced.append("rm")
            ModelLibrary().remove("shared")  # another process, between import and commit
        return record

    monkeypatch.setattr(library_module, "import_blob", import_then_rm)
    if kind == "file":
        made = lib.create("new", str(files["model"]))
    elif kind == "adapter":  # the lora blob is only shared's: rm deletes it
        made = lib.create("new", "base2", adapters=[files["lora"]])
    else:
        monkeypatch.setattr(library_module, "import_blob", real_import)
        stored = lib.store.get("shared:latest")
        assert stored is not None
        real_present = lib.store.present

        def present_then_rm(record: records.ModelRecord) -> bool:
            answer = real_present(record)
            if not raced and record.name == "shared:latest":
                raced.append("rm")
                ModelLibrary().remove("shared")
            return answer

        monkeypatch.setattr(lib.store, "present", present_then_rm)
        with pytest.raises(StoreError, match="try again"):
            lib.create("new", "shared")
        assert lib.store.get("new:latest") is None
        return
    assert raced == ["rm"]
    assert ModelLibrary().store.present(made)
    assert ModelLibrary().resolve("new", pull=False).path.is_file()


def test_a_modelscope_pull_never_records_a_blob_a_concurrent_rm_deleted(
    tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same race for a pull: the blob is already in the store (another name imported the
    same bytes), so the pull reuses it; an rm of that name before the commit deletes it."""
    from local_llm_runtime.errors import StoreError
    from local_llm_runtime.store.modelscope import ModelScopeClient
    from tests.support.fake_modelscope import FakeModelScope

    with FakeModelScope() as ms:
        monkeypatch.setenv("MODELSCOPE_DOMAIN", ms.url)
        ms.add_repo("Org/Tiny-GGUF", {"tiny-q4_k_m.gguf": tiny_gguf})
        lib = ModelLibrary()
        lib.create("shared", str(tiny_gguf))
        real = ModelScopeClient.download

        def download_then_rm(self: ModelScopeClient, *args: object, **kwargs: object) -> object:
            stored = real(self, *args, **kwargs)  # type: ignore[arg-type]
            ModelLibrary().remove("shared")  # another process, before the commit
            return stored

        monkeypatch.setattr(ModelScopeClient, "download", download_then_rm)
        with pytest.raises(StoreError, match="try again"):
            lib.pull("modelscope.cn/Org/Tiny-GGUF")
        assert lib.list() == []
        monkeypatch.setattr(ModelScopeClient, "download", real)
        record = lib.pull("modelscope.cn/Org/Tiny-GGUF")  # the retry the message asks for
        assert lib.store.present(record)


# ---- GreedyPick on rows that are not all finite --------------------------------------------------


def _nonfinite_rows() -> list[tuple[str, np.ndarray[Any, Any]]]:
    from tests.unit.test_greedy_pick import N_VOCAB

    rng = np.random.default_rng(7)

    def normal() -> np.ndarray[Any, Any]:
        return rng.normal(0, 3, N_VOCAB).astype(np.float32)

    rows: list[tuple[str, np.ndarray[Any, Any]]] = []
    for name, spots in [
        ("nan-mid", {7: np.nan}),
        ("nan-first", {0: np.nan}),
        ("nan-last", {N_VOCAB - 1: np.nan}),
        ("nans-and-inf", {3: np.nan, 9: np.inf, 11: np.nan}),
        ("inf", {9: np.inf}),
        ("two-infs", {3: np.inf, 5: np.inf}),
        ("penalised-max-then-nan", {0: 50.0, 1: np.nan}),
    ]:
        row = normal()
        for index, value in spots.items():
            row[index] = value
        rows.append((name, row))
    rows.append(("all-nan", np.full(N_VOCAB, np.nan, np.float32)))
    rows.append(("all-minus-inf", np.full(N_VOCAB, -np.inf, np.float32)))
    return rows


@pytest.mark.parametrize(
    "penalties", [{"repeat_penalty": 1.0}, {}, {"repeat_penalty": 1.3, "frequency_penalty": 0.5}]
)
@pytest.mark.parametrize(("name", "row"), _nonfinite_rows(), ids=[r[0] for r in _nonfinite_rows()])
def test_greedy_pick_equals_llama_cpp_on_non_finite_rows(
    name: str, row: np.ndarray[Any, Any], penalties: dict[str, float]
) -> None:
    """Before: numpy's argmax returned the first NaN; llama.cpp never picks a NaN after
    entry 0 (a NaN compares greater than nothing)."""
    import ctypes

    from local_llm_runtime.llama.sampling import GreedyPick, SamplingOptions
    from tests.unit.test_greedy_pick import N_VOCAB, _oracle

    options = SamplingOptions(temperature=0.0, **penalties)  # type: ignore[arg-type]
    history = [0, 7, 9, 3]
    pick = GreedyPick(options, N_VOCAB)
    for token in history:
        pick.accept(token)
    logits = (ctypes.c_float * N_VOCAB)(*row.tolist())
    with np.errstate(all="ignore"):
        assert pick.pick(logits) == _oracle(options, history, row)


# ---- the Modelfile reader: linear, and the same values as the line-by-line rule ------------------


def _reference_value(text: str) -> str | None:
    """The rule, spelled naively (what the reader did before, quadratic in a value's lines):
    after blanks, take lines until ``_unquote`` of the stripped buffer is not None."""
    from local_llm_runtime.store.modelfile import _unquote

    pos = 0
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    start = pos
    while True:
        while pos < len(text) and text[pos] not in "\r\n":
            pos += 1
        value = _unquote(text[start:pos].strip())
        if value is not None:
            return value
        if pos >= len(text):
            return None
        pos += 1


def test_the_reader_takes_the_same_values_as_the_line_by_line_rule() -> None:
    """Before: each line of a quoted value re-sliced and re-stripped the whole value so far
    (a 16,000-line SYSTEM took 0.19 s, 64,000 lines ~3 s); now each line is checked at its
    end only. Same values, same unclosed-quote errors, on texts of the characters that
    matter (quotes, both line ends, blanks, whitespace that str.strip() also removes)."""
    import random

    from local_llm_runtime.errors import ModelfileError
    from local_llm_runtime.store.modelfile import _Reader

    rng = random.Random(5)
    alphabet = ['"', "'", '"""', "'''", "\n", "\r", "\r\n", " ", "\t", "\x0c", "\u3000", "x", "#"]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        expected = _reference_value(text)
        reader = _Reader(text)
        if expected is None:
            with pytest.raises(ModelfileError, match="never closed"):
                reader.value("system", 1)
        else:
            assert reader.value("system", 1) == expected, repr(text)
    lines = "\n".join(f"line {i}" for i in range(64_000))
    parsed = parse_modelfile(f'FROM x\nSYSTEM """{lines}"""\nPARAMETER seed 1\n')
    assert parsed.system == lines and parsed.parameters == {"seed": 1}
