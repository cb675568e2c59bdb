"""``:auto`` quantization: the largest file whose weights + KV cache + compute fit the memory.

The decision is pure and table-driven (fake listings and memory figures); the pull runs
end to end against the fake Hub with tiny real GGUFs of several sizes and an injected
memory figure.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from local_llm_runtime import (
    InsufficientMemoryError,
    InvalidModelFileError,
    InvalidOptionError,
    ModelLibrary,
)
from local_llm_runtime.memory import (
    DEFAULT_HEADROOM_BYTES,
    DeviceMemory,
    HostMemory,
    ModelShape,
    probe_host_memory,
)
from local_llm_runtime.settings import RuntimeSettings
from local_llm_runtime.store import catalog
from local_llm_runtime.store.auto_quant import (
    MemoryBudget,
    QuantFile,
    budget_from,
    choose_quant,
    needs_for,
    quant_files,
)
from local_llm_runtime.store.gguf_meta import read_gguf_info, read_gguf_metadata_prefix
from local_llm_runtime.store.hub import PullProgress
from local_llm_runtime.store.names import parse_name
from tests.support.fake_hub import FakeHub

MiB = 1 << 20
GiB = 1 << 30

# Qwen2.5-7B's shape: 28 blocks, 28 heads, 4 KV heads of 128 dims, 152k vocabulary.
QWEN7B = ModelShape(
    n_layer=28,
    n_embd=3584,
    n_head=28,
    n_head_kv=4,
    n_ctx_train=32768,
    file_bytes=1,
    n_vocab=152064,
)
QWEN7B_FILES = {  # bartowski-style sizes (bytes)
    "Qwen2.5-7B-Instruct-Q2_K.gguf": 3_015_940_800,
    "Qwen2.5-7B-Instruct-Q4_K_M.gguf": 4_683_073_248,
    "Qwen2.5-7B-Instruct-Q5_K_M.gguf": 5_444_831_968,
    "Qwen2.5-7B-Instruct-Q6_K.gguf": 6_254_198_496,
    "Qwen2.5-7B-Instruct-Q8_0.gguf": 8_098_525_888,
    "Qwen2.5-7B-Instruct-f16-00001-of-00002.gguf": 7_900_000_000,
    "Qwen2.5-7B-Instruct-f16-00002-of-00002.gguf": 7_330_000_000,
    "Qwen2.5-7B-Instruct-IQ4_XS-00001-of-00002.gguf": 4_000_000_000,  # shard 2 missing
    "mmproj-Qwen2.5-7B-f16.gguf": 600_000_000,
    "README.md": 5_000,
}


# ---- pure: listing, KV, choice -----------------------------------------------------------------


def test_quant_files_from_a_listing() -> None:
    files = quant_files(QWEN7B_FILES)
    assert [f.quant for f in files] == ["Q2_K", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16"]
    f16 = files[-1]
    assert f16.size == 7_900_000_000 + 7_330_000_000 and len(f16.paths) == 2  # all shards
    assert all("mmproj" not in p for f in files for p in f.paths)


def test_kv_cache_is_llama_cpp_formula() -> None:
    # llama.cpp: KV = 2 x n_layer x n_ctx x n_embd_k_gqa x bytes(type), n_embd_k_gqa = 4 x 128
    (need,) = needs_for([QuantFile("Q4_K_M", 4 * GiB, ("m.gguf",))], QWEN7B, num_ctx=4096)
    assert need.kv_bytes == 2 * 28 * 4096 * (4 * 128) * 2 == 224 * MiB
    (q8kv,) = needs_for(
        [QuantFile("Q4_K_M", 4 * GiB, ("m.gguf",))],
        QWEN7B,
        num_ctx=8192,
        num_parallel=2,
        kv_bytes_per_elem=34 / 32,
    )
    assert q8kv.kv_bytes == pytest.approx(2 * 28 * 8192 * 2 * 512 * 34 / 32, abs=28)
    assert need.weights_bytes == 4 * GiB and need.compute_bytes >= 256 * MiB
    assert need.total_bytes == need.weights_bytes + need.kv_bytes + need.compute_bytes


def _budget(gib: float, headroom: int = DEFAULT_HEADROOM_BYTES) -> MemoryBudget:
    return MemoryBudget(int(gib * GiB), headroom, "available RAM")


@pytest.mark.parametrize(
    ("available_gib", "num_ctx", "expected", "too_big"),
    [
        (24.0, 4096, "F16", None),  # everything fits: the largest file
        (11.2, 4096, "Q8_0", "F16"),
        (8.0, 4096, "Q6_K", "Q8_0"),
        (6.8, 4096, "Q5_K_M", "Q6_K"),
        (8.0, 32768, "Q2_K", "Q4_K_M"),  # a longer context (1.75 GiB KV): a smaller file
        (6.0, 4096, "Q4_K_M", "Q5_K_M"),
        (4.5, 4096, "Q2_K", "Q4_K_M"),
        (3.5, 4096, None, None),  # nothing fits
    ],
)
def test_choose_quant_table(
    available_gib: float, num_ctx: int, expected: str | None, too_big: str | None
) -> None:
    needs = needs_for(quant_files(QWEN7B_FILES), QWEN7B, num_ctx=num_ctx)
    budget = _budget(available_gib)
    if expected is None:
        with pytest.raises(InsufficientMemoryError) as caught:
            choose_quant(needs, budget, num_ctx=num_ctx, what="hf.co/Qwen/x")
        message = str(caught.value)
        assert "Q2_K" in message and "F16" in message and "num_ctx 4096" in message
        assert "Nothing was downloaded" in message
        assert caught.value.available == budget.usable_bytes
        assert set(caught.value.needs) == {n.file.quant for n in needs}
        return
    choice = choose_quant(needs, budget, num_ctx=num_ctx)
    assert choice.quant == expected
    assert choice.chosen.total_bytes <= budget.usable_bytes
    assert (choice.too_big.file.quant if choice.too_big else None) == too_big
    if choice.too_big is not None:
        assert choice.too_big.total_bytes > budget.usable_bytes
    reason = choice.reason
    assert reason.startswith(f"auto: {expected} (") and f"num_ctx {num_ctx}" in reason
    assert "weights +" in reason and "KV" in reason and "available RAM" in reason
    if too_big is None:
        assert reason.endswith("it is the largest quantization")
    else:
        assert f"; {too_big} (" in reason and reason.endswith("would not")


@pytest.mark.parametrize(
    ("device", "host", "offloads", "expected"),
    [
        (
            DeviceMemory("cuda", 24 * GiB, 20 * GiB, "RTX 4090"),
            HostMemory(64 * GiB, 30 * GiB, "MemAvailable"),
            True,
            MemoryBudget(
                20 * GiB, DEFAULT_HEADROOM_BYTES, "free GPU memory (CUDA, RTX 4090)", gpu=True
            ),
        ),
        (  # a CPU-only build on a GPU machine runs in RAM
            DeviceMemory("cuda", 24 * GiB, 20 * GiB, "RTX 4090"),
            HostMemory(64 * GiB, 30 * GiB, "MemAvailable"),
            False,
            MemoryBudget(30 * GiB, 3 * GiB, "available RAM"),
        ),
        (
            None,
            HostMemory(8 * GiB, 2 * GiB, "MemAvailable"),
            None,
            MemoryBudget(2 * GiB, DEFAULT_HEADROOM_BYTES, "available RAM"),
        ),
        (None, None, True, None),
    ],
)
def test_budget_from_probes(
    device: DeviceMemory | None,
    host: HostMemory | None,
    offloads: bool | None,
    expected: MemoryBudget | None,
) -> None:
    assert budget_from(device, host, offloads=offloads) == expected


MEMINFO = "MemTotal:       16384000 kB\nMemFree:         1000000 kB\nMemAvailable:    8192000 kB\n"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"/proc/meminfo": MEMINFO}, HostMemory(16384000 * 1024, 8192000 * 1024, "MemAvailable")),
        (  # cgroup v2 limit: 4 GiB, 1 GiB used -> 3 GiB left (less than MemAvailable)
            {
                "/proc/meminfo": MEMINFO,
                "/sys/fs/cgroup/memory.max": f"{4 * GiB}\n",
                "/sys/fs/cgroup/memory.current": f"{GiB}\n",
            },
            HostMemory(16384000 * 1024, 3 * GiB, "cgroup memory.max"),
        ),
        (  # no limit
            {"/proc/meminfo": MEMINFO, "/sys/fs/cgroup/memory.max": "max\n"},
            HostMemory(16384000 * 1024, 8192000 * 1024, "MemAvailable"),
        ),
        (  # cgroup v1 without a limit reports ~2**63
            {
                "/proc/meminfo": MEMINFO,
                "/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
            },
            HostMemory(16384000 * 1024, 8192000 * 1024, "MemAvailable"),
        ),
        (  # cgroup v1 limit above what is available: MemAvailable stays
            {
                "/proc/meminfo": MEMINFO,
                "/sys/fs/cgroup/memory/memory.limit_in_bytes": f"{32 * GiB}\n",
                "/sys/fs/cgroup/memory/memory.usage_in_bytes": f"{GiB}\n",
            },
            HostMemory(16384000 * 1024, 8192000 * 1024, "MemAvailable"),
        ),
    ],
)
def test_probe_host_memory(files: dict[str, str], expected: HostMemory) -> None:
    assert probe_host_memory(files.get) == expected


# ---- names and settings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "quant", "in_tag"),
    [
        ("qwen2.5:7b-auto", "AUTO", True),
        ("qwen2.5:7b-instruct-auto", "AUTO", True),
        ("qwen2.5:7b-q8_0", "Q8_0", True),
        ("qwen2.5:7b", "Q4_K_M", False),
        ("qwen2.5", "Q4_K_M", False),
        ("nomic-embed-text:latest", "F16", False),
    ],
)
def test_catalog_auto_tag(name: str, quant: str, in_tag: bool) -> None:
    entry = catalog.lookup(parse_name(name))
    assert entry is not None
    assert (entry.quant, entry.quant_in_tag) == (quant, in_tag)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, None), ("", None), ("auto", "AUTO"), ("q5_k_m", "Q5_K_M"), (" Q8_0 ", "Q8_0")],
)
def test_local_llm_quant_setting(raw: str | None, expected: str | None) -> None:
    env = {} if raw is None else {"LOCAL_LLM_QUANT": raw}
    assert RuntimeSettings.from_env(env).quant == expected


@pytest.mark.parametrize("raw", ["q4 k m", "../x", "q4_k_m:"])
def test_local_llm_quant_setting_refuses_bad_names(raw: str) -> None:
    with pytest.raises(InvalidOptionError, match="LOCAL_LLM_QUANT"):
        RuntimeSettings.from_env({"LOCAL_LLM_QUANT": raw})


# ---- GGUF header from its first bytes --------------------------------------------------------


def test_metadata_from_a_prefix(tiny_gguf: Path) -> None:
    data = tiny_gguf.read_bytes()
    full = read_gguf_info(tiny_gguf).metadata
    assert read_gguf_metadata_prefix(data, "m.gguf") == full
    ends = [n for n in (0, 3, 24, 100, 1000) if read_gguf_metadata_prefix(data[:n], "m") is None]
    assert ends == [0, 3, 24, 100, 1000]  # too short: ask for more, never a wrong answer
    with pytest.raises(InvalidModelFileError):
        read_gguf_metadata_prefix(b"NOPE" + data[4:], "m.gguf")


# ---- end to end: fake Hub, tiny GGUFs of several sizes, injected memory ---------------------

REPO = "org/Tiny-GGUF"
PADS = {"Q2_K": 0, "Q4_K_M": 2 * MiB, "Q8_0": 6 * MiB}


@pytest.fixture
def tiny_repo(fake_hub: FakeHub, tiny_gguf: Path) -> dict[str, bytes]:
    base = tiny_gguf.read_bytes()
    files = {f"tiny-{q.lower()}.gguf": base + b"\0" * pad for q, pad in PADS.items()}
    fake_hub.add_repo(REPO, {**files, "README.md": b"# tiny\n"})
    return files


def _needs(tiny_gguf: Path, files: dict[str, bytes], num_ctx: int) -> dict[str, int]:
    shape = ModelShape.from_gguf([tiny_gguf])
    sizes = {path: len(data) for path, data in files.items()}
    return {
        n.file.quant: n.total_bytes for n in needs_for(quant_files(sizes), shape, num_ctx=num_ctx)
    }


def test_auto_pull_chooses_the_largest_that_fits_and_records_it(
    fake_hub: FakeHub,
    tiny_repo: dict[str, bytes],
    tiny_gguf: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    num_ctx = 2048  # the tiny model's trained context caps the default 4096
    needs = _needs(tiny_gguf, tiny_repo, num_ctx)
    budget = MemoryBudget(needs["Q4_K_M"] + MiB, 0, "available RAM")  # Q8_0 needs 4 MiB more
    events: list[PullProgress] = []
    lib = ModelLibrary(memory=lambda: budget)
    with caplog.at_level(logging.WARNING):
        record = lib.pull(f"hf.co/{REPO}:auto", progress=events.append)
    assert record.quant == "Q4_K_M" and record.name == f"hf.co/{REPO}:AUTO"
    assert record.files[0].repo_path == "tiny-q4_k_m.gguf"
    reasons = [e.status for e in events if e.status.startswith("auto:")]
    assert len(reasons) == 1 and reasons[0].startswith("auto: Q4_K_M (")
    assert f"num_ctx {num_ctx}" in reasons[0] and "; Q8_0 (" in reasons[0]
    assert reasons[0] in caplog.text
    assert fake_hub.file_gets("tiny-q8_0.gguf") == 0  # never downloaded
    assert fake_hub.file_gets("tiny-q4_k_m.gguf") == 1
    header_reads = [r for r in fake_hub.requests if r.path.endswith("tiny-q2_k.gguf")]
    smallest = len(tiny_repo["tiny-q2_k.gguf"])  # one range request for its header
    assert [r.headers.get("range") for r in header_reads] == [f"bytes=0-{smallest - 1}"]

    # Later runs: offline, stable, no memory probe, no request.
    fake_hub.reset_requests()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_probe() -> MemoryBudget:
        raise AssertionError("the memory is not probed again")

    again = ModelLibrary(memory=no_probe)
    model = again.resolve(f"hf.co/{REPO}:auto")
    assert model.sha256 == record.digest and model.record is not None
    assert again.show(f"hf.co/{REPO}:AUTO")["source"]["quant"] == "Q4_K_M"
    assert fake_hub.requests == []


def test_auto_pull_with_all_memory_takes_the_largest(
    fake_hub: FakeHub, tiny_repo: dict[str, bytes]
) -> None:
    lib = ModelLibrary(memory=lambda: MemoryBudget(64 * GiB, 0, "available RAM"))
    record = lib.pull(f"hf.co/{REPO}:AUTO")
    assert record.quant == "Q8_0"


def test_nothing_fits_is_a_typed_error_and_nothing_is_downloaded(
    fake_hub: FakeHub,
    tiny_repo: dict[str, bytes],
    tiny_gguf: Path,
    isolated_env: dict[str, Path],
) -> None:
    needs = _needs(tiny_gguf, tiny_repo, 2048)
    budget = MemoryBudget(needs["Q2_K"] - 1, 0, "available RAM")
    lib = ModelLibrary(memory=lambda: budget)
    with pytest.raises(InsufficientMemoryError) as caught:
        lib.pull(f"hf.co/{REPO}:auto")
    assert caught.value.needs == needs
    for quant in PADS:
        assert quant in str(caught.value)
    assert all(r.headers.get("range") for r in fake_hub.requests if "/resolve/" in r.path)
    assert not [
        p for p in isolated_env["hf_cache"].rglob("*") if p.is_file() and "blobs" in p.parts
    ]
    assert lib.list() == []


def test_catalog_name_auto_and_local_llm_quant(
    fake_hub: FakeHub, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tiny_gguf.read_bytes()
    files = {
        f"qwen2.5-0.5b-instruct-{q.lower()}.gguf": base + b"\0" * pad for q, pad in PADS.items()
    }
    fake_hub.add_repo("Qwen/Qwen2.5-0.5B-Instruct-GGUF", files)
    needs = _needs(tiny_gguf, files, 2048)
    budget = MemoryBudget(needs["Q4_K_M"], 0, "available RAM")
    tagged = ModelLibrary(memory=lambda: budget).pull("qwen2.5:0.5b-auto")
    assert (tagged.name, tagged.quant) == ("qwen2.5:0.5b-auto", "Q4_K_M")

    monkeypatch.setenv("LOCAL_LLM_QUANT", "auto")  # for names that give no quantization
    big = MemoryBudget(64 * GiB, 0, "available RAM")
    plain = ModelLibrary(memory=lambda: big).pull("qwen2.5:0.5b")
    assert (plain.name, plain.quant) == ("qwen2.5:0.5b", "Q8_0")
    explicit = ModelLibrary(memory=lambda: big).pull("qwen2.5:0.5b-q2_k")
    assert explicit.quant == "Q2_K"  # a quant in the name wins over the setting

    monkeypatch.setenv("LOCAL_LLM_QUANT", "q8_0")
    hub_ref = ModelLibrary(memory=lambda: big).pull("hf.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF")
    assert (hub_ref.name, hub_ref.quant) == ("hf.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q8_0", "Q8_0")


def test_explicit_pull_larger_than_memory_warns_but_pulls(
    fake_hub: FakeHub, tiny_repo: dict[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    size = len(tiny_repo["tiny-q8_0.gguf"])
    events: list[PullProgress] = []
    lib = ModelLibrary(memory=lambda: MemoryBudget(size - 1, 0, "available RAM"))
    with caplog.at_level(logging.WARNING):
        record = lib.pull(f"hf.co/{REPO}:Q8_0", progress=events.append)
    assert record.quant == "Q8_0"
    warnings = [e.status for e in events if e.status.startswith("warning:")]
    assert len(warnings) == 1 and "more than the" in warnings[0] and "available RAM" in warnings[0]
    assert warnings[0] in caplog.text
    statuses = [e.status for e in events]
    assert statuses.index(warnings[0]) < statuses.index("pulling")  # before the download
    # a file that fits: no warning
    events.clear()
    ModelLibrary(memory=lambda: MemoryBudget(64 * GiB, 0, "RAM")).pull(
        f"hf.co/{REPO}:Q2_K", progress=events.append
    )
    assert not [e for e in events if e.status.startswith("warning:")]


def test_unknown_memory_falls_back_to_the_default_quant(
    fake_hub: FakeHub, tiny_repo: dict[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        record = ModelLibrary(memory=lambda: None).pull(f"hf.co/{REPO}:auto")
    assert record.quant == "Q4_K_M"
    assert "cannot tell this machine's free memory" in caplog.text


def test_auto_model_runs(fake_hub: FakeHub, tiny_repo: dict[str, bytes]) -> None:
    """The chosen file is a model llama.cpp loads (padding after the tensors is ignored)."""
    import llama_cpp

    lib = ModelLibrary(memory=lambda: MemoryBudget(64 * GiB, 0, "available RAM"))
    path = lib.resolve(f"hf.co/{REPO}:auto").path
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, verbose=False)
    try:
        assert llm.create_completion("hi", max_tokens=2)["usage"]["completion_tokens"] >= 1
    finally:
        llm.close()


def test_api_pull_streams_the_auto_choice(
    fake_hub: FakeHub, tiny_repo: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from fastapi.testclient import TestClient

    from local_llm_runtime.store import auto_quant
    from local_llm_runtime.testing import FakeEngine
    from tests.support.server import make_app

    monkeypatch.setattr(
        auto_quant, "probe_budget", lambda: MemoryBudget(64 * GiB, 0, "available RAM")
    )
    with TestClient(make_app(FakeEngine())) as client:
        text = client.post("/api/pull", json={"model": f"hf.co/{REPO}:auto"}).text
    statuses = [json.loads(line)["status"] for line in text.splitlines() if line.strip()]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    (reason,) = [s for s in statuses if s.startswith("auto:")]
    assert reason.startswith("auto: Q8_0 (") and reason.endswith("it is the largest quantization")


def test_probing_the_build_and_memory_imports_no_backend() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from local_llm_runtime.memory import llama_build_offloads\n"
        "from local_llm_runtime.store.auto_quant import probe_budget\n"
        "offloads = llama_build_offloads()\n"
        "budget = probe_budget()\n"
        "assert budget is None or budget.available_bytes > 0, budget\n"
        "print(offloads, sorted(m for m in sys.modules if m.startswith("
        "('llama_cpp', 'local_llm_runtime.llama'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split(maxsplit=1)
    assert out[0] in ("True", "False", "None") and out[1].strip() == "[]"


def test_read_prefix_stops_once_the_header_is_complete(fake_hub: FakeHub, tiny_gguf: Path) -> None:
    from local_llm_runtime.store.hub import HubClient

    big = tiny_gguf.read_bytes() + b"\0" * (12 * MiB)
    commit = fake_hub.add_repo(REPO, {"big-q4_k_m.gguf": big})
    hub = HubClient(RuntimeSettings.from_env())
    asked: list[int] = []

    def enough(head: bytes) -> bool:
        asked.append(len(head))
        return read_gguf_metadata_prefix(head, "big") is not None

    data = hub.read_prefix(REPO, commit, "big-q4_k_m.gguf", 64 * MiB, enough=enough)
    assert MiB <= len(data) < 2 * MiB and len(asked) == 1  # stopped at the first checkpoint
    assert read_gguf_metadata_prefix(data, "big") == read_gguf_info(tiny_gguf).metadata
    exact = hub.read_prefix(REPO, commit, "big-q4_k_m.gguf", 3 * MiB)
    assert exact == big[: 3 * MiB]
    (first, second) = [r for r in fake_hub.requests if r.path.endswith("big-q4_k_m.gguf")]
    assert first.headers["range"] == f"bytes=0-{64 * MiB - 1}"
    assert second.headers["range"] == f"bytes=0-{3 * MiB - 1}"


def test_auto_pull_on_modelscope_chooses_like_on_the_hub(
    tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.fake_modelscope import FakeModelScope

    base = tiny_gguf.read_bytes()
    files = {f"tiny-{q.lower()}.gguf": base + b"\0" * pad for q, pad in PADS.items()}
    needs = _needs(tiny_gguf, files, 2048)
    budget = MemoryBudget(needs["Q4_K_M"] + MiB, 0, "available RAM")
    with FakeModelScope() as ms:
        monkeypatch.setenv("MODELSCOPE_DOMAIN", ms.url)
        ms.add_repo(REPO, {**files, "README.md": b"# tiny\n"})
        events: list[PullProgress] = []
        record = ModelLibrary(memory=lambda: budget).pull(
            f"modelscope.cn/{REPO}:auto", progress=events.append
        )
        assert record.source == "modelscope" and record.quant == "Q4_K_M"
        assert record.files[0].repo_path == "tiny-q4_k_m.gguf"
        reasons = [e.status for e in events if e.status.startswith("auto:")]
        assert len(reasons) == 1 and "; Q8_0 (" in reasons[0]
        assert ms.file_gets("tiny-q8_0.gguf") == []  # never downloaded
        header = ms.file_gets("tiny-q2_k.gguf")  # the smallest file's header, one request
        assert [r.headers.get("range") for r in header] == [f"bytes=0-{len(base) - 1}"]
