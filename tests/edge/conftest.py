"""A real Envoy in front of real in-process servers, on free ports."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

from services.edge import EdgeConfig, envoy_log, start_envoy, wait_envoy_ready
from services.ports import free_port


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
        await wait_envoy_ready(cfg.admin_port, process=proc, log=envoy_log(cfg, workdir))
        yield cfg
    finally:
        proc.terminate()
        await proc.wait()
