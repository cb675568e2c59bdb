"""LoRA adapter GGUFs (a Modelfile's ``ADAPTER``): checked against the base model before import.

llama.cpp loads a LoRA adapter written by its ``convert_lora_to_gguf.py``:
``general.type = "adapter"``, ``adapter.type = "lora"``, ``adapter.lora.alpha``,
``general.architecture`` that of the base model, and for each adapted weight
``W`` (``blk.N.attn_q.weight``, ...) a pair ``W.lora_a`` (ggml shape
``[n_in, rank]``) and ``W.lora_b`` (``[rank, n_out]``); ``token_embd.weight``'s pair
is stored transposed. At load it adds ``scale * alpha / rank * B(A x)`` to every
product with ``W`` (``src/llama-adapter.cpp``, ``llama_adapter_lora_init``).

:func:`check_lora_adapter` applies llama.cpp's own checks -- type, architecture,
tensor pairs and shapes against the base model's tensors -- when the adapter is
added with ``create``, so a wrong file is a one-line error naming what to do
instead of a failed load on the first request.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from pathlib import Path

from local_llm_runtime.errors import InvalidAdapterError, InvalidModelFileError
from local_llm_runtime.store.gguf_meta import _Reader, read_gguf_info

__all__ = ["check_lora_adapter", "tensor_shapes"]

_HOW = "ADAPTER takes a LoRA adapter GGUF converted with llama.cpp's convert_lora_to_gguf.py"


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The name and ggml shape (``ne``: innermost first) of every tensor in one GGUF file.

    Args:
        path: A GGUF file (one shard of a split model).

    Raises:
        InvalidModelFileError: The file is not a readable GGUF.
    """
    read_gguf_info(path)  # typed errors for a missing, truncated or non-GGUF file
    try:
        with (
            path.open("rb") as handle,
            mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf,
        ):
            reader = _Reader(buf, path)
            reader.take(8)  # magic and version (checked by read_gguf_info)
            tensor_count = reader.u64()
            kv_count = reader.u64()
            for _ in range(kv_count):
                reader.skip_string()
                reader.value(reader.u32())
            shapes: dict[str, tuple[int, ...]] = {}
            for _ in range(tensor_count):
                name = reader.string()
                n_dims = reader.u32()
                if n_dims > 8:
                    raise reader.fail("tensor with too many dimensions")
                shapes[name] = tuple(reader.u64() for _ in range(n_dims))
                reader.take(12)  # ggml type (u32) and data offset (u64)
            return shapes
    except OSError as exc:
        raise InvalidModelFileError(f"Cannot read {path}: {exc.strerror or exc}.") from None


def check_lora_adapter(path: Path, base_paths: Sequence[Path], *, base_name: str) -> None:
    """Check that ``path`` is a LoRA adapter GGUF that llama.cpp can apply to the base model.

    The same checks as llama.cpp's ``llama_adapter_lora_init``: ``general.type`` is
    ``adapter``, ``adapter.type`` is ``lora``, the architecture is the base model's,
    every ``.lora_a`` has its ``.lora_b``, and each pair's shapes fit the base tensor.

    Args:
        path: The adapter file.
        base_paths: The base model's GGUF file(s), shards in order.
        base_name: The base model's name, for messages.

    Raises:
        InvalidAdapterError: ``path`` is not a readable GGUF (a PEFT folder, say), not a
            LoRA adapter, or not one for this base model (the message says which and what
            to do); a subclass of ``InvalidModelFileError``.
    """
    if path.is_dir() or path.suffix.lower() in (".safetensors", ".bin"):
        raise InvalidAdapterError(
            f"{path} is not a GGUF file (a PEFT adapter?); convert it with llama.cpp's "
            "convert_lora_to_gguf.py --base <the base model's Hugging Face folder>, then give "
            "the .gguf it writes."
        )
    try:
        meta = read_gguf_info(path).metadata
    except InvalidModelFileError as exc:
        raise InvalidAdapterError(f"{str(exc).rstrip('.')}; {_HOW}.") from None
    kind = meta.get("general.type")
    if kind != "adapter":
        what = "a model" if kind in (None, "model") else f"of general.type {kind!r}"
        raise InvalidAdapterError(
            f"{path} is {what}, not a LoRA adapter; {_HOW} (a model file goes in FROM)."
        )
    adapter_type = meta.get("adapter.type")
    if adapter_type != "lora":
        raise InvalidAdapterError(
            f"{path} is an adapter of type {adapter_type!r}, not 'lora'; {_HOW}."
        )
    base_meta = read_gguf_info(base_paths[0]).metadata
    arch, base_arch = meta.get("general.architecture"), base_meta.get("general.architecture")
    if arch != base_arch:
        raise InvalidAdapterError(
            f"{path} is a LoRA adapter for {arch!r} models but {base_name} is a {base_arch!r} "
            "model; use an adapter trained on this base model, or FROM the model it was "
            "trained on."
        )
    _check_tensors(path, tensor_shapes(path), base_paths, base_name)


def _check_tensors(
    path: Path,
    shapes: dict[str, tuple[int, ...]],
    base_paths: Sequence[Path],
    base_name: str,
) -> None:
    pairs: dict[str, dict[str, tuple[int, ...]]] = {}
    for name, shape in shapes.items():
        if name.endswith((".lora_a", ".lora_b")):
            pairs.setdefault(name[:-7], {})[name[-1]] = shape
        elif not name.endswith("_norm.weight"):  # llama.cpp skips norms, refuses the rest
            raise InvalidAdapterError(
                f"{path}: tensor {name!r} is not a LoRA tensor (.lora_a/.lora_b); {_HOW}."
            )
    if not pairs:
        raise InvalidAdapterError(f"{path} holds no LoRA tensors; {_HOW}.")
    base: dict[str, tuple[int, ...]] = {}
    for shard in base_paths:
        base.update(tensor_shapes(shard))
    other_model = (
        "the adapter was made for another model; use FROM with the model it was trained on"
    )
    for name, pair in sorted(pairs.items()):
        if "a" not in pair or "b" not in pair:
            missing = "lora_b" if "a" in pair else "lora_a"
            raise InvalidAdapterError(f"{path}: {name}.{missing} is missing; {_HOW}.")
        target = base.get(name)
        if target is None:
            raise InvalidAdapterError(f"{path}: {base_name} has no tensor {name!r}; {other_model}.")
        a, b = pair["a"], pair["b"]
        if len(a) < 2 or len(b) < 2 or len(target) < 2:
            fits = False
        elif name.endswith("token_embd.weight"):  # stored transposed (llm_build_inp_embd)
            fits = target[0] == b[1] and target[1] == a[1]
        else:
            fits = target[0] == a[0] and target[1] == b[1] and a[1] == b[0]
        if not fits:
            raise InvalidAdapterError(
                f"{path}: {name} is {list(target)} in {base_name} but the adapter's pair is "
                f"lora_a {list(a)}, lora_b {list(b)}; {other_model}."
            )
