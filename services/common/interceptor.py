"""The server interceptors, one job each, chained by `mesh_interceptors` in this order
(outermost first):

1. `RequestContextInterceptor` sets the call's context (request id, W3C trace context) from
   its headers, before any other layer runs, so every log line of the call carries it.
   When tracing is on, the server span interceptor (services/common/spans.py) comes next:
   the call's span, whose ids become the call context's.
2. `LogsMetricsInterceptor` times the call and writes its log line and metrics: outermost
   of the wrappers, so the time and the status include every layer below.
3. `ErrorsInterceptor` turns whatever the layers below raise into a status with google.rpc
   details: handlers (and auth, and request decoding) raise `DomainError`s.
4. `AuthInterceptor` sets the call's principal, or refuses the call.
5. `CodecInterceptor` answers a request body that is not the method's message with
   INVALID_ARGUMENT (after auth: an unauthenticated caller learns nothing about messages), and
   writes responses a stream yields in wire form as they are.

Each wraps a method's handler once, on its first call, and reuses the wrapper. grpc.aio runs
the outermost handler as a coroutine or async generator function, so layers 2 to 4 are
those; layer 5 (and auth for public methods) is a plain function that returns the inner
coroutine or async iterator, one relay fewer per streamed message. Health and reflection
calls pass through untouched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from typing import Any, TypeVar

import grpc

from services.common.auth import ON_BEHALF_HEADER, JwtAuthority, current_principal
from services.common.context import call_context_from, current_call
from services.common.errors import (
    MAX_MESSAGE_CHARS,
    DomainError,
    Internal,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    Unimplemented,
    clip,
)
from services.common.metrics import RPC_LATENCY, RPC_TOTAL
from services.common.outage import unavailable_from
from services.common.status import abort

log = logging.getLogger("arconv.rpc")

EXEMPT_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

# Services whose names end so are internal to the mesh: service tokens only (and the edge
# refuses them whatever the token).
INTERNAL_SUFFIX = "InternalService"

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]]


def is_internal(method: str) -> bool:
    """True for a method ("/pkg.Service/Method") of an internal service (`*InternalService`)."""
    return method.rpartition("/")[0].endswith(INTERNAL_SUFFIX)


def mesh_interceptors(
    *,
    service: str,
    authority: JwtAuthority,
    public: Collection[str] = (),
    spans: grpc.aio.ServerInterceptor | None = None,
) -> list[grpc.aio.ServerInterceptor]:
    """The chain every server runs, outermost first (see the module's docstring); `spans`, the
    server span interceptor when tracing is on."""
    return [
        RequestContextInterceptor(),
        *(() if spans is None else (spans,)),
        LogsMetricsInterceptor(service),
        ErrorsInterceptor(),
        AuthInterceptor(authority, public),
        CodecInterceptor(),
    ]


class RequestContextInterceptor(grpc.aio.ServerInterceptor):
    """Sets the call's `CallContext`. grpc.aio runs the interceptors in the call's own task,
    so the context var set here is the handler's; no handler is wrapped."""

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        if not handler_call_details.method.startswith(EXEMPT_PREFIXES):
            current_call.set(call_context_from(handler_call_details.invocation_metadata))
        return await continuation(handler_call_details)


class _PerMethod(grpc.aio.ServerInterceptor):
    """A layer that wraps each method's handler once and reuses the wrapper: building it per
    call cost more than the rest of the interceptor did (bench figure (e), unary calls/s)."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(EXEMPT_PREFIXES):
            return handler
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self.wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        raise NotImplementedError


def _behavior(handler: grpc.RpcMethodHandler) -> Callable[..., Any]:
    inner: Callable[..., Any] = (
        handler.unary_unary or handler.stream_unary or handler.unary_stream
    ) or handler.stream_stream
    return inner


def _rebuild(
    handler: grpc.RpcMethodHandler,
    behavior: Callable[..., Any],
    *,
    request_deserializer: Callable[[bytes], Any] | None = None,
    response_serializer: Callable[[Any], bytes] | None = None,
) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` running `behavior`."""
    if handler.unary_unary:
        factory: Callable[..., grpc.RpcMethodHandler] = grpc.unary_unary_rpc_method_handler
    elif handler.stream_unary:
        factory = grpc.stream_unary_rpc_method_handler
    elif handler.unary_stream:
        factory = grpc.unary_stream_rpc_method_handler
    else:
        factory = grpc.stream_stream_rpc_method_handler
    return factory(
        behavior,
        request_deserializer=request_deserializer or handler.request_deserializer,
        response_serializer=response_serializer or handler.response_serializer,
    )


async def _aclose(agen: Any) -> None:
    """Closes the inner stream however its relay ended (a generator left open would run its
    cleanup only when collected)."""
    aclose = getattr(agen, "aclose", None)
    if aclose is not None:
        await aclose()


_CANCELLED = grpc.StatusCode.CANCELLED
T = TypeVar("T")


def _outcome(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.OK


def observed(
    handler: grpc.RpcMethodHandler,
    begin: Callable[[], T],
    end: Callable[[T, grpc.StatusCode], None],
) -> grpc.RpcMethodHandler:
    """`handler`, each call of it observed: `begin()` as it starts, `end(what begin gave, its
    status code)` once it ends (a stream: when the stream ends; a call cancelled
    under it: CANCELLED)."""
    inner = _behavior(handler)
    if not handler.response_streaming:

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            began, cancelled = begin(), False
            try:
                return await inner(request, context)
            except asyncio.CancelledError:
                cancelled = True
                raise
            finally:
                end(began, _CANCELLED if cancelled else _outcome(context))

        return _rebuild(handler, unary)

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        began, cancelled = begin(), False
        agen = inner(request, context)
        try:
            async for item in agen:
                yield item
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            try:
                await _aclose(agen)
            finally:
                end(began, _CANCELLED if cancelled else _outcome(context))

    return _rebuild(handler, streaming)


class LogsMetricsInterceptor(_PerMethod):
    """One log line and the metrics of each call: its status code and how long it took
    (streams: until the stream ends)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        service = self._service
        short = method.rsplit("/", 1)[-1]
        latency = RPC_LATENCY.labels(service, short)
        totals: dict[grpc.StatusCode, Any] = {}

        def finish(started: float, code: grpc.StatusCode) -> None:
            elapsed = time.perf_counter() - started
            total = totals.get(code)
            if total is None:
                total = totals[code] = RPC_TOTAL.labels(service, short, code.name)
            total.inc()
            latency.observe(elapsed)
            fields: dict[str, object] = {
                "method": method,
                "code": code.name,
                "ms": round(elapsed * 1000, 2),
            }
            call = current_call.get()
            if call is not None and call.error:
                fields["error"] = call.error
            level = logging.ERROR if code == grpc.StatusCode.INTERNAL else logging.INFO
            log.log(level, "rpc", extra={"fields": fields})

        return observed(handler, time.perf_counter, finish)


class ErrorsInterceptor(_PerMethod):
    """Turns what a call raises into its status: a `DomainError` as it says, a handler that
    is not implemented UNIMPLEMENTED, a lost store UNAVAILABLE, anything else INTERNAL
    without its text. An abort and a cancellation pass untouched."""

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        inner = _behavior(handler)

        if not handler.response_streaming:

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    return await inner(request, context)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await _abort(context, method, exc)
                    raise AssertionError("unreachable") from exc

            return _rebuild(handler, unary)

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                agen = inner(request, context)
                try:
                    async for item in agen:
                        yield item
                finally:
                    await _aclose(agen)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await _abort(context, method, exc)

        return _rebuild(handler, streaming)


async def _abort(context: grpc.aio.ServicerContext, method: str, exc: Exception) -> None:
    """Ends the call with the status `exc` maps to (raises grpc.aio.AbortError)."""
    err: DomainError
    if isinstance(exc, DomainError):
        err = exc
    elif isinstance(exc, NotImplementedError):
        err = Unimplemented(f"{method} is not implemented by this server")
    elif (lost := unavailable_from(exc)) is not None:
        log.warning("%s: %s", method, exc)
        err = lost
    else:
        log.exception("unhandled error in %s", method)
        err = Internal("internal error; the request id is in the server log")
    call = current_call.get()
    if call is not None:
        call.error = clip(err.message, MAX_MESSAGE_CHARS)
    await abort(context, err)


class AuthInterceptor(_PerMethod):
    """Sets the call's principal from its bearer token, or raises Unauthenticated /
    PermissionDenied. Methods of internal services (`*InternalService`) accept only service
    tokens; `public` methods (full names, "/pkg.Service/Method") need no token at all.
    Runs inside `ErrorsInterceptor`, which turns its refusals into statuses."""

    def __init__(self, authority: JwtAuthority, public: Collection[str] = ()) -> None:
        super().__init__()
        self._authority = authority
        self._public = frozenset(public)

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        inner = _behavior(handler)
        if method in self._public:

            def anyone(request: Any, context: grpc.aio.ServicerContext) -> Any:
                current_principal.set(None)
                return inner(request, context)

            return _rebuild(handler, anyone)

        if not handler.response_streaming:

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await self.authenticate(method, context.invocation_metadata())
                return await inner(request, context)

            return _rebuild(handler, unary)

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await self.authenticate(method, context.invocation_metadata())
            agen = inner(request, context)
            try:
                async for item in agen:
                    yield item
            finally:
                await _aclose(agen)

        return _rebuild(handler, streaming)

    async def authenticate(self, method: str, metadata: Iterable[Any] | None) -> None:
        """Sets the call's principal, or raises Unauthenticated / PermissionDenied."""
        md = {k: v for k, v in (metadata or ())}
        header = md.get("authorization", "")
        if not isinstance(header, str) or not header:
            raise Unauthenticated(
                "missing authorization metadata; send 'authorization: Bearer <token>'",
                reason="TOKEN_MISSING",
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated(
                "authorization must be 'Bearer <token>'", reason="TOKEN_MALFORMED"
            )
        on_behalf = md.get(ON_BEHALF_HEADER)
        p = await self._authority.principal_for(
            token.strip(), on_behalf if isinstance(on_behalf, str) else None
        )
        if not p.is_service and is_internal(method):
            raise PermissionDenied(
                f"{method} is internal to the mesh and needs a service token",
                reason="INTERNAL_METHOD",
            )
        current_principal.set(p)


class CodecInterceptor(_PerMethod):
    """A request body that is not the method's message becomes INVALID_ARGUMENT where the
    handler would read it (a deserializer that raises makes grpc answer UNKNOWN), and a
    streaming handler may yield a response already in wire form (bytes), such as an event
    relayed from the bus, which is written as is instead of serialized again."""

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        inner = _behavior(handler)
        if handler.request_streaming:

            def each(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
                return inner(_decoded_each(requests), context)

            behavior: Callable[..., Any] = each
        else:

            def one(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if type(request) is _Undecodable:
                    raise request.error
                return inner(request, context)

            behavior = one
        serializer = handler.response_serializer
        return _rebuild(
            handler,
            behavior,
            request_deserializer=_lenient(handler.request_deserializer),
            response_serializer=_wire_or(serializer) if handler.response_streaming else serializer,
        )


class _Undecodable:
    """What the deserializer gives for a request body that is not the method's message."""

    __slots__ = ("error",)

    def __init__(self, error: InvalidArgument) -> None:
        self.error = error


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    decode = deserializer
    message = getattr(getattr(decode, "__self__", None), "DESCRIPTOR", None)
    name = message.full_name if message is not None else "request message"

    def deserialize(data: bytes) -> Any:
        try:
            return decode(data)
        except Exception as exc:  # DecodeError, or any other refusal of the bytes
            return _Undecodable(
                InvalidArgument(
                    f"the request body is not a valid {name} ({len(data)} bytes): {exc}",
                    reason="UNDECODABLE_REQUEST",
                )
            )

    return deserialize


async def _decoded_each(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """The client's messages; an undecodable one raises InvalidArgument where it is read."""
    async for request in requests:
        if type(request) is _Undecodable:
            raise request.error
        yield request


def _wire_or(serializer: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    if serializer is None:
        return None
    encode = serializer

    def serialize(response: Any) -> bytes:
        return response if type(response) is bytes else encode(response)

    return serialize
