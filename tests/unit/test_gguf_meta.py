"""The GGUF header reader: real tiny files, and broken files rejected with a typed error."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from local_llm_runtime import InvalidModelFileError
from local_llm_runtime.store.gguf_meta import read_gguf_info, summarize


def test_reads_tiny_model(tiny_gguf: Path) -> None:
    info = read_gguf_info(tiny_gguf)
    summary = summarize([info])
    assert summary["architecture"] == "llama"
    assert summary["context_length"] == 2048
    assert summary["embedding_length"] == 64
    assert summary["block_count"] == 2
    assert summary["quantization"] == "F32"
    assert summary["chat_template"] is True
    assert summary["license"] == "apache-2.0"
    assert isinstance(info.metadata["tokenizer.ggml.tokens"], dict)  # long array summarized
    n_vocab = info.metadata["tokenizer.ggml.tokens"]["length"]
    # 2 embedding matrices + per layer (4 attn 64x64, 3 ffn 64x128, 2 norms) + output norm
    expected = 2 * n_vocab * 64 + 2 * (4 * 64 * 64 + 3 * 64 * 128 + 2 * 64) + 64
    assert summary["parameters"] == expected


def test_split_model_counts_all_shards(
    tiny_gguf_factory: Callable[..., Path], tiny_gguf: Path
) -> None:
    first = tiny_gguf_factory(split_max_tensors=6)
    shards = sorted(first.parent.glob("*.gguf"))
    assert len(shards) > 1
    total = summarize([read_gguf_info(s) for s in shards])["parameters"]
    assert total == read_gguf_info(tiny_gguf).parameter_count


def _corrupt_variants(good: bytes) -> dict[str, bytes]:
    huge = struct.pack("<Q", 1 << 60)
    return {
        "empty": b"",
        "text": b"this is not a model at all, just some text\n" * 4,
        "wrong-magic": b"GGUX" + good[4:],
        "bad-version": good[:4] + struct.pack("<I", 99) + good[8:],
        "truncated-header": good[:40],
        "truncated-half": good[: len(good) // 50],
        "huge-kv-count": good[:16] + huge + good[24:],
        "huge-string": good[:24] + huge + good[32:],
    }


@pytest.mark.parametrize(
    "variant",
    ["empty", "text", "wrong-magic", "bad-version", "truncated-header", "truncated-half",
     "huge-kv-count", "huge-string"],
)  # fmt: skip
def test_broken_files_raise_typed_error(variant: str, tiny_gguf: Path, tmp_path: Path) -> None:
    path = tmp_path / f"{variant}.gguf"
    path.write_bytes(_corrupt_variants(tiny_gguf.read_bytes())[variant])
    with pytest.raises(InvalidModelFileError) as info:
        read_gguf_info(path)
    assert isinstance(info.value, ValueError)
    assert str(path) in str(info.value)


def test_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelFileError):
        read_gguf_info(tmp_path / "nope.gguf")
    with pytest.raises(InvalidModelFileError):
        read_gguf_info(tmp_path)


def _header(*kv: bytes) -> bytes:
    """A GGUF v3 header with no tensors and the given encoded key/value pairs."""
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(kv)) + b"".join(kv)


def _key(name: str) -> bytes:
    raw = name.encode()
    return struct.pack("<Q", len(raw)) + raw


def _nested_arrays(depth: int) -> bytes:
    # value type ARRAY (9), then `depth` array headers each holding one array, innermost empty u8
    one_level = struct.pack("<IQ", 9, 1)
    return struct.pack("<I", 9) + one_level * (depth - 1) + struct.pack("<IQ", 0, 0)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (_key("deep") + _nested_arrays(10_000), "nested"),
        (_key("deep") + _nested_arrays(1_000_000), "nested"),
        (_key("huge") + struct.pack("<IIQ", 9, 0, 1 << 40), "longer than the file"),
        (_key("huge") + struct.pack("<IIQ", 9, 8, (1 << 32) - 1), "longer than the file"),
        (_key("huge") + struct.pack("<IIQ", 9, 9, 1 << 31) + b"\0" * 64, "longer than the file"),
        (_key("odd") + struct.pack("<IIQ", 9, 77, 3), "unknown value type 77"),
    ],
    ids=["nest-10k", "nest-1m", "u8-2^40", "str-2^32", "array-2^31", "unknown-item"],
)
def test_hostile_arrays_are_invalid_files_not_crashes(
    tmp_path: Path, payload: bytes, reason: str
) -> None:
    path = tmp_path / "hostile.gguf"
    path.write_bytes(_header(payload))
    with pytest.raises(InvalidModelFileError, match=reason):
        read_gguf_info(path)


def test_shallow_nested_arrays_still_read(tmp_path: Path) -> None:
    path = tmp_path / "nested.gguf"
    path.write_bytes(_header(_key("pair") + _nested_arrays(3)))
    assert read_gguf_info(path).metadata["pair"] == [[[]]]
