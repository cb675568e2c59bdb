"""ModelScope as a source: names, pulls against a loopback fake ModelScope, faults, fallback."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import llama_cpp
import pytest

from local_llm_runtime import (
    AuthenticationError,
    ChecksumMismatchError,
    DownloadError,
    HubRef,
    InvalidModelNameError,
    InvalidOptionError,
    ModelLibrary,
    ModelNotFoundError,
    OfflineError,
    QuantizationNotFoundError,
    RuntimeSettings,
    parse_ref,
)
from local_llm_runtime.cli.main import main
from local_llm_runtime.errors import SourceUnreachableError
from local_llm_runtime.store.hub import PullProgress
from local_llm_runtime.store.modelscope import ModelScopeClient
from local_llm_runtime.store.names import parse_name
from tests.support.fake_hub import FakeHub
from tests.support.fake_modelscope import FakeModelScope

REPO = "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF"
Q4 = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
Q8 = "qwen2.5-coder-0.5b-instruct-q8_0.gguf"
NAME = f"modelscope.cn/{REPO}:Q4_K_M"
DEAD = "http://127.0.0.1:9"  # nothing listens: connection refused


@pytest.fixture
def fake_ms(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeModelScope]:
    with FakeModelScope() as ms:
        monkeypatch.setenv("MODELSCOPE_DOMAIN", ms.url)
        yield ms


@pytest.fixture
def ms_repo(fake_ms: FakeModelScope, tiny_gguf_factory: Callable[..., Path]) -> dict[str, Path]:
    files = {Q4: tiny_gguf_factory(seed=1), Q8: tiny_gguf_factory(seed=2)}
    fake_ms.add_repo(REPO, {**files, "README.md": b"# model card\n"})
    return files


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _library() -> ModelLibrary:
    """A library whose ModelScope client does not sleep between attempts."""
    settings = RuntimeSettings.from_env()
    return ModelLibrary(settings, modelscope=ModelScopeClient(settings, sleep=lambda _s: None))


def _store_files(home: Path) -> list[str]:
    blobs = home / "blobs"
    return sorted(p.name for p in blobs.rglob("*") if p.is_file()) if blobs.exists() else []


# ---- names ---------------------------------------------------------------------------------

MS_REFS = [
    ("modelscope.cn/Qwen/X-GGUF:q4_k_m", HubRef("Qwen/X-GGUF", "Q4_K_M", "modelscope")),
    ("modelscope.cn/Qwen/X-GGUF", HubRef("Qwen/X-GGUF", None, "modelscope")),
    ("ModelScope.cn/Qwen/X-GGUF:latest", HubRef("Qwen/X-GGUF", None, "modelscope")),
    ("www.modelscope.cn/Qwen/X-GGUF:Q8_0", HubRef("Qwen/X-GGUF", "Q8_0", "modelscope")),
    ("https://modelscope.cn/Qwen/X-GGUF", HubRef("Qwen/X-GGUF", None, "modelscope")),
    ("https://www.modelscope.cn/models/Qwen/X-GGUF", HubRef("Qwen/X-GGUF", None, "modelscope")),
    ("http://modelscope.cn/models/Qwen/X-GGUF:IQ2_XXS",
     HubRef("Qwen/X-GGUF", "IQ2_XXS", "modelscope")),
    ("hf.co/Qwen/X-GGUF:Q4_K_M", HubRef("Qwen/X-GGUF", "Q4_K_M", "hf")),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), MS_REFS)
def test_modelscope_references_parse(text: str, expected: HubRef) -> None:
    ref = parse_ref(text)
    assert ref == expected
    assert isinstance(ref, HubRef)
    prefix = "modelscope.cn/" if expected.source == "modelscope" else "hf.co/"
    assert ref.with_quant("q5_k_m").key == f"{prefix}Qwen/X-GGUF:Q5_K_M"


MS_MALFORMED = [
    "modelscope.cn/", "modelscope.cn/org", "modelscope.cn/org/", "modelscope.cn//repo",
    "modelscope.cn/org/repo/extra", "modelscope.cn/../repo", "modelscope.cn/org/re..po",
    "modelscope.cn/org/repo:", "modelscope.cn/org/repo:../x", "modelscope.cn/org/repo:Q4/K",
    "https://www.modelscope.cn/models/org/repo/x", "modelscope.cn/org/repo:Q4_K_M:x",
]  # fmt: skip


@pytest.mark.parametrize("text", MS_MALFORMED)
def test_malformed_modelscope_references_raise(text: str) -> None:
    with pytest.raises(InvalidModelNameError, match=r"ModelScope|quantization|Invalid"):
        parse_ref(text)


@pytest.mark.parametrize("text", ["modelscope.cn/x", "www.modelscope.cn/a"])
def test_modelscope_prefix_is_no_plain_name(text: str) -> None:
    with pytest.raises(InvalidModelNameError, match="plain name"):
        parse_name(text)


@pytest.mark.parametrize(
    ("value", "endpoint"),
    [
        (None, "https://www.modelscope.cn"),
        ("www.modelscope.cn", "https://www.modelscope.cn"),
        ("modelscope.ai/", "https://modelscope.ai"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("HTTPS://mirror.example", "HTTPS://mirror.example"),
    ],
)
def test_modelscope_domain_setting(value: str | None, endpoint: str) -> None:
    env = {"MODELSCOPE_DOMAIN": value} if value is not None else {}
    assert RuntimeSettings.from_env(env).modelscope_endpoint == endpoint


def test_source_and_token_settings() -> None:
    settings = RuntimeSettings.from_env(
        {"LOCAL_LLM_SOURCE": " ModelScope ", "MODELSCOPE_API_TOKEN": "t0k"}
    )
    assert settings.source == "modelscope"
    assert settings.modelscope_token is not None and "t0k" not in repr(settings)
    assert RuntimeSettings.from_env({}).source == "hf"
    with pytest.raises(InvalidOptionError, match="LOCAL_LLM_SOURCE"):
        RuntimeSettings.from_env({"LOCAL_LLM_SOURCE": "github"})
    with pytest.raises(InvalidOptionError, match="MODELSCOPE_DOMAIN"):
        RuntimeSettings.from_env({"MODELSCOPE_DOMAIN": "host/path"})


# ---- pull ----------------------------------------------------------------------------------


def test_pull_stores_a_verified_blob_with_progress(
    fake_ms: FakeModelScope, ms_repo: dict[str, Path], isolated_env: dict[str, Path]
) -> None:
    events: list[PullProgress] = []
    record = _library().pull(f"modelscope.cn/{REPO}", progress=events.append)
    sha = _sha(ms_repo[Q4])
    assert record.name == NAME and record.source == "modelscope"
    assert (record.repo_id, record.revision, record.quant) == (REPO, "master", "Q4_K_M")
    assert record.digest == sha and record.verified and record.files[0].repo_path == Q4
    path = ModelLibrary().resolve(f"MODELSCOPE.cn/{REPO}:q4_k_m").path
    assert path == isolated_env["home"] / "blobs" / f"sha256-{sha}"
    assert _store_files(isolated_env["home"]) == [f"sha256-{sha}"]  # no .incomplete left
    assert not list(isolated_env["hf_cache"].rglob("*.gguf"))  # nothing in the HF cache
    statuses = [e.status for e in events]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "writing manifest"
    assert "verifying sha256 digest" in statuses
    pulling = [e for e in events if e.status == "pulling"]
    size = ms_repo[Q4].stat().st_size
    assert all(e.total == size and e.digest == sha and e.file == Q4 for e in pulling)
    done = [e.completed for e in pulling]
    assert done == sorted(done) and done[0] == 0 and done[-1] == size and len(done) >= 3
    assert [r.name for r in ModelLibrary().list()] == [NAME]
    gets = fake_ms.file_gets(Q4)
    assert len(gets) == 1 and gets[0].query["Revision"] == "master"
    listing = [r for r in fake_ms.requests if r.path.endswith("/repo/files")]
    assert listing[0].query == {"Revision": "master", "Recursive": "True"}


def test_offline_afterwards_with_zero_requests(
    fake_ms: FakeModelScope, ms_repo: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _library().pull(NAME)
    fake_ms.reset_requests()
    ModelLibrary().pull(NAME)
    ModelLibrary().resolve(NAME)
    assert main(["show", NAME]) == 0
    assert fake_ms.requests == []
    fake_ms.stop()  # and with the server gone, and offline mode on
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = ModelLibrary().resolve(NAME)
    assert ModelLibrary().pull(NAME).digest == model.sha256 == _sha(ms_repo[Q4])
    llm = llama_cpp.Llama(model_path=str(model.path), n_ctx=64, verbose=False)
    llm.close()
    # a name that was never pulled is a typed offline error, with no request
    with pytest.raises(OfflineError, match="HF_HUB_OFFLINE"):
        ModelLibrary().pull(f"modelscope.cn/{REPO}:Q8_0")


def test_corrupt_bytes_raise_and_store_nothing(
    fake_ms: FakeModelScope, ms_repo: dict[str, Path], isolated_env: dict[str, Path]
) -> None:
    fake_ms.faults.corrupt.add(Q4)
    with pytest.raises(ChecksumMismatchError, match="corrupt") as info:
        _library().pull(NAME)
    assert isinstance(info.value, ValueError)
    assert _store_files(isolated_env["home"]) == []
    assert ModelLibrary().list() == []
    fake_ms.faults.corrupt.clear()
    assert _library().pull(NAME).digest == _sha(ms_repo[Q4])


def test_dropped_connection_resumes_with_a_range_request(
    fake_ms: FakeModelScope, ms_repo: dict[str, Path]
) -> None:
    size = ms_repo[Q4].stat().st_size
    drop = size * 3 // 4
    fake_ms.faults.drop_after[Q4] = [drop]
    assert _library().pull(NAME).digest == _sha(ms_repo[Q4])
    gets = fake_ms.file_gets(Q4)
    assert len(gets) == 2 and "range" not in gets[0].headers
    resumed = int(gets[1].headers["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed <= drop  # resumed, not restarted


def test_interrupted_pull_is_resumed_by_the_next_one(
    fake_ms: FakeModelScope, ms_repo: dict[str, Path], isolated_env: dict[str, Path]
) -> None:
    size = ms_repo[Q4].stat().st_size
    fake_ms.faults.drop_after[Q4] = [size // 4, size // 2, size * 3 // 4]  # every attempt
    with pytest.raises(DownloadError, match="pull again"):
        _library().pull(NAME)
    sha = _sha(ms_repo[Q4])
    partial = isolated_env["home"] / "blobs" / f"sha256-{sha}.incomplete"
    assert 0 < partial.stat().st_size <= size * 3 // 4
    assert ModelLibrary().list() == []
    kept = partial.stat().st_size
    fake_ms.reset_requests()
    assert _library().pull(NAME).digest == sha
    gets = fake_ms.file_gets(Q4)
    assert len(gets) == 1 and gets[0].headers["range"] == f"bytes={kept}-"
    assert not partial.exists()


def test_downloads_follow_the_cdn_redirect_without_the_token(
    fake_ms: FakeModelScope, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_ms.add_repo("me/Private-GGUF", {"private-Q4_K_M.gguf": tiny_gguf}, token="ms-secret-1")
    fake_ms.faults.redirect = True
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", "ms-secret-1")
    _library().pull("modelscope.cn/me/Private-GGUF")
    cdn = [r for r in fake_ms.requests if r.path.startswith("/cdn/")]
    assert len(cdn) == 1
    assert "cookie" not in cdn[0].headers  # httpx drops cookies on redirects


def test_token_is_sent_as_the_sdk_does_and_never_shown(
    fake_ms: FakeModelScope,
    tiny_gguf: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    isolated_env: dict[str, Path],
) -> None:
    secret = "ms-SuperSecretToken-789"
    fake_ms.add_repo("me/Private-GGUF", {"private-Q4_K_M.gguf": tiny_gguf}, token=secret)
    with pytest.raises(AuthenticationError, match="MODELSCOPE_API_TOKEN") as info:
        _library().pull("modelscope.cn/me/Private-GGUF")
    assert isinstance(info.value, PermissionError)
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", "wrong")
    with pytest.raises(AuthenticationError, match="HTTP 403"):
        _library().pull("modelscope.cn/me/Private-GGUF")
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", secret)
    caplog.set_level(logging.DEBUG)
    assert main(["pull", "modelscope.cn/me/Private-GGUF"]) == 0
    assert main(["show", "modelscope.cn/me/Private-GGUF", "--json"]) == 0
    assert main(["list"]) == 0
    out, err = capsys.readouterr()
    assert secret not in out + err + caplog.text
    assert "modelscope.cn/me/Private-GGUF:Q4_K_M" in out
    for path in isolated_env["home"].rglob("*"):
        if path.is_file() and path.stat().st_size < 1_000_000:
            assert secret.encode() not in path.read_bytes()
    cookies = [r.headers.get("cookie") for r in fake_ms.requests]
    assert f"m_session_id={secret}" in cookies


def test_split_gguf_is_pulled_linked_under_shard_names_and_loads(
    fake_ms: FakeModelScope, tiny_gguf_factory: Callable[..., Path], isolated_env: dict[str, Path]
) -> None:
    first = tiny_gguf_factory(name="big-Q4_K_M.gguf", split_max_tensors=6)
    shards = sorted(first.parent.glob("*.gguf"))
    assert len(shards) == 4
    files: dict[str, bytes | Path] = {f"Q4_K_M/{s.name}": s for s in shards}
    files["big-Q8_0-00001-of-00002.gguf"] = b"x"  # an incomplete set of another quant
    fake_ms.add_repo("org/Big-GGUF", files)
    lib = _library()
    model = lib.resolve("modelscope.cn/org/Big-GGUF")
    assert [p.name for p in model.paths] == [s.name for s in shards]
    assert [_sha(p) for p in model.paths] == [_sha(s) for s in shards]
    assert model.record is not None and len(model.record.files) == 4
    llm = llama_cpp.Llama(model_path=str(model.path), n_ctx=64, verbose=False)
    llm.close()
    # removing the name removes the blobs and their shard-named links
    lib.remove("modelscope.cn/org/Big-GGUF")
    assert _store_files(isolated_env["home"]) == []
    assert [p for p in (isolated_env["home"] / "blobs").iterdir()] == []


def test_quantization_selection_and_errors(
    fake_ms: FakeModelScope, ms_repo: dict[str, Path]
) -> None:
    assert _library().pull(f"modelscope.cn/{REPO}:q8_0").digest == _sha(ms_repo[Q8])
    with pytest.raises(QuantizationNotFoundError, match=r"modelscope\.cn/.*Q4_K_M, Q8_0"):
        _library().pull(f"modelscope.cn/{REPO}:IQ2_XXS")
    with pytest.raises(ModelNotFoundError, match="not found on ModelScope"):
        _library().pull("modelscope.cn/nobody/nothing-GGUF")
    with pytest.raises(ModelNotFoundError, match="no revision"):
        ModelScopeClient(RuntimeSettings.from_env()).resolve(REPO, "Q4_K_M", "v9")


def test_listing_without_hash_is_recorded_unverified(
    fake_ms: FakeModelScope, ms_repo: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    fake_ms.faults.omit_sha.add(Q4)
    record = _library().pull(NAME)
    assert record.digest == _sha(ms_repo[Q4]) and not record.verified
    assert main(["show", NAME, "--json"]) == 0
    assert '"verified": false' in capsys.readouterr().out
    assert main(["pull", NAME]) == 0
    assert "ModelScope sent no hash" in capsys.readouterr().out
    assert main(["show", NAME]) == 0
    out = capsys.readouterr().out
    assert f"modelscope.cn/{REPO}" in out and "NO - the source sent no hash" in out


def test_progress_bar_shows_bytes_unless_disabled(
    fake_ms: FakeModelScope,
    ms_repo: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS")
    _library().pull(NAME)
    err = capfd.readouterr().err
    assert "100%" in err and "B/s" in err, err
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    _library().pull(f"modelscope.cn/{REPO}:Q8_0")
    assert capfd.readouterr().err == ""


def test_unreachable_modelscope_is_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSCOPE_DOMAIN", DEAD)
    with pytest.raises(SourceUnreachableError, match="MODELSCOPE_DOMAIN"):
        _library().pull(NAME)


# ---- catalog fallback ----------------------------------------------------------------------


def test_catalog_names_prefer_modelscope_with_local_llm_source(
    fake_ms: FakeModelScope,
    ms_repo: dict[str, Path],
    fake_hub: FakeHub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOCAL_LLM_SOURCE", "modelscope")
    record = _library().pull("qwen2.5-coder:0.5b")
    assert record.source == "modelscope" and record.digest == _sha(ms_repo[Q4])
    assert record.name == "qwen2.5-coder:0.5b"
    assert fake_hub.requests == []  # the Hub was never asked
    fake_ms.reset_requests()
    assert ModelLibrary().resolve("qwen2.5-coder:0.5b").sha256 == record.digest
    assert fake_ms.requests == []


def test_catalog_name_falls_back_to_modelscope_when_the_hub_is_down(
    fake_ms: FakeModelScope,
    ms_repo: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", DEAD)
    events: list[PullProgress] = []
    record = _library().pull("qwen2.5-coder:0.5b", progress=events.append)
    assert record.source == "modelscope" and record.digest == _sha(ms_repo[Q4])
    said = [e.status for e in events if "unreachable" in e.status]
    assert said == [f"hf.co/{REPO} is unreachable; pulling from modelscope.cn/{REPO} instead"]
    assert "unreachable" in caplog.text
    # the CLI and /api/pull go through the same pull: a CLI run says it too
    assert main(["pull", "qwen2.5-coder:0.5b-instruct-q8_0"]) == 0
    model = ModelLibrary().resolve("qwen2.5-coder:0.5b-instruct-q8_0", pull=False)
    assert model.sha256 == _sha(ms_repo[Q8])


def test_qwen2_5_7b_works_where_the_hub_is_unreachable(
    fake_ms: FakeModelScope,
    tiny_gguf_factory: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Qwen's repository splits its Q4_K_M file; ModelScope has the same files
    first = tiny_gguf_factory(name="qwen2.5-7b-instruct-q4_k_m.gguf", split_max_tensors=6)
    shards = sorted(first.parent.glob("*.gguf"))
    fake_ms.add_repo("Qwen/Qwen2.5-7B-Instruct-GGUF", {s.name: s for s in shards})
    monkeypatch.setenv("HF_ENDPOINT", DEAD)
    model = ModelLibrary().resolve("qwen2.5:7b")
    assert [p.name for p in model.paths] == [s.name for s in shards]
    assert model.record is not None and model.record.source == "modelscope"
    llm = llama_cpp.Llama(model_path=str(model.path), n_ctx=64, verbose=False)
    try:
        assert llm.create_completion("hello", max_tokens=2)["usage"]["completion_tokens"] >= 1
    finally:
        llm.close()


def test_no_fallback_without_a_modelscope_repo_or_for_other_errors(
    fake_ms: FakeModelScope,
    ms_repo: dict[str, Path],
    fake_hub: FakeHub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the Hub answers (404): that is not "unreachable", so no fallback
    with pytest.raises(ModelNotFoundError, match="Hub"):
        _library().pull("qwen2.5-coder:0.5b")
    assert fake_ms.requests == []
    # llama3.2 has no ModelScope repository in the catalog: the Hub's error stands
    monkeypatch.setenv("HF_ENDPOINT", DEAD)
    with pytest.raises(SourceUnreachableError, match="HF_ENDPOINT"):
        _library().pull("llama3.2:1b")
    assert fake_ms.requests == []


@pytest.mark.parametrize("source", ["hf", "modelscope"])
def test_both_sources_down_is_one_error_naming_both(
    source: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", DEAD)  # and MODELSCOPE_DOMAIN is dead (conftest)
    monkeypatch.setenv("LOCAL_LLM_SOURCE", source)
    with pytest.raises(SourceUnreachableError) as info:
        _library().pull("qwen2.5:7b")
    assert "HF_ENDPOINT" in str(info.value) and "MODELSCOPE_DOMAIN" in str(info.value)
    assert isinstance(info.value, DownloadError)
    assert main(["pull", "qwen2.5:7b"]) == 1
    err = capsys.readouterr().err
    assert "HF_ENDPOINT" in err and "MODELSCOPE_DOMAIN" in err


def test_modelscope_preferred_but_down_falls_back_to_the_hub(
    fake_hub: FakeHub, tiny_gguf_factory: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = tiny_gguf_factory(seed=3)
    fake_hub.add_repo(REPO, {Q4: blob})
    monkeypatch.setenv("LOCAL_LLM_SOURCE", "modelscope")
    monkeypatch.setenv("MODELSCOPE_DOMAIN", DEAD)
    record = _library().pull("qwen2.5-coder:0.5b")
    assert record.source == "hub" and record.digest == _sha(blob)


def test_remove_keeps_a_blob_another_name_uses(
    fake_ms: FakeModelScope, ms_repo: dict[str, Path], isolated_env: dict[str, Path]
) -> None:
    lib = _library()
    lib.pull(NAME)
    lib.copy(NAME, "mine:1")
    lib.create("imported:1", str(ms_repo[Q4]))  # the same bytes, imported
    lib.remove(NAME)
    lib.remove("mine:1")
    assert _store_files(isolated_env["home"]) == [f"sha256-{_sha(ms_repo[Q4])}"]
    lib.remove("imported:1")
    assert _store_files(isolated_env["home"]) == []


# ---- the CLI and the server go through the same pull ---------------------------------------


def test_cli_pull_list_rm(
    fake_ms: FakeModelScope, ms_repo: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"modelscope.cn/{REPO}:Q8_0"
    assert main(["pull", f"https://www.modelscope.cn/models/{REPO}:q8_0"]) == 0
    out = capsys.readouterr().out
    assert f"verifying sha256 digest {_sha(ms_repo[Q8])[:12]}" in out and "success" in out
    assert main(["list"]) == 0
    assert name in capsys.readouterr().out
    assert main(["rm", name]) == 0
    assert ModelLibrary().list() == []


def test_server_api_pull_streams_modelscope_progress(
    fake_ms: FakeModelScope, ms_repo: dict[str, Path]
) -> None:
    import json

    from starlette.testclient import TestClient

    from tests.support.server import make_app

    with TestClient(make_app(), raise_server_exceptions=False) as client:
        text = client.post("/api/pull", json={"model": NAME}).text
    objs = [json.loads(line) for line in text.splitlines() if line.strip()]
    statuses = [o["status"] for o in objs]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert "verifying sha256 digest" in statuses and "writing manifest" in statuses
    pulling = [o for o in objs if "total" in o]
    assert pulling[-1]["completed"] == ms_repo[Q4].stat().st_size
    assert pulling[0]["digest"] == f"sha256:{_sha(ms_repo[Q4])}"
