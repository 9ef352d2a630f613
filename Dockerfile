# explain-service: one process, one copy of each model per container; scale with replicas.
#
#   docker build --network host -t explain-service .      # what docker-compose builds, same cache
#
# PyTorch is Debian's CPU-only build (python3-torch, python3-torchvision; no CUDA libraries, about a
# third of the size of PyPI's CUDA wheels with their nvidia packages). Everything else comes from PyPI
# at the versions and hashes of requirements/service.txt, made against those Debian packages by
# scripts/lock-requirements.sh. The build fails if anything would bring in another torch.
# The default model's weights come with the image (a PyPI package), so it starts offline.

ARG BASE_IMAGE=debian:trixie-slim

# -- system: Python, Debian's CPU-only PyTorch, OpenBLAS, tini, the user; changes only with this file
FROM ${BASE_IMAGE} AS system
ENV DEBIAN_FRONTEND=noninteractive \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3=3.13.5-1 \
        python3-venv=3.13.5-1 \
        python3-torch=2.6.0+dfsg-7 \
        python3-torchvision=0.21.0-3 \
        libopenblas0-openmp=0.3.29+ds-3 \
        tini=0.19.0-3+b8 \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv --system-site-packages /opt/venv \
    && python -c "import torch, torchvision; \
assert torch.version.cuda is None and not torch.backends.cudnn.is_available(), 'not a CPU-only torch'; \
print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'CPU only')" \
    && useradd --uid 10001 --user-group --create-home --home-dir /home/app --shell /usr/sbin/nologin app

# -- runtime: pinned PyPI dependencies in their own layer, then the project's code (a tiny layer) ---
FROM system AS runtime
COPY requirements/service.txt /opt/requirements/service.txt
# --no-deps and --require-hashes: nothing outside the lock file is installed (no PyPI torch, no
# nvidia packages); pip check proves that the lock file and Debian's packages cover every dependency.
RUN pip install --no-deps --require-hashes --only-binary :all: -r /opt/requirements/service.txt \
    && pip check \
    && python -c "import importlib.metadata as m, torch; \
found = sorted(d.name for d in m.distributions() if d.name.lower().startswith(('nvidia', 'triton', 'torch'))); \
assert torch.__file__.startswith('/usr/lib/python3/dist-packages/'), 'torch is not from Debian: ' + torch.__file__; \
assert torch.version.cuda is None and found == ['torch', 'torchvision'], found"

WORKDIR /opt/explain-service
COPY explain ./explain
COPY service ./service
RUN python -m compileall -q explain service

ENV PYTHONPATH=/opt/explain-service \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    TORCH_HOME=/tmp/torch \
    TINI_SUBREAPER=1 \
    EXPLAIN_HOST=0.0.0.0 \
    EXPLAIN_PORT=8000
# /tmp is the one writable place, even under `docker run --read-only`: a volume of its own (compose
# mounts a tmpfs there instead). torch creates a temporary directory at import, multipart uploads
# over 1 MiB are spooled there, and it holds the caches (MPLCONFIGDIR, TORCH_HOME).
VOLUME ["/tmp"]
USER 10001:10001
WORKDIR /home/app
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('EXPLAIN_PORT', '8000'), timeout=4)"]
# tini as PID 1 passes SIGTERM (docker stop) and SIGINT on to the service and reaps orphans; the
# service finishes running batches and exits within its shutdown deadline, so give `docker stop` that
# deadline plus a margin (compose: stop_grace_period; docker run/stop: --stop-timeout / -t 30).
# -e 143: ended by the stop signal itself (uvicorn re-raises it after a graceful shutdown, and Python's
# default action ends a process still importing) is a clean stop, exit code 0, not a failure.
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "-e", "143", "--"]
CMD ["python", "-m", "service"]
