#!/usr/bin/env bash
# `make image`: builds deploy/Containerfile with podman as $IMAGE (default arconv:<version>).
#
# BASE_IMAGE defaults to the public python slim image. ARCONV_IMAGE_BASE chooses where it
# comes from:
#   auto (default)  use BASE_IMAGE if present or pullable, else build a Debian base (below)
#   pull            pull BASE_IMAGE (a registry is needed)
#   mmdebstrap      no registry: a Debian bookworm root filesystem from Debian's packages
#                   (mmdebstrap, this machine's apt sources) imported as $DEBIAN_BASE_IMAGE
# The host's CA bundle is mounted for pip (never copied into the image), for TLS proxies.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/podman-env.sh

VERSION="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"
IMAGE="${IMAGE:-localhost/arconv:${VERSION}}"
BASE_IMAGE="${BASE_IMAGE:-docker.io/library/python:3.11-slim-bookworm}"
DEBIAN_BASE_IMAGE="${DEBIAN_BASE_IMAGE:-localhost/arconv-debian-python:bookworm}"
MODE="${ARCONV_IMAGE_BASE:-auto}"

have_image() { "$PODMAN" image exists "$1"; }

debian_base() {
  if have_image "$DEBIAN_BASE_IMAGE"; then
    echo "image: using $DEBIAN_BASE_IMAGE (built earlier with mmdebstrap)" >&2
    return
  fi
  command -v mmdebstrap >/dev/null || { echo "image: mmdebstrap is missing (apt-get install mmdebstrap)" >&2; exit 1; }
  local tmp mirrors=()
  tmp="$(mktemp -d)"
  # The machine's own apt sources (mirror, updates and security suites).
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -s "$f" ] && grep -qv '^\s*\(#\|$\)' "$f" && mirrors+=("$f")
  done
  [ ${#mirrors[@]} -gt 0 ] || mirrors=(http://deb.debian.org/debian)
  echo "image: building $DEBIAN_BASE_IMAGE with mmdebstrap from ${mirrors[*]}" >&2
  mmdebstrap --quiet --variant=minbase \
    --include=python3,python3-venv,ca-certificates,passwd \
    --aptopt='Acquire::Retries "3"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm "$tmp/rootfs.tar" "${mirrors[@]}"
  "$PODMAN" import --quiet --change 'CMD ["/bin/bash"]' "$tmp/rootfs.tar" "$DEBIAN_BASE_IMAGE" >/dev/null
  rm -rf "$tmp"
}

case "$MODE" in
  pull) "$PODMAN" pull --quiet "$BASE_IMAGE" >/dev/null ;;
  mmdebstrap) debian_base; BASE_IMAGE="$DEBIAN_BASE_IMAGE" ;;
  auto)
    if ! have_image "$BASE_IMAGE" && ! timeout 20 "$PODMAN" pull --quiet "$BASE_IMAGE" >/dev/null 2>&1; then
      echo "image: cannot pull $BASE_IMAGE; building a Debian base instead" >&2
      debian_base
      BASE_IMAGE="$DEBIAN_BASE_IMAGE"
    fi ;;
  *) echo "ARCONV_IMAGE_BASE must be auto, pull or mmdebstrap" >&2; exit 2 ;;
esac

ca_mount=()
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  ca_mount=(-v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro)
fi
echo "image: building $IMAGE on $BASE_IMAGE" >&2
"$PODMAN" build --quiet --format docker -f deploy/Containerfile \
  --build-arg BASE_IMAGE="$BASE_IMAGE" \
  --build-arg VERSION="$VERSION" \
  --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  "${ca_mount[@]}" -t "$IMAGE" . >/dev/null
echo "image: built $IMAGE" >&2
echo "$IMAGE"
