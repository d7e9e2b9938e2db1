#!/usr/bin/env bash
# End-to-end check of the image on a host with Docker: build, start the API with Compose, wait
# until it is healthy, post an image to /predict, check the JSON, tear down.
#
#   scripts/smoke-docker.sh           # GPU if `nvidia-smi` works here, else the CPU override
#   SMOKE_CPU=1 scripts/smoke-docker.sh
#
# Environment: SMOKE_CPU=1 (force the CPU override), SMOKE_PORT (published port, default
# 18000), SMOKE_TIMEOUT (seconds to wait for health, default 900: the first start downloads
# the weights). It runs as its own Compose project (heatpose-smoke), next to any running stack;
# its weights volume is kept so that the next run starts faster
# (`docker volume rm heatpose-smoke_weights` removes it).
set -euo pipefail
cd "$(dirname "$0")/.."

PROJECT=heatpose-smoke
PORT="${SMOKE_PORT:-18000}"
TIMEOUT="${SMOKE_TIMEOUT:-900}"
FILES=(-f docker-compose.yml)
if [[ "${SMOKE_CPU:-}" == 1 ]] || ! nvidia-smi > /dev/null 2>&1; then
    FILES+=(-f docker-compose.cpu.yml)
    echo "smoke: CPU (docker-compose.cpu.yml)"
else
    echo "smoke: GPU"
fi
export HEATPOSE_PUBLISH_PORT="$PORT"
compose() { docker compose -p "$PROJECT" "${FILES[@]}" "$@"; }

WORK="$(mktemp -d)"
cleanup() {
    local status=$?
    if [[ $status -ne 0 ]]; then
        echo "smoke: FAILED (exit $status); the service's last log lines:" >&2
        compose logs --tail 50 api >&2 || true
    fi
    compose down --remove-orphans > /dev/null 2>&1 || true
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

compose build api
compose up -d api

echo "smoke: waiting up to ${TIMEOUT}s for the container to be healthy"
container="$(compose ps -q api)"
deadline=$((SECONDS + TIMEOUT))
while :; do
    state="$(docker inspect --format '{{.State.Status}} {{.State.Health.Status}}' "$container")"
    case "$state" in
        "running healthy") break ;;
        "running starting") ;;
        *) echo "smoke: container is '$state'" >&2; exit 1 ;;
    esac
    if ((SECONDS >= deadline)); then
        echo "smoke: not healthy after ${TIMEOUT}s ($state)" >&2
        exit 1
    fi
    sleep 5
done
echo "smoke: healthy"

# A test image made by the image's own Python (Pillow is a dependency): no file in the repo
# and nothing needed on the host but curl.
compose exec -T api python -c "
import io, sys
from PIL import Image, ImageDraw
im = Image.new('RGB', (192, 256), (90, 110, 130))
d = ImageDraw.Draw(im)
d.ellipse((80, 20, 112, 52), fill=(230, 200, 170))
d.rectangle((78, 56, 114, 150), fill=(40, 60, 160))
d.line((78, 60, 50, 130), fill=(230, 200, 170), width=8)
d.line((114, 60, 142, 130), fill=(230, 200, 170), width=8)
d.line((86, 150, 80, 240), fill=(30, 30, 30), width=10)
d.line((106, 150, 112, 240), fill=(30, 30, 30), width=10)
buf = io.BytesIO()
im.save(buf, 'JPEG', quality=90)
sys.stdout.buffer.write(buf.getvalue())
" > "$WORK/person.jpg"

auth=()
if [[ -n "${HEATPOSE_API_KEY:-}" ]]; then
    auth=(-H "X-API-Key: ${HEATPOSE_API_KEY}")
fi
curl -fsS --max-time 60 ${auth[@]+"${auth[@]}"} -F "files=@$WORK/person.jpg;type=image/jpeg" \
    "http://127.0.0.1:${PORT}/predict" > "$WORK/response.json"

# Check the answer with the container's Python as well: one image, one person, 17 keypoints.
compose exec -T api python -c "
import json, math, sys
r = json.load(sys.stdin)
persons = r['images'][0]['persons']
assert len(persons) == 1, persons
kps = persons[0]['keypoints']
assert len(kps) == len(r['model']['keypoints']) == 17, len(kps)
for k in kps:
    assert {'name', 'x', 'y', 'score'} <= set(k), k
    assert all(math.isfinite(k[c]) for c in ('x', 'y', 'score')), k
print('smoke: OK:', r['model']['name'], '-', ', '.join(
    '%s (%.0f, %.0f)' % (k['name'], k['x'], k['y']) for k in kps[:3]), '...')
" < "$WORK/response.json"
