#!/usr/bin/env bash
# Build the image with docker-compose, start it, wait until it is healthy, post a real photo to
# /gradcam and check the answer, stop it, tear down. Prints the build time, the image size, the
# start-to-ready time, and the stop time and exit code.
#
#   scripts/container-smoke.sh [photo.jpg]
#
# Needs docker and docker-compose (Debian: apt-get install docker.io docker-compose), curl, and the
# base image (debian:trixie-slim; where no registry is reachable, build a stand-in from Debian's
# packages with debootstrap and `docker import` it under that name). Without a photo, scikit-image's
# "chelsea" (a cat) is used: from scikit-image in .venv or python3 if it is installed, else taken
# from the scikit-image wheel that the image's own pip downloads from PyPI (nothing to install).
# Too heavy for CI: run it by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in docker docker-compose curl; do
  command -v "$tool" >/dev/null || {
    echo "$tool is missing: apt-get install docker.io docker-compose curl (Debian)" >&2
    exit 2
  }
done

export COMPOSE_PROJECT_NAME=explain-smoke
export EXPLAIN_PUBLISH="127.0.0.1:${SMOKE_PORT:-18000}"
url="http://${EXPLAIN_PUBLISH}"
workdir=$(mktemp -d)
trap 'docker-compose down --volumes --remove-orphans --timeout 30 >/dev/null 2>&1 || true; rm -rf "$workdir"' EXIT
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
seconds_since() { local ms=$(( $(now_ms) - $1 )); printf '%d.%03d s' $(( ms / 1000 )) $(( ms % 1000 )); }

echo "== build"
started=$(now_ms)
docker-compose build
echo "build took $(seconds_since "$started")"
docker image inspect explain-service:latest --format '{{.Size}}' \
  | awk '{ printf "image size: %.2f GB (%s bytes)\n", $1 / 1e9, $1 }'

photo="${1:-}"
if [ -z "$photo" ]; then
  photo="$workdir/chelsea.png"
  python=$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)
  if "$python" -c "import skimage" 2>/dev/null; then
    "$python" -c "from skimage import data; from PIL import Image; Image.fromarray(data.chelsea()).save('$photo')"
  else
    echo "no scikit-image here: taking chelsea.png from its wheel, downloaded by the image's pip"
    docker run --rm --network host --entrypoint sh explain-service:latest -c \
      'pip download --quiet --no-deps --only-binary :all: --dest /tmp/wheel scikit-image >&2 &&
       python -c "import glob, sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(glob.glob(\"/tmp/wheel/*.whl\")[0]).read(\"skimage/data/chelsea.png\"))"' \
      >"$photo"
  fi
fi

echo "== up"
docker-compose up -d
started=$(now_ms)
container=$(docker-compose ps -q explain)
until curl -fsS -o /dev/null "$url/readyz" 2>/dev/null; do
  if [ "$(docker inspect -f '{{.State.Running}}' "$container")" != "true" ]; then
    docker-compose logs --tail 50
    echo "the container stopped (exit code $(docker inspect -f '{{.State.ExitCode}}' "$container"))"
    exit 1
  fi
  if (( $(now_ms) - started > 600000 )); then
    docker-compose logs --tail 50; echo "not ready after 600 s"; exit 1
  fi
  sleep 0.2
done
echo "start to ready: $(seconds_since "$started")"
until [ "$(docker inspect -f '{{.State.Health.Status}}' "$container")" = "healthy" ]; do sleep 1; done
echo "health: $(docker inspect -f '{{.State.Health.Status}}' "$container")"
echo "user: $(docker-compose exec -T explain id)"
docker-compose logs explain | grep -E "batch thread|WARN|Warning" || true

echo "== POST /gradcam"
curl -fsS -X POST -F "image=@$photo" "$url/gradcam?return_cam=true" -o "$workdir/answer.json"
check=$(cat <<'PY'
import base64, json, sys
answer = json.load(sys.stdin)
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
)
docker run --rm -i --entrypoint python explain-service:latest -c "$check" <"$workdir/answer.json"
echo "== metrics"
curl -fsS "$url/metrics" | grep -E '^explain_requests_total\{endpoint="/gradcam"'

echo "== stop"
started=$(now_ms)
docker-compose stop
echo "stop took $(seconds_since "$started"), exit code $(docker inspect -f '{{.State.ExitCode}}' "$container")"
echo "smoke test passed"
