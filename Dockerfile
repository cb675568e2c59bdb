# local-llm serve: Ollama's and OpenAI's APIs on port 11434, CPU build.
#
#   docker build -t local-llm .
#   docker run -d -v local-llm:/data -p 11434:11434 --name local-llm local-llm
#   docker exec -it local-llm local-llm pull qwen2.5:0.5b
#
# CUDA image (README, "Serve"):
#   docker build -t local-llm:cuda \
#     --build-arg BASE=nvidia/cuda:12.4.1-devel-ubuntu22.04 \
#     --build-arg CMAKE_ARGS=-DGGML_CUDA=on .
#   docker run -d --gpus=all -v local-llm:/data -p 11434:11434 local-llm:cuda
ARG BASE=python:3.12-slim-bookworm
FROM ${BASE}

# CPU by default; -DGGML_CUDA=on (with an nvidia/cuda -devel base) for NVIDIA GPUs
ARG CMAKE_ARGS="-DGGML_NATIVE=off"
ENV CMAKE_ARGS=${CMAKE_ARGS} \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

# compilers for llama-cpp-python's llama.cpp build; python3 for the nvidia/cuda bases
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake git \
    && (command -v python3 >/dev/null \
        || apt-get install -y --no-install-recommends python3 python3-venv) \
    && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/local-llm
ENV PATH=/opt/local-llm/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY runtime ./runtime
COPY local_llm_integrations ./local_llm_integrations
RUN pip install ".[server]" && rm -rf /src

# non-root; the model store and the Hugging Face cache live on the /data volume
RUN useradd --create-home --uid 1000 local-llm \
    && mkdir -p /data/local-llm /data/huggingface \
    && chown -R local-llm:local-llm /data
ENV LOCAL_LLM_HOME=/data/local-llm \
    HF_HOME=/data/huggingface \
    LOCAL_LLM_HOST=0.0.0.0:11434
VOLUME ["/data"]
USER local-llm
WORKDIR /home/local-llm

EXPOSE 11434
# SIGTERM (docker stop) ends open streams cleanly and unloads the models
STOPSIGNAL SIGTERM
CMD ["local-llm", "serve"]
