# The pipeline's image: workers, scheduler, setup and notebooks.  CPU torch by default; GPU hosts
# build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 (any CUDA wheel index).
FROM python:3.11-slim

ARG TORCH=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

RUN apt-get update && apt-get install -y --no-install-recommends git tini \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --index-url "$TORCH_INDEX" "$TORCH"

# Dependencies first, so code changes do not reinstall them.
COPY pyproject.toml README.md* ./
RUN mkdir -p pipeline schemas populate && touch pipeline/__init__.py schemas/__init__.py populate/__init__.py \
    && pip install -e '.[robustness]' jupyterlab s3fs \
    && rm -rf pipeline schemas populate

COPY pipeline ./pipeline
COPY schemas ./schemas
COPY populate ./populate
COPY benchmarks ./benchmarks

# tini forwards SIGTERM to the worker, which hands its job back and exits (docker stop).
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "-m", "populate", "worker"]
