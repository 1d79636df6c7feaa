# Sourced by deploy/build-image.sh and deploy/smoke-test.sh: podman settings for this machine.
# Uses deploy/podman/containers.conf when CONTAINERS_CONF is unset and the machine needs it
# (cgroups in hybrid mode, or a hard open-files limit below podman's default of 1048576).
if [ -z "${CONTAINERS_CONF:-}" ]; then
  _hard_nofile="$(ulimit -Hn)"
  if [ -d /sys/fs/cgroup/unified ] || { [ "$_hard_nofile" != unlimited ] && [ "$_hard_nofile" -lt 1048576 ]; }; then
    CONTAINERS_CONF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/podman/containers.conf"
    export CONTAINERS_CONF
  fi
fi
PODMAN="${PODMAN:-podman}"
