"""The container image's HEALTHCHECK: is the process this container runs healthy?

`python -m services.healthcheck [ROLE]`: exits 0 when healthy, 1 otherwise. ROLE (a service,
edge or mesh) defaults to the `services.<role>` the container's main process
runs. A service answers the standard gRPC health check on 127.0.0.1:ARCONV_PORT (default: the
service's port); the edge and the mesh answer when Envoy's admin /ready says LIVE.
Kubernetes uses native gRPC probes instead (deploy/kubernetes).
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.config import DEFAULT_PORTS


def container_role() -> str | None:
    """The `services.<role>` module of the first process running one (PID 1 unless --init)."""
    pids = sorted(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for arg in argv:
            if arg.startswith(b"services."):
                role = arg.decode().removeprefix("services.")
                if role != "healthcheck":
                    return role
    return None


def check(role: str, timeout_s: float = 3.0) -> bool:
    if role in ("edge", "mesh"):
        admin = os.environ.get("ARCONV_EDGE_ADMIN_PORT", "9901")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{admin}/ready", timeout=timeout_s
            ) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False
    port = os.environ.get("ARCONV_PORT") or str(DEFAULT_PORTS[role])
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout_s
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def main(argv: list[str]) -> int:
    role = argv[0] if argv else container_role()
    if role is None or (role not in DEFAULT_PORTS and role not in ("edge", "mesh")):
        print(f"healthcheck: no arconv service found (role {role!r})", file=sys.stderr)
        return 1
    return 0 if check(role) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
