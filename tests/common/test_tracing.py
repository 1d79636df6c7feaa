"""Tracing in the server kit: off, nothing of OpenTelemetry is imported; on, a response
stream's server span lasts until the stream ends and takes its final status, and a service
channel's call of a streaming method is a client span that ends with the stream, under the
span of the RPC being handled. (Unary calls through two real services: tests/rooms.)"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from arconv.stream.v1 import stream_service_pb2 as spb
from arconv.stream.v1 import stream_service_pb2_grpc as spb_grpc
from opentelemetry.trace import SpanKind, StatusCode

from services.common.clients import ServiceChannels
from services.common.config import Settings
from services.common.context import CallContext, current_call
from tests.common import span_capture
from tests.common.kit_servicer import kit_spec
from tests.common.span_capture import Spans, ids, parent_id
from tests.conftest import StartServer

STREAM = "arconv.stream.v1.StreamService"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
HANDLER_SPAN = "00f067aa0ba902b7"

spans = span_capture.spans


@pytest.mark.parametrize(
    ("room", "code"), [("r1", grpc.StatusCode.OK), ("fail-late", grpc.StatusCode.NOT_FOUND)]
)
async def test_a_stream_called_while_handling_an_rpc(
    spans: Spans, settings: Settings, start_server: StartServer, room: str, code: grpc.StatusCode
) -> None:
    srv = await start_server(settings, kit_spec())
    channels = ServiceChannels(settings, "rooms")
    # As a handler would: the RPC being handled is the new call's parent.
    token = current_call.set(CallContext("req-stream", TRACE_ID, HANDLER_SPAN, "01"))
    try:
        stub = spb_grpc.StreamServiceStub(channels.channel(f"127.0.0.1:{srv.port}"))
        call = stub.Subscribe(spb.SubscribeRequest(room_id=room))
        events = [r.event.event_id async for r in _until_status(call)]
        assert events == [1, 2, 3]
        assert await call.code() == code
    finally:
        current_call.reset(token)
        await channels.close()

    client = await spans.one(SpanKind.CLIENT, STREAM, "Subscribe")
    served = await spans.one(SpanKind.SERVER, STREAM, "Subscribe")
    assert ids(client)[0] == ids(served)[0] == TRACE_ID
    assert parent_id(client) == HANDLER_SPAN and parent_id(served) == ids(client)[1]
    for span in (client, served):
        assert span.attributes is not None
        assert span.attributes["rpc.grpc.status_code"] == code.value[0]
        assert span.attributes["arconv.request_id"] == "req-stream"
    # A refusal is an error of the call, not a fault of the server.
    assert client.status.status_code == (
        StatusCode.UNSET if code == grpc.StatusCode.OK else StatusCode.ERROR
    )
    assert served.status.status_code == StatusCode.UNSET


async def _until_status(call: Any) -> AsyncIterator[Any]:
    try:
        async for item in call:
            yield item
    except grpc.aio.AioRpcError:
        return


def test_without_otel_settings_no_service_imports_opentelemetry() -> None:
    # A fresh interpreter: this one has OpenTelemetry loaded by the tests beside this one.
    code = (
        "import sys\n"
        "from services.common import app, clients, server, tracing\n"
        "from services import rooms, stream, avatar, token, voice\n"
        "import services.rooms.app, services.stream.app, services.avatar.app\n"
        "import services.token.app, services.voice.app\n"
        "assert tracing.setup('rooms') is None and tracing.server_interceptor() is None\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
