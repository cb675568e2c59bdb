"""Names to verified files: Ollama-style refs, the catalog, Hub download, the store, GGUF headers.

Nothing here imports ``llama_cpp``: listing, pulling and describing models
never loads the native library.
"""
