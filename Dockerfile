# syntax=docker/dockerfile:1.7
#
# pass-status consumer image.
#
#   DOCKER_BUILDKIT=1 docker build -t pass-status:dev --build-arg VERSION=0.1.0 \
#       --build-arg REVISION=$(git rev-parse HEAD) .
#
# The builder stage installs the exact dependency set of uv.lock (no dev group) and the
# project itself (not editable, so the JSON Schemas ship inside the package as
# consumer/_schemas) into /app/.venv, following uv's Docker guide (cache and bind mounts,
# --locked). scripts/rehearse_image_install.sh runs the same install commands in a clean
# virtual environment in CI (there is no container engine there). The final stage holds only
# the Python runtime and that virtual environment, runs as the numeric non-root user 10001, and needs no writable path
# but /tmp (the Helm chart mounts an emptyDir there and sets readOnlyRootFilesystem).
#
# Every dependency has a binary wheel for CPython 3.11 on manylinux, so no compiler is
# installed in either stage. Both stages use the same base (BASE_IMAGE): the venv's
# interpreter is a symlink to /usr/local/bin/python3.11 of the base image.
#
# The base is pinned by digest (what the builder pulls; a tag can be re-pushed) with its tag
# beside it (what a person reads). The digest is the multi-architecture index of
# docker.io/library/python:3.11.14-slim-bookworm; docs/release.md says where it came from and
# how to refresh it. scripts/release.py refuses a base without a digest.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${BASE_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

RUN pip install "uv==0.13.9"

WORKDIR /src

# uv's documented Docker pattern (docs.astral.sh/uv/guides/integration/docker/):
# 1. the dependencies alone, from uv.lock and pyproject.toml bind-mounted (not copied) and a
#    cache mount for uv's downloads: this layer is rebuilt only when those two files change,
#    never for a README or source edit. --locked fails if uv.lock is out of date.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --locked --no-dev --no-editable --no-install-project

# 2. then the project itself, built as a wheel from the package and its schemas (README.md is
#    the package's readme, so the build needs it). The revision is written into the package
#    (pass_status_build_info{revision}).
COPY pyproject.toml uv.lock README.md ./
COPY consumer/ consumer/
COPY schemas/ schemas/
ARG REVISION=unknown
RUN sed -i "s|^REVISION = .*|REVISION = \"${REVISION}\"|" consumer/build.py
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable \
    && /app/.venv/bin/python -m consumer --help >/dev/null


FROM ${BASE_IMAGE}

ARG BASE_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown

LABEL org.opencontainers.image.title="pass-status" \
      org.opencontainers.image.description="Keeps cached Bytemark pass statuses true in near real time (Kafka consumer)." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Proprietary" \
      org.opencontainers.image.base.name="docker.io/library/${BASE_IMAGE}"

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin app

COPY --from=builder /app/.venv /app/.venv

ENV PATH=/app/.venv/bin:$PATH \
    VIRTUAL_ENV=/app/.venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# No source tree here: ``python -m consumer`` resolves to the installed package.
WORKDIR /app
USER 10001:10001

# Prometheus metrics, /healthz and /readyz (PASS_STATUS_HTTP_PORT).
EXPOSE 8080

ENTRYPOINT ["python", "-m", "consumer"]
CMD ["run"]
