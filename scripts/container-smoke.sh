#!/usr/bin/env bash
# Build the image, start it with docker-compose, wait until it is healthy, post a real photo to
# /gradcam, check the answer, tear down. Prints the image size and the start-to-ready time.
#
#   scripts/container-smoke.sh [photo.jpg]
#
# Without a photo, scikit-image's "chelsea" (a cat) is written from the project's virtual
# environment (.venv) or the current python. Too heavy for CI: run it by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

export COMPOSE_PROJECT_NAME=explain-smoke
export EXPLAIN_PUBLISH="127.0.0.1:${SMOKE_PORT:-18000}"
url="http://${EXPLAIN_PUBLISH}"
workdir=$(mktemp -d)
trap 'docker-compose down --remove-orphans --timeout 30 >/dev/null 2>&1 || true; rm -rf "$workdir"' EXIT

photo="${1:-}"
if [ -z "$photo" ]; then
  photo="$workdir/chelsea.jpg"
  python=$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)
  "$python" -c "from skimage import data; from PIL import Image; Image.fromarray(data.chelsea()).save('$photo')"
fi

echo "== build"
build_started=$(date +%s)
docker-compose build ${SMOKE_BUILD_ARGS:-}
echo "build took $(( $(date +%s) - build_started )) s"
docker image inspect explain-service:latest --format 'image size: {{.Size}} bytes' \
  | awk '{ printf "%s %s %.2f GB (%s bytes)\n", $1, $2, $3 / 1e9, $3 }'

echo "== up"
docker-compose up -d
started=$(date +%s.%N)
container=$(docker-compose ps -q explain)
until curl -fsS -o /dev/null "$url/readyz" 2>/dev/null; do
  if [ "$(docker inspect -f '{{.State.Running}}' "$container")" != "true" ]; then
    docker-compose logs --tail 50; echo "the container stopped"; exit 1
  fi
  if (( $(echo "$(date +%s.%N) - $started > 600" | bc) )); then
    docker-compose logs --tail 50; echo "not ready after 600 s"; exit 1
  fi
  sleep 0.25
done
printf 'start to ready: %.1f s\n' "$(echo "$(date +%s.%N) - $started" | bc)"
until [ "$(docker inspect -f '{{.State.Health.Status}}' "$container")" = "healthy" ]; do sleep 1; done
echo "health: $(docker inspect -f '{{.State.Health.Status}}' "$container")"
echo "user: $(docker-compose exec -T explain id -un)"

echo "== POST /gradcam"
curl -fsS -X POST -F "image=@$photo" "$url/gradcam?return_cam=true" -o "$workdir/answer.json"
python3 - "$workdir/answer.json" <<'PY'
import base64, json, sys
answer = json.load(open(sys.argv[1]))
result = answer["results"][0]
top, explanation = result["top_k"][0], result["explanations"][0]
png = base64.b64decode(explanation["overlay_png"])
assert png.startswith(b"\x89PNG"), "overlay is not a PNG"
assert explanation["cam"]["shape"] == [7, 7], explanation["cam"]["shape"]
assert 281 <= top["index"] <= 285, f"expected a cat class, got {top}"
print(f"model {answer['model']}: top-1 {top['label']!r} ({top['score']:.3f}); "
      f"{explanation['method']} at {explanation['layer']}, overlay {len(png)} bytes; "
      f"timing {answer['timing_ms']}")
PY
echo "== metrics"
curl -fsS "$url/metrics" | grep -E '^explain_requests_total\{endpoint="/gradcam"'
echo "smoke test passed"
