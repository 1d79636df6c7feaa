"""A real Envoy in front of real in-process servers, on free ports."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

from services.edge import EdgeConfig, start_envoy, wait_envoy_ready


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def running_envoy(
    workdir: Path, upstreams: Mapping[str, int], cors_origins: Sequence[str] = ()
) -> AsyncIterator[EdgeConfig]:
    """Envoy rendered from envoy/envoy.yaml, routing to `upstreams`; stopped on exit."""
    cfg = EdgeConfig(
        listen_port=free_port(),
        admin_port=free_port(),
        upstreams=dict(upstreams),
        cors_origins=tuple(cors_origins),
    )
    proc = await start_envoy(cfg, workdir, quiet=True)
    try:
        await wait_envoy_ready(cfg.admin_port)
        yield cfg
    finally:
        proc.terminate()
        await proc.wait()
