#!/usr/bin/env bash
# Wheels for benchmarks/gpu_session.sh: the packages the service needs that the lent GPU
# machine's image (Python 3.12, torch and torchvision preinstalled, no network) does not hold,
# at the versions this checkout's virtual environment runs, downloaded here into .whl/ (ignored
# by git; carried to the machine with the device tool's `carry: [".whl"]`).
#
#     bash benchmarks/gpu_wheels.sh [PYTHON]     # PYTHON: this checkout's, default .venv/bin/python
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
PACKAGES=(anyio h11 fastapi starlette pydantic pydantic-core pydantic-settings python-dotenv
  typing-inspection annotated-types opentelemetry-api uvicorn httptools python-multipart websockets)
pins=()
for p in "${PACKAGES[@]}"; do
  v=$("$PY" -m pip show "$p" 2>/dev/null | sed -n 's/^Version: //p')
  [ -n "$v" ] || { echo "gpu_wheels.sh: $p is not installed in $PY's environment" >&2; exit 1; }
  pins+=("$p==$v")
done
rm -rf .whl && mkdir .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${pins[@]}"
ls .whl
du -sh .whl
