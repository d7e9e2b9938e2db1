# syntax=docker/dockerfile:1
# heatpose: the inference service (and the trainer) in one image.
#
#   docker build -t heatpose .                       # CUDA-capable PyTorch from PyPI
#   docker build -t heatpose:cpu \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .   # smaller, CPU only
#
# PyTorch's CUDA wheels on PyPI bring their own CUDA runtime, cuDNN and NCCL, so a slim Python
# base is enough: the host needs only the NVIDIA driver and the NVIDIA Container Toolkit.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

# Where torch and torchvision come from (default: PyPI). PyTorch's own indexes also hold their
# dependencies, e.g. https://download.pytorch.org/whl/cpu for the CPU-only build.
ARG TORCH_INDEX_URL=https://pypi.org/simple

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first, read from pyproject.toml, so that editing the code does not download
# PyTorch again: torch and torchvision from TORCH_INDEX_URL, then everything else from PyPI.
COPY pyproject.toml ./
RUN python -c "import re, tomllib; \
deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
torch = [d for d in deps if re.split(r'[^A-Za-z0-9_.-]', d)[0] in ('torch', 'torchvision')]; \
open('/tmp/torch.txt', 'w').write('\n'.join(torch) + '\n'); \
open('/tmp/deps.txt', 'w').write('\n'.join(deps) + '\n')" \
 && pip install --index-url "${TORCH_INDEX_URL}" -r /tmp/torch.txt \
 && pip install -r /tmp/deps.txt

# The project itself, installed the way README.md's first command does (`pip install -e .`)
# but not editable: an editable install points back at /src, which the runtime stage does not
# have; a regular install puts the packages and the `heatpose` console script into the venv.
COPY . .
RUN pip install .

# ---------------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HEATPOSE_HOME=/var/cache/heatpose \
    TORCH_HOME=/var/cache/heatpose/torch \
    HEATPOSE_HOST=0.0.0.0 \
    HEATPOSE_PORT=8000 \
    HEATPOSE_CHECKPOINT=res50-dark-coco-256x192 \
    HEATPOSE_DETECTOR=auto \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# A fixed, unprivileged uid/gid (10001) owning the weights cache; bind mounts it must write to
# (the trainer's outputs) have to be writable by uid 10001.
RUN groupadd --system --gid 10001 heatpose \
 && useradd --system --uid 10001 --gid heatpose --create-home --home-dir /home/heatpose \
        --shell /usr/sbin/nologin heatpose \
 && mkdir -p /var/cache/heatpose/torch \
 && chown -R heatpose:heatpose /var/cache/heatpose

COPY --from=builder /opt/venv /opt/venv

# Fail the build, not the first start, when a shared library is missing from the slim base
# (opencv-python-headless needs no libGL; torch bundles libgomp).
RUN python -c "import cv2, torch, torchvision, pycocotools.coco, app.main, models.weights.zoo" \
 && heatpose --help > /dev/null

USER 10001:10001
WORKDIR /home/heatpose

# Published weights (pose model and person detector: HEATPOSE_DETECTOR=auto picks
# person-rtmdet-m on CUDA, person-rtmdet-nano on CPU) are downloaded and converted here on
# first start (HEATPOSE_HOME), and
# torchvision's ImageNet backbone for training (TORCH_HOME): keep it across containers.
VOLUME ["/var/cache/heatpose"]

EXPOSE 8000

# /health answers once the model is loaded; the first start may download the weights first.
# No curl in slim images: Python's urllib (an HTTP error or a refused connection exits 1).
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('HEATPOSE_PORT', '8000'), timeout=4)"]

# Exec form, no shell in between: SIGTERM from `docker stop` reaches uvicorn, which stops
# accepting connections and drains for HEATPOSE_SHUTDOWN_GRACE_S. Host and port come from
# HEATPOSE_HOST / HEATPOSE_PORT above.
CMD ["heatpose", "serve"]
