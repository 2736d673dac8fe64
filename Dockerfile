# syntax=docker/dockerfile:1
# Two images from one file (no secrets in either: credentials come from Kubernetes Secrets at run time).
#
#   The pipeline image: every KFP component, the Trainer v2 TrainJob nodes and the `geogan` CLI.
#     docker build --build-arg GIT_COMMIT=$(git rev-parse HEAD) -t ghcr.io/geogan/geogan-pipeline:0.1.0 .
#   The MLflow tracking server of k8s/ (PostgreSQL backend, S3 artefacts):
#     docker build --target mlflow-server -t ghcr.io/geogan/geogan-mlflow:0.1.0 .
#
# Both install from requirements.lock (pinned); tests/test_dockerfile.py checks the pins agree.

# ---------------------------------------------------------------- MLflow tracking server
FROM python:3.11.7-slim-bookworm AS mlflow-server

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.lock /tmp/requirements.lock
# mlflow and boto3 are pinned by the lock (-c); the PostgreSQL driver and Flask-WTF (CSRF for the
# basic-auth app, `mlflow[auth]`) are what the lock does not need.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir -c /tmp/requirements.lock mlflow boto3 psycopg2-binary==2.9.13 \
        Flask-WTF==1.3.0 WTForms==3.3.2 \
    && rm /tmp/requirements.lock \
    && useradd --create-home --uid 1000 --shell /usr/sbin/nologin mlflow
USER 1000:1000
WORKDIR /home/mlflow
EXPOSE 5000
ENTRYPOINT ["mlflow", "server"]
CMD ["--host", "0.0.0.0", "--port", "5000"]

# ---------------------------------------------------------------- the pipeline image (default target)
FROM pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime AS pipeline

# The commit the image is built from (.git is not copied in): an OCI label for registries and
# scanners, and GEOGAN_GIT_COMMIT for the runs' git_commit tag on the cluster.
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="geogan-pipeline" \
      org.opencontainers.image.description="GeoGAN training pipeline: DVC stages, KFP components, Trainer v2 TrainJob nodes" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.revision="${GIT_COMMIT}"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# The lock was made on Python 3.11: fail the build here, not at import time, if the base differs.
RUN python -c "import sys; assert sys.version_info[:2] == (3, 11), f'base image has Python {sys.version}'"

WORKDIR /opt/geogan
# Dependencies first (a layer that changes only with the lock and pyproject.toml): exactly what the
# pods run, the library's dependencies and the `pipeline` extra (no test tools), at the lock's pins.
# torch is already in the base at the same version, so pip keeps it; the project follows without deps.
COPY requirements.lock pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['pipeline']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -c requirements.lock -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY README.md ./
COPY geogan ./geogan
COPY components ./components
COPY pipelines ./pipelines
RUN pip install --no-cache-dir --no-deps . \
    && pip check \
    && geogan --help > /dev/null

# Non-root. KFP >= 2.2 mounts writable emptyDirs at /gcs, /minio, /s3 for its launcher.
RUN useradd --create-home --uid 1000 --shell /bin/bash geogan \
    && mkdir -p /workspace && chown 1000:1000 /workspace
ENV HOME=/home/geogan GEOGAN_GIT_COMMIT=${GIT_COMMIT}
USER 1000:1000
WORKDIR /workspace
ENTRYPOINT ["geogan"]
CMD ["--help"]
