"""Loading never swaps the process-wide sys.stderr, even with loads on several threads."""

from __future__ import annotations

import io
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from local_llm_runtime import ModelLibrary, ModelLoadError
from local_llm_runtime.llama.pool import LoadOptions, ModelPool


class _Recorder(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            return super().write(text)


def _alien_gguf(path: Path) -> Path:
    """A GGUF our header reader accepts but llama.cpp rejects (unknown architecture)."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "no-such-arch")
    writer.add_block_count(1)
    writer.add_context_length(128)
    writer.add_embedding_length(8)
    writer.add_head_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_concurrent_loads_leave_sys_stderr_alone(
    tiny_gguf_factory: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(sys, "stderr", recorder)
    lib = ModelLibrary()
    good = [lib.resolve(str(tiny_gguf_factory(seed=i))) for i in range(4)]
    bad = [lib.resolve(str(_alien_gguf(tmp_path / f"alien-{i}.gguf"))) for i in range(2)]
    start = threading.Barrier(len(good) + len(bad) + 1)
    loading = threading.Event()
    failures: list[BaseException] = []
    reasons: list[str] = []
    written: list[str] = []

    def load(model: object, expect_failure: bool) -> None:
        start.wait()
        try:
            for _ in range(3):
                pool = ModelPool(gpu_available=False)
                try:
                    with pool.lease(model, LoadOptions(num_ctx=64)):  # type: ignore[arg-type]
                        pass
                except ModelLoadError as exc:
                    if not expect_failure:
                        raise
                    reasons.append(str(exc))
                finally:
                    pool.close()
                pool.vocab(model) if not expect_failure else None  # type: ignore[arg-type]
        except BaseException as exc:
            failures.append(exc)

    def writer() -> None:
        start.wait()
        i = 0
        while loading.is_set() or i < 50:
            line = f"writer line {i}\n"
            sys.stderr.write(line)
            written.append(line)
            i += 1
            time.sleep(0.0005)

    threads = [threading.Thread(target=load, args=(m, False)) for m in good]
    threads += [threading.Thread(target=load, args=(m, True)) for m in bad]
    loading.set()
    writer_thread = threading.Thread(target=writer)
    for thread in [*threads, writer_thread]:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    loading.clear()
    writer_thread.join(timeout=60)

    assert failures == []
    assert sys.stderr is recorder
    text = recorder.getvalue()
    lines = set(text.splitlines(keepends=True))
    missing = [line for line in written if line not in lines]
    assert missing == [], f"{len(missing)} of {len(written)} lines written meanwhile were lost"
    assert "Model metadata" not in text and "Guessed chat format" not in text
    assert len(reasons) == 2 * 3
    for reason in reasons:
        assert "no-such-arch" in reason or "architecture" in reason, reason
