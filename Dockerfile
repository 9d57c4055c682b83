# strategy-search worker / dashboard image. CPU by default:
#   docker build -t strategy-search:cpu .
# GPU variant (CUDA wheels of the same torch; the host needs the NVIDIA driver and the NVIDIA
# Container Toolkit, the container gets GPUs from docker-compose.yml's gpu-worker service):
#   docker build -t strategy-search:gpu --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
# No credentials are baked in: the storage URL comes from the environment at run time
# (STRATEGY_SEARCH_STORAGE, set by docker-compose.yml from your .env).
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# torch/torchvision first (the big layer), from the CPU or the CUDA index.
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.14.1 torchvision==0.29.1
COPY setup.py setup.cfg README.md ./
COPY search ./search
RUN pip install ".[postgres,grpc,s3]" && useradd --create-home --uid 1000 search

# The working directory: spaces/ (docker-compose.yml mounts yours over it) and whatever the
# commands write (exports, sqlite:///studies.db when used without PostgreSQL).
WORKDIR /work
COPY --chown=search spaces ./spaces
# /artifacts: the kept trials' files when docker-compose.yml mounts its "artifacts" volume there
# (a new named volume takes the owner of the folder it is mounted over).
RUN chown search /work && mkdir /artifacts && chown search /artifacts
USER search
ENTRYPOINT ["strategy-search"]
CMD ["--help"]
