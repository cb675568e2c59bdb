"""Read a GGUF file's header -- metadata and tensor shapes -- without loading weights.

The reader maps the file and walks the key/value section and the tensor-info
section only; tensor data is never touched, so ``show`` on a 40 GB model is as
fast as on a tiny one. Every length read from the file is checked against the
file size first, so a truncated or hostile file raises
:class:`~local_llm_runtime.errors.InvalidModelFileError` instead of crashing.

A header is parsed once per file version: :func:`read_gguf_info` keeps the
last results keyed by path, size, modification time and inode, so the several
readers of one load (validation, context length, GPU offload plan, ``show``)
share one walk of the vocabulary.
"""

from __future__ import annotations

import functools
import math
import mmap
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local_llm_runtime.errors import InvalidModelFileError
from local_llm_runtime.prompt.families import traits_for

__all__ = ["FILE_TYPES", "GGUFInfo", "read_gguf_info", "summarize"]

GGUF_MAGIC = b"GGUF"
#: ``general.file_type`` values (llama.cpp's ``llama_ftype``) and their usual names.
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
    22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
    28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
    38: "MXFP4",
}  # fmt: skip
_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4),
    6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8),
}  # fmt: skip
#: ggml tensor types: (elements per block, bytes per block).
_TYPE_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    9: (32, 36), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210),
    15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18),
    21: (256, 110), 22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4),
    27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66),
    39: (32, 17),
}  # fmt: skip
_STRING, _ARRAY = 8, 9
_KEEP_ARRAY = 64  # arrays longer than this are summarized by their length only
_MAX_COUNT = 1 << 32
_MAX_DEPTH = 4
"""Deepest nesting of arrays accepted (llama.cpp itself reads no array of arrays)."""
_MIN_ITEM_BYTES = {_STRING: 8, _ARRAY: 12}
"""Smallest encoding of a string (its u64 length) and of an array (u32 type, u64 count)."""
_U64 = struct.Struct("<Q")
_CACHED_HEADERS = 32
"""File versions whose parsed header :func:`read_gguf_info` keeps."""


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF header says about one file."""

    path: Path
    version: int
    metadata: dict[str, Any]
    """Key/value metadata; long arrays (the vocabulary) are replaced by their length."""
    tensor_count: int
    parameter_count: int
    """Elements over all tensors of this file (one shard of a split model)."""
    tensor_types: dict[int, int] = field(default_factory=dict)
    """How many tensors use each ggml type."""

    # Instances are shared by every reader of the same file version (see
    # read_gguf_info): treat ``metadata`` and ``tensor_types`` as read-only.


class _Reader:
    def __init__(self, buf: mmap.mmap | bytes, path: Path) -> None:
        self.buf = buf
        self.pos = 0
        self.path = path

    def fail(self, what: str) -> InvalidModelFileError:
        return InvalidModelFileError(
            f"{self.path} is not a valid GGUF file ({what}); re-download it or check the path."
        )

    def take(self, size: int) -> int:
        start = self.pos
        if size < 0 or start + size > len(self.buf):
            raise self.fail("truncated")
        self.pos = start + size
        return start

    def scalar(self, kind: int) -> Any:
        fmt, size = _SCALARS[kind]
        return struct.unpack_from(fmt, self.buf, self.take(size))[0]

    def u32(self) -> int:
        return int(self.scalar(4))

    def u64(self) -> int:
        return int(self.scalar(10))

    def string(self) -> str:
        length = self.u64()
        start = self.take(length)
        return bytes(self.buf[start : start + length]).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        self.take(self.u64())

    def skip_strings(self, count: int) -> None:
        """Skip ``count`` strings (the vocabulary: 150k for Qwen) in one tight loop.

        Only the final position is checked against the file size: a length that
        points past the end makes the next length read fail, or the final check.
        """
        buf, pos, unpack = self.buf, self.pos, _U64.unpack_from
        try:
            for _ in range(count):
                pos += 8 + unpack(buf, pos)[0]
        except (struct.error, OverflowError):
            raise self.fail("truncated") from None
        if pos > len(buf):
            raise self.fail("truncated")
        self.pos = pos

    def value(self, kind: int, depth: int = 0) -> Any:
        if kind in _SCALARS:
            return self.scalar(kind)
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            if depth >= _MAX_DEPTH:
                raise self.fail(f"arrays nested more than {_MAX_DEPTH} deep")
            item_kind = self.u32()
            count = self.u64()
            self.check_count(item_kind, count)
            if count <= _KEEP_ARRAY:
                return [self.value(item_kind, depth + 1) for _ in range(count)]
            self.skip_values(item_kind, count, depth + 1)
            return {"array_of": item_kind, "length": count}
        raise self.fail(f"unknown value type {kind}")

    def check_count(self, item_kind: int, count: int) -> None:
        """Reject an array whose items cannot fit in the rest of the file (before any loop)."""
        if item_kind in _SCALARS:
            item_bytes = _SCALARS[item_kind][1]
        elif item_kind in _MIN_ITEM_BYTES:
            item_bytes = _MIN_ITEM_BYTES[item_kind]
        else:
            raise self.fail(f"unknown value type {item_kind}")
        if count > _MAX_COUNT or count * item_bytes > len(self.buf) - self.pos:
            raise self.fail(f"array of {count} items is longer than the file")

    def skip_values(self, kind: int, count: int, depth: int) -> None:
        if kind in _SCALARS:
            self.take(_SCALARS[kind][1] * count)
        elif kind == _STRING:
            self.skip_strings(count)
        else:
            for _ in range(count):
                self.value(kind, depth)


def read_gguf_info(path: str | Path) -> GGUFInfo:
    """Read the header of one GGUF file, parsed once per file version.

    The result is cached by path, size, modification time (ns) and inode, so a
    file replaced or rewritten in place is parsed again; the returned object is
    shared between callers and must not be modified.

    Args:
        path: The file (for a split model, any one shard).

    Returns:
        The metadata and tensor summary of that file.

    Raises:
        InvalidModelFileError: If the file is missing, empty, truncated or not GGUF.
    """
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise InvalidModelFileError(f"{path} does not exist.") from None
    except OSError:
        return _read(path)  # not stat-able: let the read raise the precise error
    return _read_version(path, stat.st_size, stat.st_mtime_ns, stat.st_ino)


@functools.lru_cache(maxsize=_CACHED_HEADERS)
def _read_version(path: Path, size: int, mtime_ns: int, inode: int) -> GGUFInfo:
    del size, mtime_ns, inode  # the cache key: a new version of the file is parsed again
    return _read(path)


def _read(path: Path) -> GGUFInfo:
    try:
        with path.open("rb") as handle:
            size = path.stat().st_size
            if size < 24:
                raise InvalidModelFileError(
                    f"{path} is not a valid GGUF file ({size} bytes); re-download it."
                )
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(_Reader(buf, path))
    except FileNotFoundError:
        raise InvalidModelFileError(f"{path} does not exist.") from None
    except IsADirectoryError:
        raise InvalidModelFileError(f"{path} is a directory, not a GGUF file.") from None
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, InvalidModelFileError):
            raise
        raise InvalidModelFileError(f"{path} is not a valid GGUF file ({exc}).") from None


def _header(reader: _Reader) -> tuple[int, int, dict[str, Any]]:
    """After the magic bytes: ``(version, tensor count, metadata)``."""
    reader.take(4)
    version = reader.u32()
    if version not in (2, 3):
        raise reader.fail(f"unsupported GGUF version {version}")
    tensor_count = reader.u64()
    kv_count = reader.u64()
    if tensor_count > 1 << 24 or kv_count > 1 << 20:
        raise reader.fail("implausible header counts")
    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = reader.string()
        metadata[key] = reader.value(reader.u32())
    return version, tensor_count, metadata


def _parse(reader: _Reader) -> GGUFInfo:
    if bytes(reader.buf[:4]) != GGUF_MAGIC:
        raise reader.fail("wrong magic bytes")
    version, tensor_count, metadata = _header(reader)
    parameters = 0
    types: dict[int, int] = {}
    data_end = 0
    for _ in range(tensor_count):
        reader.skip_string()
        n_dims = reader.u32()
        if n_dims > 8:
            raise reader.fail("tensor with too many dimensions")
        dims = [reader.u64() for _ in range(n_dims)]
        kind = reader.u32()
        offset = reader.u64()
        elements = math.prod(dims)
        block, block_bytes = _TYPE_SIZES.get(kind, (1, 0))
        data_end = max(data_end, offset + -(-elements // block) * block_bytes)
        parameters += elements
        types[kind] = types.get(kind, 0) + 1
    alignment = metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0:
        raise reader.fail("invalid alignment")
    data_start = -(-reader.pos // alignment) * alignment
    if tensor_count and data_start + data_end > len(reader.buf):
        raise reader.fail("truncated: tensor data ends past the end of the file")
    return GGUFInfo(
        path=reader.path,
        version=version,
        metadata=metadata,
        tensor_count=tensor_count,
        parameter_count=parameters,
        tensor_types=types,
    )


def _human_count(count: int) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f}{unit}"
    return str(count)


def summarize(infos: Sequence[GGUFInfo]) -> dict[str, Any]:
    """Summarize the header(s) of a model for ``show``.

    Args:
        infos: One entry per file; several for a split model.

    Returns:
        A JSON-ready mapping: architecture, parameters, quantization, context and
        embedding lengths, chat template presence, license and more.
    """
    meta = infos[0].metadata
    arch = str(meta.get("general.architecture", "unknown"))
    file_type = meta.get("general.file_type")
    params = sum(info.parameter_count for info in infos)
    template = meta.get("tokenizer.chat_template")
    pooling = meta.get(f"{arch}.pooling_type")
    text = template if isinstance(template, str) else ""
    has_template = bool(text)
    embedding = isinstance(pooling, int) and pooling > 0
    capabilities = ["embedding"] if embedding else ["completion"]
    rendered_with = text
    if not text and not embedding:
        # A chat model without a template is rendered with ChatML, which has tools.
        # (Imported here: chat_template imports jinja2, which a header does not need.)
        from local_llm_runtime.prompt.chat_template import CHATML_TEMPLATE

        rendered_with = CHATML_TEMPLATE
    if "tools" in rendered_with:
        capabilities.append("tools")
    if traits_for(meta, template=text).think_tags is not None:
        capabilities.append("thinking")
    return {
        "architecture": arch,
        "name": meta.get("general.name"),
        "parameters": params,
        "parameters_human": _human_count(params),
        "quantization": FILE_TYPES.get(file_type, f"type {file_type}")
        if isinstance(file_type, int)
        else None,
        "context_length": meta.get(f"{arch}.context_length"),
        "embedding_length": meta.get(f"{arch}.embedding_length"),
        "block_count": meta.get(f"{arch}.block_count"),
        "head_count": meta.get(f"{arch}.attention.head_count"),
        "head_count_kv": meta.get(f"{arch}.attention.head_count_kv"),
        "pooling_type": pooling,
        "chat_template": has_template,
        "capabilities": capabilities,
        "license": meta.get("general.license"),
        "gguf_version": infos[0].version,
        "split_count": meta.get("split.count", 1 if len(infos) == 1 else len(infos)),
    }


class _PrefixEnded(InvalidModelFileError):
    """The bytes given end before the metadata does (more are needed)."""


class _PrefixReader(_Reader):
    def fail(self, what: str) -> InvalidModelFileError:
        if what == "truncated" or "longer than the file" in what:
            return _PrefixEnded(what)
        return super().fail(what)


def read_gguf_metadata_prefix(data: bytes, name: str) -> dict[str, Any] | None:
    """The key/value metadata of a GGUF file from the first bytes of it.

    For choosing among remote files without downloading them (``:auto``
    quantization): the metadata section sits at the start of the file, before the
    tensor infos and the weights; its size is dominated by the vocabulary (a few MB).

    Args:
        data: The first bytes of the file (any length).
        name: The file's name, for error messages.

    Returns:
        The metadata (long arrays summarized by their length, as
        :attr:`GGUFInfo.metadata`), or ``None`` when ``data`` ends before the metadata
        does (read more bytes and call again).

    Raises:
        InvalidModelFileError: If the bytes are not the start of a GGUF file.
    """
    reader = _PrefixReader(data, Path(name))
    try:
        if len(data) < 4:
            return None
        if bytes(data[:4]) != GGUF_MAGIC:
            raise reader.fail("wrong magic bytes")
        _, _, metadata = _header(reader)
    except _PrefixEnded:
        return None
    except (struct.error, UnicodeDecodeError) as exc:
        raise InvalidModelFileError(f"{name} is not a valid GGUF file ({exc}).") from None
    return metadata
