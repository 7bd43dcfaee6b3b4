# syntax=docker/dockerfile:1
# initserve HTTP service. Build: docker build -t initserve .   Run: docker run -p 8000:8000 initserve
# Settings are INITSERVE_* environment variables (docs/deployment.md), e.g. -e INITSERVE_API_KEYS=...

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: the project wheel plus a wheel for every runtime dependency ---------------------------
FROM ${PYTHON_IMAGE} AS builder
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# A C compiler for the native kernel (initserve.engine._native); it stays in this stage.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY service ./service
COPY clients ./clients
# Anything that must be compiled is compiled here; the runtime stage installs wheels only. The
# extension is optional to setuptools, so the check after the build makes a missing kernel fail
# the image build instead of shipping the numpy fallback unnoticed.
RUN pip wheel --wheel-dir /wheels ".[server]" \
    && python -c "import glob, sys, zipfile; names = zipfile.ZipFile(glob.glob('/wheels/initserve-*.whl')[0]).namelist(); sys.exit(not any('engine/_native' in n for n in names))" \
    && python -c "import tomllib; print('initserve[server]==' + tomllib.load(open('pyproject.toml', 'rb'))['project']['version'])" \
       > /wheels/requirements.txt

# ---- runtime: slim Python, the wheels, nothing to build with ----------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    INITSERVE_PORT=8000
# requirements.txt pins initserve[server] to the version just built; --no-index: only the builder's
# wheels, so nothing is fetched or compiled here.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels --requirement /wheels/requirements.txt \
    && pip uninstall --yes pip setuptools wheel
# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 initserve \
    && useradd --system --uid 10001 --gid initserve --no-create-home --shell /usr/sbin/nologin initserve
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
# python, not curl: the slim image has no curl and we add no packages.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('INITSERVE_PORT', '8000') + '/healthz', timeout=2)"]
# Exec form: initserve is PID 1 itself (no shell in between) and gets SIGTERM for a graceful shutdown.
CMD ["initserve", "serve", "--host", "0.0.0.0"]
