"""The in-process backend: llama.cpp through llama-cpp-python.

The only package that imports ``llama_cpp``: the engine, the model pool and
loader, GPU offload, sampling, continuous batching (slots) and embeddings.
"""
