# The pipeline's image: workers, scheduler, set-up and notebooks.
#
# CPU torch by default.  The GPU image takes torch's CUDA build from its wheel index:
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 \
#                --build-arg GIT_COMMIT=$(git rev-parse --short=12 HEAD) -t v1pipeline-gpu .
# (docker-compose.yml passes both: GPU_TORCH_INDEX and GIT_COMMIT from the environment.)
FROM python:3.11-slim

ARG TORCH=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

RUN apt-get update && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --index-url "$TORCH_INDEX" "$TORCH"

# Dependencies first, so code changes do not reinstall them.  Every extra but `test` (imaging: import
# suite2p / nwb, export nwb; tests/populate/test_deploy.py compares them with pyproject.toml).
# pymysql[rsa] logs in to MySQL 8.4's default caching_sha2_password accounts over connections without TLS.
COPY pyproject.toml README.md ./
RUN mkdir -p pipeline schemas populate && touch pipeline/__init__.py schemas/__init__.py populate/__init__.py \
    && pip install -e '.[robustness,imaging,s3]' 'pymysql[rsa]' jupyterlab \
    && rm -rf pipeline schemas populate

COPY pipeline ./pipeline
COPY schemas ./schemas
COPY populate ./populate
COPY benchmarks ./benchmarks
COPY notebooks ./notebooks

# The image has no .git (see .dockerignore): the commit it was built from is the code version every
# model trained in it records (pipeline.code_version).
ARG GIT_COMMIT=
RUN test -n "$GIT_COMMIT" || { echo "build with --build-arg GIT_COMMIT=\$(git rev-parse --short=12 HEAD)" >&2; exit 1; }
ENV PIPELINE_GIT_COMMIT=$GIT_COMMIT

# tini forwards SIGTERM to the worker, which hands its job back and exits (docker stop).
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "-m", "populate", "worker"]
