"""Write a tiny random-weight llama GGUF with the ``gguf`` package.

The model has an SPM vocabulary with the 256 byte-fallback tokens (so any text
tokenizes), 2 layers, 64 dimensions and a ChatML chat template. llama.cpp loads
it in milliseconds and generates (nonsense) tokens: enough to exercise loading,
streaming, concurrency and error paths without a real model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_TOOLS_JSON = "{% if tools %}{{ TOOLS_OPEN + (tools | tojson) + TOOLS_CLOSE }}{% endif %}"
_CALLS = (
    "{% for call in message.tool_calls %}"
    "{{ CALL_OPEN + ({'name': call.function.name, 'arguments': call.function.arguments}"
    " | tojson) + CALL_CLOSE }}{% endfor %}"
)


def _family_template(
    turn: str, tools_open: str, tools_close: str, call_open: str, call_close: str
) -> str:
    """A template in one family's markup that renders tools, tool calls and tool results."""
    body = (
        _TOOLS_JSON.replace("TOOLS_OPEN", repr(tools_open)).replace(
            "TOOLS_CLOSE", repr(tools_close)
        )
        + "{% for message in messages %}"
        + turn.replace(
            "CONTENT",
            "{% if message.tool_calls %}"
            + _CALLS.replace("CALL_OPEN", repr(call_open)).replace("CALL_CLOSE", repr(call_close))
            + "{% else %}{{ message['content'] }}{% endif %}",
        )
        + "{% endfor %}"
    )
    return body


TEMPLATE_FAMILIES: dict[str, dict[str, object]] = {
    "chatml": {
        "chat_template": _family_template(
            "{{ '<|im_start|>' + message['role'] + '\\n' }}CONTENT{{ '<|im_end|>\\n' }}",
            "<|im_start|>system\n<tools>",
            "</tools><|im_end|>\n",
            "<tool_call>",
            "</tool_call>",
        )
        + "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
        "control_tokens": ("<|endoftext|>",),
        "add_bos": False,
    },
    "llama3": {
        "chat_template": "{{ bos_token }}"
        + _family_template(
            "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
            "CONTENT{{ '<|eot_id|>' }}",
            "<|start_header_id|>system<|end_header_id|>\n\n",
            "<|eot_id|>",
            "",
            "",
        )
        + "{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
        "control_tokens": ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        "bos_text": "<|begin_of_text|>",
        "eos_text": "<|end_of_text|>",
    },
    "mistral": {
        "chat_template": "{{ bos_token }}"
        + _family_template(
            "{% if message['role'] == 'assistant' %}{{ ' ' }}CONTENT{{ eos_token }}"
            "{% else %}{{ '[INST] ' + message['role'] + ': ' }}CONTENT{{ ' [/INST]' }}{% endif %}",
            "[AVAILABLE_TOOLS] ",
            "[/AVAILABLE_TOOLS]",
            "[TOOL_CALLS] ",
            "",
        ),
        "control_tokens": (
            "[INST]",
            "[/INST]",
            "[AVAILABLE_TOOLS]",
            "[/AVAILABLE_TOOLS]",
            "[TOOL_CALLS]",
        ),
    },
    "gemma": {
        "chat_template": "{{ bos_token }}"
        + _family_template(
            "{{ '<start_of_turn>' + message['role'] + '\\n' }}CONTENT{{ '<end_of_turn>\\n' }}",
            "<start_of_turn>system\n",
            "<end_of_turn>\n",
            "",
            "",
        )
        + "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}",
        "control_tokens": ("<start_of_turn>", "<end_of_turn>"),
        "bos_text": "<bos>",
        "eos_text": "<eos>",
    },
}
"""Keyword arguments of :func:`write_tiny_gguf` for a model of each template family:
the family's markup as CONTROL tokens (and its BOS/EOS texts), and a template that
renders tools, tool calls and tool results in that markup."""


def write_tiny_gguf(
    path: Path,
    *,
    seed: int = 0,
    n_embd: int = 64,
    n_layer: int = 2,
    n_ctx: int = 2048,
    chat_template: str | None = CHATML_TEMPLATE,
    name: str = "tiny-llama",
    split_max_tensors: int = 0,
    add_bos: bool = True,
    control_tokens: tuple[str, ...] = (),
    bos_text: str = "<s>",
    eos_text: str = "</s>",
    f16: bool = False,
    extra_words: int = 0,
) -> Path:
    """Write the model to ``path`` and return it.

    ``control_tokens`` are added to the vocabulary as CONTROL tokens (GGUF token
    type 3), like ``<|im_start|>``/``<|im_end|>`` always are; ``bos_text`` and
    ``eos_text`` name the BOS/EOS tokens (see :data:`TEMPLATE_FAMILIES`).

    ``f16`` stores the matrices as float16 (file type 1) and ``extra_words``
    adds that many word tokens: with both and larger dimensions the file is a
    realistically shaped model for speed checks (``benchmarks/gpu_check.py``).

    With ``split_max_tensors`` the model is written as split shards
    (``{stem}-00001-of-0000N.gguf``) and the first shard's path is returned.
    """
    import gguf

    rng = np.random.default_rng(seed)
    words = [
        "▁the",
        "▁a",
        "▁is",
        "▁hello",
        "▁world",
        "▁and",
        "▁of",
        "▁to",
        "<|im_start|>",
        "<|im_end|>",
    ]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["▁"]
    letters += [f"▁w{i}" for i in range(extra_words)]
    extra = [t for t in control_tokens if t not in words]
    tokens = [
        "<unk>",
        bos_text,
        eos_text,
        *[f"<0x{b:02X}>" for b in range(256)],
        *letters,
        *words,
        *extra,
    ]
    types = (
        [2, 3, 3] + [6] * 256 + [1] * (len(letters) + len(words) - 2) + [3, 3] + [3] * len(extra)
    )
    scores = [0.0] * 259 + [-float(i) for i in range(len(letters) + len(words) + len(extra))]
    n_vocab = len(tokens)
    n_ff = n_embd * 2
    n_head = 4

    writer = gguf.GGUFWriter(str(path), "llama", split_max_tensors=split_max_tensors)
    writer.add_name(name)
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_file_type(1 if f16 else 0)
    writer.add_license("apache-2.0")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(add_bos)
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    def weight(*shape: int) -> np.ndarray:
        if f16:  # float32 draws: a big model's weights in seconds
            return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    writer.add_tensor("token_embd.weight", weight(n_vocab, n_embd))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    writer.add_tensor("output.weight", weight(n_vocab, n_embd))
    for i in range(n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for t in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{t}.weight", weight(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(n_embd, n_ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if split_max_tensors:
        return sorted(path.parent.glob(f"{path.stem}-00001-of-*.gguf"))[0]
    return path


LORA_TARGETS = ("attn_q", "attn_k", "attn_v", "attn_output")
"""The tiny model's weights a generated adapter adapts (each ``n_embd x n_embd``)."""


def write_tiny_lora_gguf(
    path: Path,
    *,
    seed: int = 1,
    n_embd: int = 64,
    n_layer: int = 2,
    rank: int = 4,
    alpha: float = 8.0,
    architecture: str = "llama",
    zero_b: bool = False,
    targets: tuple[str, ...] = LORA_TARGETS,
    general_type: str = "adapter",
    adapter_type: str = "lora",
) -> Path:
    """Write a LoRA adapter GGUF for :func:`write_tiny_gguf`'s model, as llama.cpp's
    ``convert_lora_to_gguf.py`` writes one, and return ``path``.

    Metadata: ``general.type = "adapter"``, ``adapter.type = "lora"``,
    ``adapter.lora.alpha`` and the base's ``general.architecture``. Tensors, f32:
    ``blk.N.{target}.weight.lora_a`` with numpy shape ``(rank, n_in)`` (PEFT's
    ``lora_A``; ggml ``ne = [n_in, rank]``) and ``.lora_b`` with ``(n_out, rank)``
    (``lora_B``; ``ne = [rank, n_out]``): the shapes ``llama_adapter_lora_init`` checks.
    llama.cpp adds ``alpha / rank * B(A x)`` to each adapted product.

    ``zero_b`` writes B as zeros: a valid adapter that changes nothing (as a fresh PEFT
    adapter). ``architecture``, ``general_type`` and ``adapter_type`` write wrong files
    for the validation tests; ``n_embd``/``n_layer`` must match the base model's.
    """
    import gguf

    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_type(general_type)
    writer.add_name("tiny-lora")
    writer.add_file_type(0)
    writer.add_string(gguf.Keys.Adapter.TYPE, adapter_type)
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for i in range(n_layer):
        for target in targets:
            a = (rng.standard_normal((rank, n_embd)) * 0.5).astype(np.float32)
            b = (rng.standard_normal((n_embd, rank)) * 0.5).astype(np.float32)
            if zero_b:
                b[:] = 0.0
            writer.add_tensor(f"blk.{i}.{target}.weight.lora_a", a)
            writer.add_tensor(f"blk.{i}.{target}.weight.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
