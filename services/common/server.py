"""Server bootstrap: one `grpc.aio` server with health, reflection, auth, metrics and shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from services.common import tracing
from services.common.auth import JwtAuthority
from services.common.config import Settings
from services.common.interceptor import mesh_interceptors
from services.common.jwks import JwksKeys

log = logging.getLogger("arconv.server")

# Every server describes the mesh's public API by reflection, so one reflection endpoint (the
# edge's) lets grpcurl and buf curl list and describe every public arconv service. Internal
# services (`*InternalService`) are served but not advertised.
MESH_SERVICES = (
    "arconv.rooms.v1.RoomService",
    "arconv.stream.v1.StreamService",
    "arconv.avatar.v1.AvatarService",
    "arconv.token.v1.TokenService",
    "arconv.voice.v1.VoiceService",
)


def _import_descriptors() -> None:
    import arconv.avatar.v1.avatar_service_pb2
    import arconv.rooms.v1.rooms_service_pb2
    import arconv.stream.v1.stream_service_pb2
    import arconv.token.v1.token_service_pb2
    import arconv.voice.v1.voice_service_pb2  # noqa: F401


def authority_from(settings: Settings) -> JwtAuthority:
    jwks = None
    if settings.jwt_jwks_url:
        jwks = JwksKeys(
            settings.jwt_jwks_url,
            refresh_s=settings.jwt_jwks_refresh_s,
            max_age_s=settings.jwt_jwks_max_age_s,
            min_refetch_s=settings.jwt_jwks_min_refetch_s,
            timeout_s=settings.jwt_jwks_timeout_s,
        )
    return JwtAuthority(
        secret=settings.jwt_secret,
        service_secret=settings.service_secret(),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway_s=settings.jwt_leeway_s,
        jwks=jwks,
        algorithms=settings.algorithms(),
    )


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """The server's channel options: the shared ones, ping policy, and connection age."""
    options = [
        *channel_options(settings),
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ("grpc.so_reuseport", 0),
    ]
    if settings.max_connection_age_s > 0:
        options += [
            ("grpc.max_connection_age_ms", round(settings.max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", round(settings.max_connection_age_grace_s * 1000)),
        ]
    return options


def channel_options(settings: Settings) -> list[tuple[str, int]]:
    """Keepalive and message-size options shared by servers and clients."""
    return [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", settings.keepalive_time_s * 1000),
        ("grpc.keepalive_timeout_ms", settings.keepalive_timeout_s * 1000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


@dataclass
class ServiceSpec:
    """What a service contributes to its server."""

    name: str  # "rooms"
    grpc_service: str  # "arconv.rooms.v1.RoomService"
    # Adds the service's servicers: the public one and its `*InternalService`, if any.
    register: Callable[[grpc.aio.Server], None]
    public_methods: Collection[str] = ()
    # Run inside the kit's chain (after auth and request decoding), next to the servicer.
    extra_interceptors: Sequence[grpc.aio.ServerInterceptor] = field(default_factory=tuple)
    # Runs when the server starts shutting down, before in-flight RPCs are drained: a chance
    # to end long-lived streams with a status that tells clients to reconnect.
    on_shutdown: Callable[[], Awaitable[None]] | None = None


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer
    spec: ServiceSpec

    async def stop(self, grace: float | None, *, drain_delay_s: float = 0.0) -> None:
        """Health NOT_SERVING first, so balancers drain us; calls are still served for
        `drain_delay_s` while they notice; then a graceful stop."""
        await self.health.enter_graceful_shutdown()
        if drain_delay_s > 0:
            await asyncio.sleep(drain_delay_s)
        if self.spec.on_shutdown is not None:
            await self.spec.on_shutdown()
        await self.server.stop(grace)


async def create_server(
    settings: Settings, spec: ServiceSpec, *, port: int | None = None
) -> RunningServer:
    """Builds and starts the server on `port` (default settings.port; 0 picks a free port)."""
    _import_descriptors()
    chain = mesh_interceptors(
        service=spec.name,
        authority=authority_from(settings),
        public=spec.public_methods,
        spans=tracing.server_interceptor(),
    )
    server = grpc.aio.server(
        interceptors=[*chain, *spec.extra_interceptors],
        options=server_options(settings),
    )
    spec.register(server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (
            *MESH_SERVICES,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    bind_port = settings.port if port is None else port
    bound = server.add_insecure_port(f"{settings.host}:{bind_port}")
    if bound == 0:
        raise RuntimeError(f"cannot bind {settings.host}:{bind_port}; is the port in use?")
    await server.start()
    for name in ("", spec.grpc_service):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server=server, port=bound, health=health, spec=spec)


async def serve_until_signal(
    running: RunningServer,
    settings: Settings,
    *,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    metrics_port: int | None = None,
) -> None:
    """Serves until SIGTERM or SIGINT, then drains and stops gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "serving",
        extra={
            "fields": {
                "grpc_service": running.spec.grpc_service,
                "port": running.port,
                "metrics_port": -1 if metrics_port is None else metrics_port,
            }
        },
    )
    waiter = asyncio.ensure_future(running.server.wait_for_termination())
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    log.info(
        "shutting down",
        extra={
            "fields": {
                "grace_s": settings.shutdown_grace_s,
                "drain_delay_s": settings.shutdown_drain_delay_s,
            }
        },
    )
    await running.stop(settings.shutdown_grace_s, drain_delay_s=settings.shutdown_drain_delay_s)
    if on_stop is not None:
        await on_stop()
    waiter.cancel()
    stopper.cancel()
