# Multi-stage image of the prediction service. `make image` builds it (deploy/image/build.sh:
# Docker with BuildKit, else podman), or by hand:
#   docker build -t prediction-service .                           # registry from a volume
#   docker build --build-arg TRAIN_AT_BUILD=true -t prediction-service .   # models baked in
# No BuildKit-only syntax: podman and the classic builder build it as it is. Debian's
# packages are not pinned (its mirror keeps only the newest security release, so a pin
# breaks the build at the next update); the base image is pinned by its full tag.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# pip trusts the system's CA bundle (a build behind a TLS-inspecting proxy mounts the host's
# over it: deploy/image/build.sh); MLflow's git probe stays quiet (no git in the image).
ARG PIP_CERT=/etc/ssl/certs/ca-certificates.crt
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GIT_PYTHON_REFRESH=quiet \
    PATH=/opt/venv/bin:$PATH
# LightGBM links the system OpenMP runtime; training at build time needs it too. gcc builds
# the package's native forest kernel (src/prediction_service/predictors/_forest.c); it stays in
# this stage.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
WORKDIR /app
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt
COPY pyproject.toml setup.py README.md ./
COPY src ./src
# Installed into the venv; the sources and the in-tree build are not part of the image.
# What the image does not run leaves with the build: the libraries' own test suites (125 MB
# with their bytecode), and pip and setuptools (the image installs nothing).
RUN pip install --no-cache-dir --no-deps /app \
    && rm -rf /app/src /app/build /app/pyproject.toml /app/setup.py /app/README.md \
    && find /opt/venv -depth -type d -name tests -exec rm -rf {} + \
    && pip uninstall -y -q pip setuptools
COPY config ./config
COPY data ./data
COPY train_housing.py train_iris.py run_api.py ./
ARG TRAIN_AT_BUILD=false
RUN mkdir -p mlruns logs \
    && if [ "$TRAIN_AT_BUILD" = "true" ]; then python -m prediction_service.training; fi

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    GIT_PYTHON_REFRESH=quiet \
    PREDICT_HOME=/app \
    WORKERS=2 \
    PORT=8000 \
    PREDICT_GRPC_HOST=0.0.0.0 \
    PREDICT_GRPC_PORT=8001
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin app
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=app:app /app /app
# Executable in git (mode 100755), which COPY keeps: no BuildKit-only --chmod.
COPY docker/entrypoint.sh /usr/local/bin/entrypoint.sh
USER 10001:10001
# HTTP (our REST, the Open Inference Protocol, /invocations) and gRPC (the same protocol).
EXPOSE 8000 8001
VOLUME ["/app/mlruns", "/app/logs"]
# The slim image has no curl: ask /ready with the Python that is there.
# The start period covers a first start that trains (about 35 s on 2 cores; the log shows
# its progress); an image built with TRAIN_AT_BUILD=true is ready in seconds.
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/ready', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
