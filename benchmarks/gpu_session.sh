#!/usr/bin/env bash
# Issue 13's GPU checks as one command, for a session lent a CUDA machine (its device time is
# short: prepare here, run once there). Here: `bash benchmarks/gpu_wheels.sh`. There (device
# tool): command `bash benchmarks/gpu_session.sh`, carry [".whl"], timeout_s 570. Results go to
# $OUT (env.txt, gpu_tests.txt, backends.txt, overhead.txt, service.txt); each step has its own
# time limit, and one failing does not stop the others. The exit status is the tests'.
#
# On a machine without CUDA (a dry run of this script): GPU=cpu bash benchmarks/gpu_session.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/heatpose-gpu}
GPU=${GPU:-cuda}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/heatpose-site .whl/*.whl || exit 2
  export PYTHONPATH="/tmp/heatpose-site:$PWD"
fi

step() {  # step NAME SECONDS COMMAND...: run with a time limit, output to $OUT/NAME.txt
  local name=$1 limit=$2
  shift 2
  echo "== $name ($(date -u +%T), limit ${limit} s): $*" | tee "$OUT/$name.txt"
  timeout "$limit" "$@" 2>&1 | tee -a "$OUT/$name.txt"
  local rc=${PIPESTATUS[0]}
  echo "== $name exit $rc" | tee -a "$OUT/$name.txt"
  return "$rc"
}

step env 60 "$PY" -c "
import torch, torchvision, fastapi, uvicorn
print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'fastapi', fastapi.__version__)
print('cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-')
"
# 1. Every gpu-marked test (each skips without CUDA; the files that hold them).
GPU_TESTS=$(grep -rlE "^\s*@pytest\.mark\.gpu" tests | sort)
step gpu_tests 200 "$PY" -m pytest -q -m gpu -p no:cacheprovider -rs $GPU_TESTS
tests_rc=$?
# 2. Raw forward per backend on the device (ResNet-50 256x192, batch 32).
BACKENDS=torch,compile
[ "$GPU" = cpu ] || BACKENDS=torch,compile,tensorrt,onnxruntime
step backends 120 "$PY" benchmarks/bench_backends.py --device "$GPU" --batch 32 --rounds 2 \
  --seconds 3 --backends "$BACKENDS"
# 3. The request path with an instant model: Pillow + cv2 against nvJPEG + device crops.
step overhead 100 "$PY" benchmarks/bench_overhead.py --devices "$GPU" --scenarios \
  640x480:1,1920x1080:1 --rounds 2 --duration 5 --warmup 2 --threads \
  --env 'HEATPOSE_CROP=cv2,HEATPOSE_DECODE=pillow|HEATPOSE_CROP=device,HEATPOSE_DECODE=torch'
# 4. The service with a real ResNet-50 on the device (random weights), default settings.
step service 90 "$PY" benchmarks/bench_overhead.py --devices "$GPU" --model r50 --scenarios \
  640x480:1 --rounds 2 --duration 5 --warmup 3 --threads
ls -la "$OUT"
exit "$tests_rc"
