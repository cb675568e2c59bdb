"""Structured extraction with LlamaIndex ``structured_predict``, fully local.

The pydantic model's JSON schema becomes a llama.cpp grammar, so the model can
only write JSON that validates: no retries, no output parsing errors.

Usage::

    python examples/llama_index_structured.py [MODEL] [TEXT]

``MODEL`` (or ``$LOCAL_LLM_MODEL``) defaults to ``qwen2.5-coder:0.5b``.
"""

from __future__ import annotations

import os
import sys

from llama_index.core.prompts import PromptTemplate
from pydantic import BaseModel, Field

from local_llm_integrations.llama_index import LocalLLM

MODEL = (
    sys.argv[1] if len(sys.argv) > 1 else os.environ.get("LOCAL_LLM_MODEL", "qwen2.5-coder:0.5b")
)
TEXT = (
    sys.argv[2]
    if len(sys.argv) > 2
    else "Invoice 2024-117 from Northwind Traders, dated 3 March 2024: "
    "12 boxes of green tea at 4.50 each, total 54.00 EUR."
)


class Invoice(BaseModel):
    """An invoice extracted from text."""

    number: str = Field(description="The invoice number", max_length=20)
    vendor: str = Field(description="Who issued the invoice", max_length=60)
    date: str = Field(description="The invoice date", max_length=30)
    total: float = Field(description="The total amount")
    currency: str = Field(description="Three-letter currency code", max_length=3)


def main() -> None:
    llm = LocalLLM(model=MODEL, temperature=0, num_predict=160)
    prompt = PromptTemplate("Extract the invoice details from this text:\n{text}")
    invoice = llm.structured_predict(Invoice, prompt, text=TEXT)
    print(invoice.model_dump_json(indent=2))

    # The same, as a structured LLM inside any LlamaIndex component:
    structured = llm.as_structured_llm(Invoice)
    print(structured.complete(f"Extract the invoice details from this text:\n{TEXT}").raw)


if __name__ == "__main__":
    main()
