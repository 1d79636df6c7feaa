#!/usr/bin/env bash
# Container smoke test: the image's migration command, every service and the edge, each in its
# own container (host network, free ports, read-only root filesystem, no metrics ports), then a
# room and a Converse through the edge with grpcurl, and a graceful stop of every container; then
# the edge's Deployment of the rendered dev manifests under `podman kube play`.
# Usage: deploy/smoke-test.sh [IMAGE]   (default: build one with deploy/build-image.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/podman-env.sh

IMAGE="${1:-${IMAGE:-}}"
[ -n "$IMAGE" ] || IMAGE="$(deploy/build-image.sh)"
GRPCURL="${GRPCURL:-$PWD/.venv/bin/grpcurl}"
PY="${PYTHON:-$PWD/.venv/bin/python}"
SERVICES=(rooms stream avatar token voice)
RUN_ID="smoke-$$"
WORK="$(mktemp -d)"
NAMES=()
KUBE_EDGE="arconv-$RUN_ID-kube-edge"  # kube play names the pod <Deployment>-pod-0

cleanup() {
  for n in "${NAMES[@]}"; do "$PODMAN" rm -f -t 0 "$n" >/dev/null 2>&1 || true; done
  "$PODMAN" pod rm -f -t 0 "$KUBE_EDGE-pod-0" >/dev/null 2>&1 || true
  "$PODMAN" unshare rm -rf "$WORK" 2>/dev/null || rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
  echo "smoke: FAILED: $*" >&2
  for n in "${NAMES[@]}"; do echo "--- logs of $n" >&2; "$PODMAN" logs --tail 30 "$n" >&2 2>&1 || true; done
  exit 1
}

# The runtime image: a non-root user, no compilers, no tests.
"$PODMAN" run --rm --network none "$IMAGE" sh -c \
  '[ "$(id -u)" = 10001 ] && ! command -v gcc && ! command -v cc && [ ! -e /app/tests ] && [ ! -e /app/bench ]' \
  >/dev/null || fail "the image runs as root, ships a compiler or ships tests"

free_ports() { "$PY" -c 'import socket,sys
socks=[socket.socket() for _ in range(int(sys.argv[1]))]
[s.bind(("127.0.0.1",0)) for s in socks]
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"; }
read -r -a P <<<"$(free_ports 8)"
declare -A PORT=([rooms]=${P[0]} [stream]=${P[1]} [avatar]=${P[2]} [token]=${P[3]} [voice]=${P[4]})
EDGE_PORT=${P[5]}
ADMIN_PORT=${P[6]}
VOICE_HTTP_PORT=${P[7]}

mkdir -p "$WORK/var"
chown 10001:10001 "$WORK/var" 2>/dev/null || "$PODMAN" unshare chown 10001:10001 "$WORK/var"
COMMON=(--network host --read-only -v "$WORK/var:/var/lib/arconv:Z"
  -e ARCONV_METRICS_PORT=-1 -e ARCONV_MIGRATE_ON_START=false -e ARCONV_LLM_PACING_MS=0
  -e "ARCONV_VOICE_HTTP_PORT=$VOICE_HTTP_PORT")
for s in "${SERVICES[@]}"; do
  COMMON+=(-e "ARCONV_${s^^}_ADDR=127.0.0.1:${PORT[$s]}")
done

# Long-running containers keep the image's HEALTHCHECK, run by hand below: no systemd timer
# here (--health-interval=disable); one-shot commands need none (--no-healthcheck).
SERVING=(--health-interval=disable "${COMMON[@]}")

started=$(date +%s)
"$PODMAN" run --rm --no-healthcheck "${COMMON[@]}" "$IMAGE" python -m services.cli migrate >/dev/null \
  || fail "the migration command failed"
for s in "${SERVICES[@]}"; do
  NAMES+=("arconv-$RUN_ID-$s")
  "$PODMAN" run -d --name "arconv-$RUN_ID-$s" "${SERVING[@]}" -e "ARCONV_PORT=${PORT[$s]}" \
    "$IMAGE" python -m "services.$s" >/dev/null 2>>"$WORK/podman.log"
done
NAMES+=("arconv-$RUN_ID-edge")
"$PODMAN" run -d --name "arconv-$RUN_ID-edge" "${SERVING[@]}" \
  -e "ARCONV_EDGE_PORT=$EDGE_PORT" -e "ARCONV_EDGE_ADMIN_PORT=$ADMIN_PORT" -e ARCONV_EDGE_DRAIN_S=2 \
  "$IMAGE" python -m services.edge >/dev/null 2>>"$WORK/podman.log"

# Every container healthy by its own HEALTHCHECK (gRPC health; Envoy's /ready for the edge).
for n in "${NAMES[@]}"; do
  for i in $(seq 1 60); do
    "$PODMAN" healthcheck run "$n" >/dev/null 2>&1 && break
    [ "$i" = 60 ] && fail "$n not healthy after 30 s"
    sleep 0.5
  done
done
# The edge routes to a replica only once its own active health check has seen it serving; a
# service that came up after the edge waits for the next check (no_traffic_interval).
for i in $(seq 1 60); do
  "$PY" - "$ADMIN_PORT" 2>/dev/null <<'PYEOF' && break
import sys, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/clusters"
lines = urllib.request.urlopen(url, timeout=5).read().decode().splitlines()
flags = [line.rsplit("::", 1)[1] for line in lines if "::health_flags::" in line]
sys.exit(0 if flags and all(flag == "healthy" for flag in flags) else 1)
PYEOF
  [ "$i" = 60 ] && fail "the edge did not see every upstream healthy after 30 s"
  sleep 0.5
done
echo "smoke: ${#SERVICES[@]} services and the edge healthy in $(( $(date +%s) - started )) s" >&2

"$PODMAN" run --rm --no-healthcheck "${COMMON[@]}" "$IMAGE" python -m services.cli seed >/dev/null \
  || fail "seeding the demo agents failed"
TOKEN="$("$PODMAN" run --rm --no-healthcheck "${COMMON[@]}" "$IMAGE" python -m services.cli token --user smoke)"
G=("$GRPCURL" -plaintext -max-time 30 -H "authorization: Bearer $TOKEN")
EDGE="127.0.0.1:$EDGE_PORT"
ROOM="$("${G[@]}" -d '{"agent_id": "nova"}' "$EDGE" arconv.rooms.v1.RoomService/CreateRoom \
  | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["room"]["room_id"])')" \
  || fail "CreateRoom through the edge"
REPLY="$("${G[@]}" -d @ "$EDGE" arconv.stream.v1.StreamService/Converse <<JSON
{"join": {"room_id": "$ROOM"}}
{"message": {"content": "Hello from the container smoke test", "client_message_id": "smoke-1"}}
JSON
)" || true
"$PY" - "$REPLY" <<'PYEOF' || fail "Converse through the edge: no complete reply"
import json, sys
events, buf, depth = [], "", 0
for ch in sys.argv[1]:
    buf += ch if depth or ch == "{" else ""
    depth += (ch == "{") - (ch == "}")
    if buf and depth == 0:
        events.append(json.loads(buf)); buf = ""
kinds = {k for e in events for k in e}
text = "".join(e["stream_chunk"].get("text", "") for e in events if "stream_chunk" in e)
assert "joined" in kinds and "stream_ended" in kinds and text.strip(), kinds
print(f"smoke: Converse through the edge: {len(events)} events, reply {text[:60]!r}...", file=sys.stderr)
PYEOF

# SIGTERM: every container stops by itself, well within podman's 10 s grace, exit code 0.
for n in "${NAMES[@]}"; do
  t0=$(date +%s%N)
  "$PODMAN" stop -t 10 "$n" >/dev/null 2>>"$WORK/podman.log"
  code="$("$PODMAN" inspect --format '{{.State.ExitCode}}' "$n")"
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  [ "$code" = 0 ] || fail "$n exited with $code on SIGTERM"
  [ "$ms" -lt 9000 ] || fail "$n took $ms ms to stop (SIGTERM not handled)"
  echo "smoke: $n stopped on SIGTERM in $ms ms" >&2
done

# The manifests, partly: `podman kube play` runs the edge's Deployment of the rendered dev
# overlay (its ConfigMap with the generated Envoy configuration mounted read-only, user 10001,
# a read-only root filesystem, its emptyDir volumes) from this image. podman ignores Services,
# so the upstreams' headless names do not resolve: Envoy must start and serve its own health
# checks all the same. (The prod edge mounts a Secret, which podman 4.3's kube play cannot.)
"$PWD/.venv/bin/kubectl" kustomize deploy/kubernetes/overlays/dev >"$WORK/dev.yaml" \
  || fail "kubectl kustomize of the dev overlay"
"$PY" - "$WORK/dev.yaml" "$IMAGE" "$KUBE_EDGE" >"$WORK/kube-edge.yaml" <<'PYEOF'
import sys, yaml
path, image, name = sys.argv[1:]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
edge = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "edge"]
for d in edge:
    d["metadata"]["name"] = name
    for c in d["spec"]["template"]["spec"]["containers"]:
        c["image"] = image
maps = {v["configMap"]["name"] for d in edge for v in d["spec"]["template"]["spec"]["volumes"]
        if "configMap" in v}
config = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] in maps]
assert len(edge) == 1 and config, "no edge Deployment and ConfigMap in the dev overlay"
yaml.safe_dump_all(config + edge, sys.stdout)
PYEOF
"$PODMAN" kube play "$WORK/kube-edge.yaml" >/dev/null 2>>"$WORK/podman.log" \
  || fail "podman kube play of the dev edge: $(tail -3 "$WORK/podman.log")"
NAMES+=("$KUBE_EDGE-pod-0-edge")
for i in $(seq 1 60); do
  "$PODMAN" exec "$KUBE_EDGE-pod-0-edge" python -m services.healthcheck >/dev/null 2>&1 && break
  [ "$i" = 60 ] && fail "the dev edge under kube play not ready after 30 s"
  sleep 0.5
done
"$PODMAN" exec "$KUBE_EDGE-pod-0-edge" sh -c '[ "$(id -u)" = 10001 ] && ! touch /probe 2>/dev/null \
  && [ -s /etc/arconv/edge/envoy.yaml ] && ! touch /etc/arconv/edge/probe 2>/dev/null \
  && python -c "import urllib.request as u; u.urlopen(\"http://127.0.0.1:8080/healthz\", timeout=5)"' \
  || fail "the dev edge under kube play: not user 10001, a writable root or configuration, or no /healthz"
"$PODMAN" pod rm -f -t 0 "$KUBE_EDGE-pod-0" >/dev/null 2>>"$WORK/podman.log"
echo "smoke: the dev overlay's edge Deployment ran under podman kube play" >&2
echo "smoke: OK" >&2
