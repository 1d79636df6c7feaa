"""Optional OpenTelemetry tracing, configured by the standard OTEL_ variables, off by default.

Tracing is on when an exporter is configured (`OTEL_TRACES_EXPORTER`, or an OTLP endpoint in
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`) and `OTEL_SDK_DISABLED`
is not true. Then a service's `main()` installs a tracer provider (the `otel` extra:
opentelemetry-sdk and the OTLP gRPC exporter), and its server and service channels each add
one interceptor (services/common/spans.py): a server span for every RPC, a client span for
every call to another service. Off, nothing of OpenTelemetry is imported and neither
interceptor is in a chain, so calls cost what they cost without it.

The SDK reads the rest of its variables itself: the exporter's (`OTEL_EXPORTER_OTLP_*`:
headers, certificate, timeout, compression), the sampler's (`OTEL_TRACES_SAMPLER`, default
parent-based always-on), the batch processor's (`OTEL_BSP_*`) and the resource's
(`OTEL_SERVICE_NAME`, default `arconv-<service>`; `OTEL_RESOURCE_ATTRIBUTES`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from services.common.config import ConfigError

if TYPE_CHECKING:
    import grpc
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

# The exporters OTEL_TRACES_EXPORTER may name (a comma-separated list).
EXPORTERS = ("otlp", "console", "none")

_tracer: Tracer | None = None


def configured(env: Mapping[str, str]) -> bool:
    """True when `env` turns tracing on (see the module's docstring)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    names = _exporter_names(env)
    if names is not None:
        return bool(names)
    return any(
        env.get(key, "").strip()
        for key in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def _exporter_names(env: Mapping[str, str]) -> list[str] | None:
    """OTEL_TRACES_EXPORTER's exporters (empty for `none`), or None when it is not set."""
    raw = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not raw:
        return None
    names = [n.strip() for n in raw.split(",") if n.strip()]
    unknown = sorted(set(names) - set(EXPORTERS))
    if unknown:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER: unknown exporter {', '.join(unknown)}; "
            f"use {', '.join(EXPORTERS)}"
        )
    return [n for n in names if n != "none"]


def setup(service: str) -> TracerProvider | None:
    """Installs a tracer provider exporting as the environment says, or nothing when tracing
    is off. Returns the provider, for the caller to shut down (which flushes its spans) when
    the service stops. Raises ConfigError for a setting this mesh cannot honour."""
    env = os.environ
    if not configured(env):
        return None
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    ) or "grpc"
    names = _exporter_names(env) or ["otlp"]
    if "otlp" in names and protocol.strip() != "grpc":
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: the services export OTLP over gRPC only"
        )
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ConfigError(
            "tracing is configured (OTEL_ variables) but OpenTelemetry is not installed: "
            "install the 'otel' extra (pip install 'arconv[otel]'), or unset the OTEL_ "
            f"variables ({exc})"
        ) from exc

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over the default name.
    attributes = env.get("OTEL_RESOURCE_ATTRIBUTES", "")
    named = bool(env.get("OTEL_SERVICE_NAME", "").strip()) or "service.name=" in attributes
    resource = Resource.create({} if named else {SERVICE_NAME: f"arconv-{service}"})
    provider = TracerProvider(resource=resource)
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    trace.set_tracer_provider(provider)
    install(provider)
    return provider


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def install(provider: TracerProvider | None) -> None:
    """Traces the servers and service channels built from now on with `provider`'s tracer;
    None stops. `setup` calls it; tests call it with a provider of their own."""
    global _tracer
    _tracer = None if provider is None else provider.get_tracer("arconv")


def server_interceptor() -> grpc.aio.ServerInterceptor | None:
    """The server span interceptor, or None when tracing is off."""
    if _tracer is None:
        return None
    from services.common.spans import ServerSpans

    return ServerSpans(_tracer)


def client_interceptors(target: str) -> list[grpc.aio.ClientInterceptor]:
    """The client span interceptors of a channel to `target` (none when tracing is off)."""
    if _tracer is None:
        return []
    from services.common.spans import client_spans

    return client_spans(_tracer, target)
