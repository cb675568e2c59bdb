"""Pure text around a model: templates, tools, reasoning, streaming filters.

Chat templates (sandboxed), special-token safety, tool schemas and tool-call
syntaxes, JSON-schema grammars, reasoning and streaming text filters. Nothing
here imports ``llama_cpp``: every function works on strings, token ids handed
in by a backend, or JSON-like data.
"""
