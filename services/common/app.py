"""`main()` for every service: read the environment, open resources, serve, clean up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

from services.common import tracing
from services.common.config import ConfigError, Settings, load_settings
from services.common.logs import configure_logging
from services.common.memory import freeze_startup_objects
from services.common.metrics import serve_metrics
from services.common.server import ServiceSpec, create_server, serve_until_signal

S = TypeVar("S", bound=Settings)
log = logging.getLogger("arconv.app")

SpecFactory = Callable[[S], AbstractAsyncContextManager[ServiceSpec]]


def run_service(name: str, settings_cls: type[S], open_spec: SpecFactory[S]) -> None:
    """Entry point of `python -m services.<name>`: exits 2 on a configuration error."""
    try:
        settings = load_settings(settings_cls, name)
    except (ConfigError, ValueError) as exc:
        print(f"arconv {name}: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    assert isinstance(settings, settings_cls)
    configure_logging(name, level=settings.log_level, fmt=settings.log_format)
    try:
        # Off (no OTEL_ exporter configured): nothing of OpenTelemetry is even imported.
        provider = tracing.setup(name)
        try:
            asyncio.run(_serve(name, settings, open_spec))
        finally:
            if provider is not None:
                provider.shutdown()  # the spans still batched, exported before exit
    except ConfigError as exc:
        print(f"arconv {name}: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)


async def _serve(name: str, settings: S, open_spec: SpecFactory[S]) -> None:
    async with open_spec(settings) as spec:
        freeze_startup_objects()
        running = await create_server(settings, spec)
        metrics_port = serve_metrics(
            -1 if settings.metrics_port is None else settings.metrics_port, settings.host
        )
        await serve_until_signal(running, settings, metrics_port=metrics_port)


@contextlib.asynccontextmanager
async def no_resources(spec: ServiceSpec) -> AsyncIterator[ServiceSpec]:
    yield spec
