#!/usr/bin/env bash
# Operational figures of one built image, as an operator meets them with `docker run`: size,
# start-to-ready, `docker stop` during loading, while idle and with a long request in flight,
# `--read-only` warnings, the thread plan under `--cpus 1`, and what a missing weights file does.
#
#   bench/container.sh [IMAGE] [STOP_TIMEOUT]      # defaults: explain-service:latest 30
#
# STOP_TIMEOUT is `docker run --stop-timeout` (docker's own default is 10 s; compose's
# stop_grace_period is 30 s). The in-flight request is a Score-CAM one, one forward pass per channel:
# SLOW_CHANNELS sets EXPLAIN_SCORECAM_MAX_CHANNELS for it; by default it is worked out from a
# 64-channel request so that the request takes about 15 s on this machine.
# Run it under `flock -x /work/cpu.lock` on a shared machine: it times things. Needs docker, curl.
set -euo pipefail
image=${1:-explain-service:latest}
stop_timeout=${2:-30}
port=${PORT:-18100}
slow_channels=${SLOW_CHANNELS:-}
workdir=$(mktemp -d)
name=explain-figures-$$
cleanup() { docker rm -fv "$name" >/dev/null 2>&1 || true; rm -rf "$workdir"; }
trap cleanup EXIT

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
secs() { printf '%d.%02d s' $(( $1 / 1000 )) $(( $1 % 1000 / 10 )); }
start() {  # start [docker run options...]: a fresh container named $name on $port
  docker rm -fv "$name" >/dev/null 2>&1 || true
  docker run -d --name "$name" -p "127.0.0.1:$port:8000" --stop-timeout "$stop_timeout" "$@" \
    "$image" >/dev/null
}
wait_ready() {  # prints the time to ready; fails if the container stops or 300 s pass
  local started=$1
  until curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null; do
    [ "$(docker inspect -f '{{.State.Running}}' "$name")" = true ] || { echo "stopped"; return 1; }
    (( $(now_ms) - started < 300000 )) || { echo "not ready after 300 s"; return 1; }
    sleep 0.05
  done
  secs $(( $(now_ms) - started ))
}
stop_figure() {  # docker stop, timed, with the exit code
  local started
  started=$(now_ms)
  docker stop "$name" >/dev/null
  echo "$(secs $(( $(now_ms) - started ))), exit code $(docker inspect -f '{{.State.ExitCode}}' "$name")"
}
photo() {  # a 224x224 PNG made inside the image, so the host needs no Python packages
  docker run --rm --entrypoint python "$image" -c \
    "import io, sys; from PIL import Image; b = io.BytesIO(); \
Image.radial_gradient('L').convert('RGB').resize((224, 224)).save(b, 'PNG'); sys.stdout.buffer.write(b.getvalue())"
}

echo "image $image, docker stop timeout $stop_timeout s, cgroup $([ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] && echo v2 || echo v1)"
docker image inspect "$image" --format '{{.Size}}' | awk '{ printf "size: %.2f GB (%s bytes)\n", $1 / 1e9, $1 }'

start; started=$(now_ms)
echo "start to ready: $(wait_ready "$started")"
sleep 1
echo "stop while idle: $(stop_figure)"

start; sleep 1
echo "stop during loading (1 s after start): $(stop_figure)"

photo >"$workdir/photo.png"
if [ -z "$slow_channels" ]; then
  start -e EXPLAIN_SCORECAM_MAX_CHANNELS=64; wait_ready "$(now_ms)" >/dev/null
  request_started=$(now_ms)
  curl -sS -o /dev/null -X POST -F "image=@$workdir/photo.png" "http://127.0.0.1:$port/gradcam?method=scorecam"
  slow_channels=$(( 64 * 15000 / ($(now_ms) - request_started) ))
  docker rm -fv "$name" >/dev/null
fi
start -e "EXPLAIN_SCORECAM_MAX_CHANNELS=$slow_channels"; wait_ready "$(now_ms)" >/dev/null
request_started=$(now_ms)
( curl -sS -o /dev/null -w '%{http_code}' -X POST -F "image=@$workdir/photo.png" \
    "http://127.0.0.1:$port/gradcam?method=scorecam" >"$workdir/status" 2>"$workdir/error" || true
  echo $(( $(now_ms) - request_started )) >"$workdir/request_ms" ) &
sleep 2
stopping=$(stop_figure)
wait
echo "stop with a Score-CAM request in flight ($slow_channels channels, stop sent 2 s in): $stopping;" \
  "the request: HTTP $(cat "$workdir/status") $(tr -d '\n' <"$workdir/error") after $(secs "$(cat "$workdir/request_ms")")"
start -e "EXPLAIN_SCORECAM_MAX_CHANNELS=$slow_channels"; wait_ready "$(now_ms)" >/dev/null
request_started=$(now_ms)
curl -sS -o /dev/null -X POST -F "image=@$workdir/photo.png" "http://127.0.0.1:$port/gradcam?method=scorecam"
echo "the same request without a stop: $(secs $(( $(now_ms) - request_started )))"
docker rm -fv "$name" >/dev/null

start --read-only; ready=$(wait_ready "$(now_ms)" || true)
curl -fsS -o /dev/null -X POST -F "image=@$workdir/photo.png" "http://127.0.0.1:$port/gradcam" \
  && answered=200 || answered=failed
echo "--read-only (no tmpfs): ready $ready, /gradcam $answered, warnings in the log:" \
  "$(docker logs "$name" 2>&1 | grep -ciE 'warn|not writable|read-only file system' || true)"
docker logs "$name" 2>&1 | grep -iE 'warn|not writable|read-only file system' | head -5 || true
docker rm -fv "$name" >/dev/null

start --cpus 1; wait_ready "$(now_ms)" >/dev/null
echo "--cpus 1: $(docker logs "$name" 2>&1 | grep -o '[0-9]* batch thread(s).*' || echo 'no thread plan logged')"
docker rm -fv "$name" >/dev/null

start -e EXPLAIN_MODELS=efficientnet_lite0,resnet18:/weights/missing.pt; started=$(now_ms)
until [ "$(docker inspect -f '{{.State.Running}}' "$name")" != true ] || (( $(now_ms) - started > 30000 )); do
  sleep 0.1
done
if [ "$(docker inspect -f '{{.State.Running}}' "$name")" = true ]; then
  echo "missing weights: still running after 30 s, /readyz $(curl -s -o /dev/null -w '%{http_code}' \
    "http://127.0.0.1:$port/readyz"), /healthz $(curl -s -o /dev/null -w '%{http_code}' \
    "http://127.0.0.1:$port/healthz")"
else
  echo "missing weights: exited after $(secs $(( $(now_ms) - started ))) with exit code" \
    "$(docker inspect -f '{{.State.ExitCode}}' "$name")"
fi
