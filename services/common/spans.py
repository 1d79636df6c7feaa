"""OpenTelemetry spans of RPCs: the server span interceptor in the kit's chain, and the client
span interceptors of the service channels. Imported only when tracing is on
(services/common/tracing.py).

One source of truth, the call context (services/common/context.py): a server span continues
the trace the request-context interceptor read from the caller's `traceparent` (the caller's
span is its parent) and its ids become the call's, so the call's log lines, its span and the
`traceparent` of every call its handler makes name the same trace and span. A client span is a
child of the handler's server span and goes out as the callee's parent in `traceparent`.

Spans follow the RPC semantic conventions: named `package.Service/Method`, with rpc.system
`grpc`, rpc.service, rpc.method and rpc.grpc.status_code, and the request id as
`arconv.request_id`. A server span is an error for the codes the conventions name (a server
fault, not a caller's mistake); a client span for any code but OK.

These are the SDK's spans made here rather than opentelemetry-instrumentation-grpc's: its aio
server interceptor reads the trace context again with its own propagator and sees a status
only through `abort` on a wrapped servicer context, and its aio client interceptor turns a
response stream into a generator without the call's methods. Here a span reads its status
where the logs interceptor does, after the errors layer, so a span, a log line and a metric
never disagree about a call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
    TraceState,
)

from services.common.context import (
    TRACEPARENT_HEADER,
    TRACESTATE_HEADER,
    CallContext,
    current_call,
)
from services.common.interceptor import _PerMethod, observed

REQUEST_ID_ATTRIBUTE = "arconv.request_id"

# The codes that make a server span an error (the RPC semantic conventions): faults of the
# server, where the caller's mistakes (NOT_FOUND, INVALID_ARGUMENT, ...) are not.
SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def _names(method: str) -> tuple[str, dict[str, Any]]:
    """The span name and RPC attributes of a method ("/pkg.Service/Method")."""
    name = method.lstrip("/")
    service, _, short = name.rpartition("/")
    return name, {"rpc.system": "grpc", "rpc.service": service, "rpc.method": short}


def _ended(span: Span, code: grpc.StatusCode, error: bool, message: str | None) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if error:
        span.set_status(Status(StatusCode.ERROR, message or code.name))
    span.end()


def _span_context(call: CallContext, span_id: str, *, remote: bool) -> SpanContext:
    return SpanContext(
        trace_id=int(call.trace_id, 16),
        span_id=int(span_id, 16),
        is_remote=remote,
        trace_flags=TraceFlags(int(call.trace_flags, 16)),
        trace_state=TraceState.from_header([call.tracestate]) if call.tracestate else None,
    )


def _within(parent: SpanContext | None) -> otel_context.Context:
    """An OpenTelemetry context whose current span is `parent` (none: a new trace)."""
    if parent is None:
        return otel_context.Context()
    return trace.set_span_in_context(NonRecordingSpan(parent), otel_context.Context())


def _traceparent(sc: SpanContext) -> str:
    return f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{sc.trace_flags:02x}"


class ServerSpans(_PerMethod):
    """A SERVER span for every call, from its start until its status is known (streams: until
    the stream ends). Runs right inside the request-context interceptor."""

    def __init__(self, tracer: Tracer) -> None:
        super().__init__()
        self._tracer = tracer

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        tracer = self._tracer
        name, attributes = _names(method)

        def start() -> tuple[Span, CallContext | None]:
            call = current_call.get()
            if call is None:
                return tracer.start_span(name, _within(None), SpanKind.SERVER, attributes), None
            parent = _span_context(call, call.parent_id, remote=True) if call.parent_id else None
            span = tracer.start_span(
                name,
                _within(parent),
                SpanKind.SERVER,
                {**attributes, REQUEST_ID_ATTRIBUTE: call.request_id},
            )
            # The span's ids become the call's: its logs and downstream calls name this span.
            sc = span.get_span_context()
            call.trace_id = f"{sc.trace_id:032x}"
            call.span_id = f"{sc.span_id:016x}"
            call.trace_flags = f"{sc.trace_flags:02x}"
            return span, call

        def finish(began: tuple[Span, CallContext | None], code: grpc.StatusCode) -> None:
            span, call = began
            _ended(span, code, code in SERVER_ERRORS, call.error if call is not None else None)

        return observed(handler, start, finish)


class _ClientSpans:
    """Starts a CLIENT span for a call and puts its `traceparent` in the call's metadata; the
    service channels' auth interceptor adds the request id beside it."""

    def __init__(self, tracer: Tracer, target: str) -> None:
        self._tracer = tracer
        host, _, port = target.rpartition(":")
        self._server: dict[str, Any] = (
            {"server.address": host, "server.port": int(port)}
            if host and port.isdigit()
            else {"server.address": target}
        )
        # Spans of streams whose end a done-callback reports: held until then.
        self._ending: set[asyncio.Task[None]] = set()

    def start(self, d: grpc.aio.ClientCallDetails) -> tuple[Span, grpc.aio.ClientCallDetails]:
        method = d.method.decode() if isinstance(d.method, bytes) else d.method
        name, attributes = _names(method)
        attributes.update(self._server)
        call = current_call.get()
        parent = None
        if call is not None:
            attributes[REQUEST_ID_ATTRIBUTE] = call.request_id
            parent = _span_context(call, call.span_id, remote=False)
        span = self._tracer.start_span(name, _within(parent), SpanKind.CLIENT, attributes)
        sc = span.get_span_context()
        md = grpc.aio.Metadata()
        for k, v in d.metadata or ():
            if k not in (TRACEPARENT_HEADER, TRACESTATE_HEADER):
                md.add(k, v)
        md.add(TRACEPARENT_HEADER, _traceparent(sc))
        if sc.trace_state:
            md.add(TRACESTATE_HEADER, sc.trace_state.to_header())
        details = grpc.aio.ClientCallDetails(
            method=d.method,
            timeout=d.timeout,
            metadata=md,
            credentials=d.credentials,
            wait_for_ready=d.wait_for_ready,
        )
        return span, details

    async def end(self, span: Span, call: Any) -> None:
        code: grpc.StatusCode = await call.code()
        message = None if code == grpc.StatusCode.OK else await call.details()
        _ended(span, code, code != grpc.StatusCode.OK, message)

    def end_later(self, span: Span) -> Callable[[Any], None]:
        def done(call: Any) -> None:
            task = asyncio.get_running_loop().create_task(self.end(span, call))
            self._ending.add(task)
            task.add_done_callback(self._ending.discard)

        return done


class _UnaryUnarySpans(_ClientSpans, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        span, details = self.start(client_call_details)
        try:
            call = await continuation(details, request)
            # The call as the caller gets it, finished: the span ends with its status.
            await self.end(span, call)
        except asyncio.CancelledError:
            _ended(span, grpc.StatusCode.CANCELLED, True, None)
            raise
        except Exception:
            _ended(span, grpc.StatusCode.UNKNOWN, True, None)
            raise
        return call


class _UnaryStreamSpans(_ClientSpans, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        span, details = self.start(client_call_details)
        call = await continuation(details, request)
        call.add_done_callback(self.end_later(span))
        return call


def client_spans(tracer: Tracer, target: str) -> list[grpc.aio.ClientInterceptor]:
    """The interceptors that give a channel's calls their CLIENT spans."""
    return [_UnaryUnarySpans(tracer, target), _UnaryStreamSpans(tracer, target)]
