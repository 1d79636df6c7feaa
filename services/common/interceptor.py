"""The server interceptor: request id, authentication, error mapping, logs and metrics.

Every RPC passes through here. Handlers raise `DomainError`s; this turns them into statuses.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

import grpc

from services.common.auth import ON_BEHALF_HEADER, JwtAuthority, current_principal
from services.common.errors import (
    MAX_MESSAGE_CHARS,
    DomainError,
    Internal,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    Unimplemented,
    clip,
    to_status,
    unavailable_from,
)
from services.common.logs import request_id
from services.common.metrics import RPC_LATENCY, RPC_TOTAL

log = logging.getLogger("arconv.rpc")

EXEMPT_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

# Services whose names end so are internal to the mesh: service tokens only (and the edge
# refuses them whatever the token).
INTERNAL_SUFFIX = "InternalService"

# Request ids of calls that bring none: a random prefix per process and a counter, unique
# without a call to the OS's random source per request.
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def is_internal(method: str) -> bool:
    """True for a method ("/pkg.Service/Method") of an internal service (`*InternalService`)."""
    return method.rpartition("/")[0].endswith(INTERNAL_SUFFIX)


class MeshInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates each call and maps its outcome to a status, a log line and metrics.

    Methods of internal services (`*InternalService`) accept only service tokens; `public`
    methods (full names, "/pkg.Service/Method") need no token at all.
    """

    def __init__(
        self,
        *,
        service: str,
        authority: JwtAuthority,
        public: Collection[str] = (),
    ) -> None:
        self._service = service
        self._authority = authority
        self._public = frozenset(public)
        # The wrapped handler of each method, built on its first call: (handler, wrapped).
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(EXEMPT_PREFIXES):
            return handler
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = _wrap(handler, _Call(self, method))
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    async def authenticate(self, method: str, md: dict[str, Any]) -> None:
        """Sets the call's principal, or raises Unauthenticated / PermissionDenied."""
        if method in self._public:
            current_principal.set(None)
            return
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


class _Call:
    """What every call of one method shares: its names and its metrics."""

    __slots__ = ("_icpt", "_latency", "_totals", "method", "short")

    def __init__(self, icpt: MeshInterceptor, method: str) -> None:
        self._icpt = icpt
        self.method = method
        self.short = method.rsplit("/", 1)[-1]
        self._latency = RPC_LATENCY.labels(icpt._service, self.short)
        self._totals: dict[grpc.StatusCode, Any] = {}

    async def begin(self, context: grpc.aio.ServicerContext) -> None:
        md = {k: v for k, v in (context.invocation_metadata() or ())}
        rid = md.get("x-request-id")
        request_id.set(rid if isinstance(rid, str) and 0 < len(rid) <= 128 else new_request_id())
        await self._icpt.authenticate(self.method, md)

    def finish(self, started: float, code: grpc.StatusCode, error: str = "") -> None:
        elapsed = time.perf_counter() - started
        total = self._totals.get(code)
        if total is None:
            total = self._totals[code] = RPC_TOTAL.labels(
                self._icpt._service, self.short, code.name
            )
        total.inc()
        self._latency.observe(elapsed)
        fields: dict[str, object] = {
            "method": self.method,
            "code": code.name,
            "ms": round(elapsed * 1000, 2),
        }
        if error:
            fields["error"] = error
        level = logging.ERROR if code == grpc.StatusCode.INTERNAL else logging.INFO
        log.log(level, "rpc", extra={"fields": fields})

    async def fail(self, context: grpc.aio.ServicerContext, started: float, exc: Exception) -> None:
        err: DomainError
        if isinstance(exc, DomainError):
            err = exc
        elif isinstance(exc, NotImplementedError):
            err = Unimplemented(f"{self.method} is not implemented by this server")
        elif (lost := unavailable_from(exc)) is not None:
            log.warning("%s: %s", self.method, exc)
            err = lost
        else:
            log.exception("unhandled error in %s", self.method)
            err = Internal("internal error; the request id is in the server log")
        self.finish(started, err.code, clip(err.message, MAX_MESSAGE_CHARS))
        status = to_status(err)
        await context.abort(status.code, status.details, status.trailing_metadata)


def _outcome(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.OK


class _Undecodable:
    """What the deserializer gives for a request body that is not the method's message: the
    handler answers INVALID_ARGUMENT (a deserializer that raises makes grpc answer UNKNOWN)."""

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


def _decoded(request: Any) -> Any:
    if type(request) is _Undecodable:
        raise request.error
    return request


async def _decoded_each(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """The client's messages; an undecodable one raises InvalidArgument where it is read."""
    async for request in requests:
        if type(request) is _Undecodable:
            raise request.error
        yield request


def _wrap(handler: grpc.RpcMethodHandler, call: _Call) -> grpc.RpcMethodHandler:
    if handler.unary_unary or handler.stream_unary:
        inner_u = handler.unary_unary or handler.stream_unary
        check_u = _decoded if handler.unary_unary else _decoded_each

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            try:
                await call.begin(context)
                response = await inner_u(check_u(request), context)
            except asyncio.CancelledError:
                call.finish(started, grpc.StatusCode.CANCELLED)
                raise
            except Exception as exc:
                if _is_abort(exc):
                    call.finish(started, _outcome(context))
                    raise
                await call.fail(context, started, exc)
                raise AssertionError("unreachable") from exc
            call.finish(started, _outcome(context))
            return response

        factory = (
            grpc.unary_unary_rpc_method_handler
            if handler.unary_unary
            else grpc.stream_unary_rpc_method_handler
        )
        return factory(
            unary,
            request_deserializer=_lenient(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    inner_s = handler.unary_stream or handler.stream_stream
    check_s = _decoded if handler.unary_stream else _decoded_each

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        started = time.perf_counter()
        try:
            await call.begin(context)
            agen = inner_s(check_s(request), context)
            try:
                async for item in agen:
                    yield item
            finally:
                aclose = getattr(agen, "aclose", None)
                if aclose is not None:
                    await aclose()
        except asyncio.CancelledError:
            call.finish(started, grpc.StatusCode.CANCELLED)
            raise
        except Exception as exc:
            if _is_abort(exc):
                call.finish(started, _outcome(context))
                raise
            await call.fail(context, started, exc)
            return
        call.finish(started, _outcome(context))

    factory_s = (
        grpc.unary_stream_rpc_method_handler
        if handler.unary_stream
        else grpc.stream_stream_rpc_method_handler
    )
    return factory_s(
        streaming,
        request_deserializer=_lenient(handler.request_deserializer),
        response_serializer=_wire_or(handler.response_serializer),
    )


def _wire_or(serializer: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    """A streaming handler may yield a response already in its wire form (bytes), such as
    an event relayed from the bus; it is written as is instead of serialized again."""
    if serializer is None:
        return None
    encode = serializer

    def serialize(response: Any) -> bytes:
        return response if type(response) is bytes else encode(response)

    return serialize


def _is_abort(exc: BaseException) -> bool:
    # context.abort() raises grpc.aio.AbortError; it must propagate untouched.
    return isinstance(exc, grpc.aio.AbortError)
