"""Channels for service-to-service calls: a service token, a default deadline, keepalive,
and retries of idempotent calls declared in the channel's gRPC service config.

Callers act for a user with `metadata=for_user(user_id)`; the channel adds the service's
bearer token, the request id and W3C trace context of the RPC being handled (so the callee's
logs carry the same ids), and, when the caller gives no timeout, the default deadline. With
tracing on, each call is a client span whose id goes out as the callee's parent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import grpc

from services.common import tracing
from services.common.auth import ON_BEHALF_HEADER, ServiceTokenSource
from services.common.config import Settings
from services.common.context import current_call
from services.common.idempotent import MESH, retried_by
from services.common.server import authority_from, channel_options

# The methods the services call on each other that may run twice with the same outcome (reads,
# and writes keyed so a repeat changes nothing). gRPC retries them when the answer is
# UNAVAILABLE (a replica down or restarting, a lost connection, a store that is briefly
# unreachable), within the call's deadline. The list is services.common.idempotent's.
IDEMPOTENT_METHODS: dict[str, tuple[str, ...]] = retried_by(MESH)


def service_config(attempts: int) -> str:
    """The channels' gRPC service config: IDEMPOTENT_METHODS retried on UNAVAILABLE."""
    if attempts <= 1:
        return json.dumps({})
    names = [
        {"service": service, "method": method}
        for service, methods in IDEMPOTENT_METHODS.items()
        for method in methods
    ]
    policy = {
        "maxAttempts": attempts,
        "initialBackoff": "0.1s",
        "maxBackoff": "1s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    return json.dumps({"methodConfig": [{"name": names, "retryPolicy": policy}]})


def for_user(user_id: str) -> tuple[tuple[str, str], ...]:
    """Call metadata that makes a service call act for `user_id`."""
    return ((ON_BEHALF_HEADER, user_id),)


class _Auth:
    def __init__(self, tokens: ServiceTokenSource, timeout_s: float) -> None:
        self._tokens = tokens
        self._timeout = timeout_s

    def _details(self, d: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        md = grpc.aio.Metadata()
        for k, v in d.metadata or ():
            if k != "authorization":
                md.add(k, v)
        md.add("authorization", f"Bearer {self._tokens.token()}")
        # The call context rides in the same pass over the metadata as the token; a caller's
        # own x-request-id or traceparent wins.
        call = current_call.get()
        if call is not None:
            for key, value in call.outgoing():
                if key not in md:
                    md.add(key, value)
        return grpc.aio.ClientCallDetails(
            method=d.method,
            timeout=d.timeout if d.timeout is not None else self._timeout,
            metadata=md,
            credentials=d.credentials,
            wait_for_ready=d.wait_for_ready,
        )


class _UU(_Auth, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request)


class _US(_Auth, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request)


class ServiceChannels:
    """One channel per target address, shared by every stub of this process."""

    def __init__(self, settings: Settings, service: str) -> None:
        self._settings = settings
        self._tokens = ServiceTokenSource(
            authority_from(settings), service, settings.service_token_ttl_s
        )
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, target: str) -> grpc.aio.Channel:
        ch = self._channels.get(target)
        if ch is None:
            t = self._settings.call_timeout_s
            ch = grpc.aio.insecure_channel(
                target,
                options=[
                    *channel_options(self._settings),
                    ("grpc.service_config", service_config(self._settings.call_attempts)),
                    # Every address the target resolves to, in turn (a list such as make
                    # cluster's, or DNS of several replicas), rather than the first only.
                    ("grpc.lb_policy_name", "round_robin"),
                ],
                # Client spans (when tracing is on) outside the token and the call context.
                interceptors=[
                    *tracing.client_interceptors(target),
                    _UU(self._tokens, t),
                    _US(self._tokens, t),
                ],
            )
            self._channels[target] = ch
        return ch

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()
