"""OpenTelemetry tracing through two real services: a call into rooms, rooms' calls to the real
avatar service, and avatar's handling of them are one trace, each span the child of the one
before, with the RPC attributes, the request id and the status codes; the call context (and so
the logs and the traceparent sent on) agrees with the spans. Then the same spans over OTLP, to
a receiver of the test's own, with tracing configured by the OTEL_ variables alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from arconv.rooms.v1 import rooms_service_pb2 as pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp_pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc
from opentelemetry.trace import SpanKind, StatusCode

from services.common import tracing
from services.common.config import ConfigError
from tests.common import span_capture
from tests.common.log_capture import LogCapture
from tests.common.span_capture import Spans, find, ids, parent_id
from tests.rooms.conftest import StartRooms

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
ROOMS = "arconv.rooms.v1.RoomService"
AVATAR = "arconv.avatar.v1.AvatarService"

spans = span_capture.spans


@pytest.fixture
async def traced_avatar(spans: Spans, avatar_port: int) -> int:
    """The real avatar service, started after tracing was installed (fixtures in order)."""
    return avatar_port


async def test_one_trace_from_the_client_through_rooms_to_avatar(
    spans: Spans, traced_avatar: int, start_rooms: StartRooms, user_md: Any
) -> None:
    rooms = await start_rooms(avatar_addr=f"127.0.0.1:{traced_avatar}")
    md = (
        *user_md("alice"),
        ("x-request-id", "req-traced"),
        ("traceparent", f"00-{TRACE_ID}-{CLIENT_SPAN}-01"),
    )
    await rooms.stub.CreateRoom(pb.CreateRoomRequest(agent_id="nova"), metadata=md)
    created = await spans.one(SpanKind.SERVER, ROOMS, "CreateRoom")
    finished = spans.get_finished_spans()
    assert created.name == f"{ROOMS}/CreateRoom"
    assert ids(created)[0] == TRACE_ID
    assert created.parent is not None and created.parent.is_remote
    assert parent_id(created) == CLIENT_SPAN
    assert created.attributes is not None
    assert created.attributes["rpc.system"] == "grpc"
    assert created.attributes["rpc.grpc.status_code"] == grpc.StatusCode.OK.value[0]
    assert created.attributes["arconv.request_id"] == "req-traced"
    assert created.status.status_code == StatusCode.UNSET

    # Every call rooms made to avatar while handling it: a client span under the server span,
    # and avatar's server span under that client span, all in the client's trace.
    outgoing = find(finished, SpanKind.CLIENT, AVATAR, "GetAgent")
    assert outgoing
    for client in outgoing:
        assert ids(client)[0] == TRACE_ID and parent_id(client) == ids(created)[1]
        assert client.attributes is not None
        assert client.attributes["arconv.request_id"] == "req-traced"
        assert client.attributes["rpc.grpc.status_code"] == 0
        assert client.attributes["server.port"] == traced_avatar
        (served,) = [
            s
            for s in find(finished, SpanKind.SERVER, AVATAR, "GetAgent")
            if s.parent is not None and parent_id(s) == ids(client)[1]
        ]
        assert ids(served)[0] == TRACE_ID and served.parent is not None
        assert served.parent.is_remote
        assert served.attributes is not None
        assert served.attributes["arconv.request_id"] == "req-traced"
        assert served.attributes["rpc.grpc.status_code"] == 0


async def test_a_trace_started_by_rooms_is_the_one_its_logs_and_avatar_see(
    spans: Spans,
    traced_avatar: int,
    start_rooms: StartRooms,
    user_md: Any,
    rpc_log: LogCapture,
) -> None:
    rooms = await start_rooms(avatar_addr=f"127.0.0.1:{traced_avatar}")
    await rooms.stub.CreateRoom(pb.CreateRoomRequest(agent_id="nova"), metadata=user_md("bob"))
    created = await spans.one(SpanKind.SERVER, ROOMS, "CreateRoom")
    finished = spans.get_finished_spans()
    assert created.parent is None
    trace_id, _ = ids(created)
    (line,) = [x for x in rpc_log.lines if str(x.get("method", "")).endswith("/CreateRoom")]
    assert line["trace_id"] == trace_id
    assert created.attributes is not None
    assert created.attributes["arconv.request_id"] == line["request_id"]
    served = find(finished, SpanKind.SERVER, AVATAR, "GetAgent")
    assert served and all(ids(s)[0] == trace_id for s in served)


async def test_status_codes_of_a_refused_call(
    spans: Spans, traced_avatar: int, start_rooms: StartRooms, user_md: Any
) -> None:
    rooms = await start_rooms(avatar_addr=f"127.0.0.1:{traced_avatar}")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await rooms.stub.CreateRoom(
            pb.CreateRoomRequest(agent_id="nobody"), metadata=user_md("alice")
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    not_found = grpc.StatusCode.NOT_FOUND.value[0]

    # The callee's span and the caller's server span: NOT_FOUND is the caller's mistake, not
    # a fault (status unset); the client span of the refused call is an error.
    for span in (
        await spans.one(SpanKind.SERVER, AVATAR, "GetAgent"),
        await spans.one(SpanKind.SERVER, ROOMS, "CreateRoom"),
    ):
        assert span.attributes is not None
        assert span.attributes["rpc.grpc.status_code"] == not_found
        assert span.status.status_code == StatusCode.UNSET
    client = await spans.one(SpanKind.CLIENT, AVATAR, "GetAgent")
    assert client.attributes is not None
    assert client.attributes["rpc.grpc.status_code"] == not_found
    assert client.status.status_code == StatusCode.ERROR


async def test_status_codes_when_the_callee_is_down(
    spans: Spans, start_rooms: StartRooms, user_md: Any, closed_port: int
) -> None:
    rooms = await start_rooms(avatar_addr=f"127.0.0.1:{closed_port}", call_attempts=1)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await rooms.stub.CreateRoom(pb.CreateRoomRequest(agent_id="nova"), metadata=user_md("al"))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    unavailable = grpc.StatusCode.UNAVAILABLE.value[0]

    created = await spans.one(SpanKind.SERVER, ROOMS, "CreateRoom")
    client = await spans.one(SpanKind.CLIENT, AVATAR, "GetAgent")
    assert parent_id(client) == ids(created)[1]
    for span in (created, client):
        assert span.attributes is not None
        assert span.attributes["rpc.grpc.status_code"] == unavailable
        assert span.status.status_code == StatusCode.ERROR
    assert created.status.description and "avatar service" in created.status.description


# --- configured by the OTEL_ variables, exported over OTLP ------------------------------------


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"}, True),
    ],
)
def test_tracing_is_on_only_when_an_exporter_is_configured(env: dict[str, str], on: bool) -> None:
    assert tracing.configured(env) is on


def test_an_unknown_exporter_or_protocol_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="zipkin"):
        tracing.configured({"OTEL_TRACES_EXPORTER": "zipkin"})
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    with pytest.raises(ConfigError, match="gRPC only"):
        tracing.setup("rooms")


def test_nothing_is_installed_without_otel_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert tracing.setup("rooms") is None
    assert tracing.server_interceptor() is None and tracing.client_interceptors("x:1") == []


class _Collector(otlp_grpc.TraceServiceServicer):
    """An OTLP trace receiver: keeps every export request."""

    def __init__(self) -> None:
        self.requests: list[otlp_pb.ExportTraceServiceRequest] = []

    async def Export(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        return otlp_pb.ExportTraceServiceResponse()


@pytest.fixture
async def otlp(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[_Collector, Any]]:
    """A receiver on a free port, and tracing set up from OTEL_ variables that point at it."""
    collector = _Collector()
    server = grpc.aio.server()
    otlp_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    for key in (
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
        "OTEL_SERVICE_NAME",
        "OTEL_EXPORTER_OTLP_INSECURE",
    ):
        monkeypatch.delenv(key, raising=False)
    provider = tracing.setup("rooms")
    assert provider is not None
    yield collector, provider
    tracing.install(None)
    await server.stop(0)


async def test_spans_reach_an_otlp_receiver_configured_by_otel_variables(
    otlp: tuple[_Collector, Any], avatar_port: int, start_rooms: StartRooms, user_md: Any
) -> None:
    collector, provider = otlp
    rooms = await start_rooms(avatar_addr=f"127.0.0.1:{avatar_port}")
    md = (*user_md("alice"), ("traceparent", f"00-{TRACE_ID}-{CLIENT_SPAN}-01"))
    await rooms.stub.CreateRoom(pb.CreateRoomRequest(agent_id="nova"), metadata=md)
    # Shutting the provider down flushes its batch; the exporter's blocking call needs this
    # loop free to answer it.
    await asyncio.to_thread(provider.shutdown)

    exported = [
        (resource.resource, span)
        for request in collector.requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    (resource, created) = next((r, s) for r, s in exported if s.name == f"{ROOMS}/CreateRoom")
    attributes = {a.key: a.value.string_value for a in resource.attributes}
    assert attributes["service.name"] == "arconv-rooms"
    assert attributes["deployment.environment"] == "test"
    assert created.trace_id.hex() == TRACE_ID and created.parent_span_id.hex() == CLIENT_SPAN
    children = [s for _, s in exported if s.parent_span_id == created.span_id]
    assert {s.name for s in children} >= {f"{AVATAR}/GetAgent"}
