"""The ``local-llm`` command line, shaped like Ollama's."""

from local_llm_runtime.cli.main import main

__all__ = ["main"]
