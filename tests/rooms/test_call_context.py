"""A request's id and W3C trace context follow it from rooms to the avatar service: the
avatar handler sees the ids of the call into rooms, and both servers' log lines carry them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import grpc
import pytest
from arconv.avatar.v1 import avatar_service_pb2 as avatar_pb
from arconv.avatar.v1 import avatar_service_pb2_grpc as avatar_grpc
from arconv.rooms.v1 import rooms_service_pb2 as pb

from services.common.context import CallContext, current_call, parse_traceparent
from services.common.server import ServiceSpec
from tests.common.log_capture import LogCapture
from tests.conftest import StartServer
from tests.rooms.conftest import StartRooms, room_settings

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


class _Avatar(avatar_grpc.AvatarServiceServicer):
    """Answers GetAgent and records each call's context and trace headers."""

    def __init__(self) -> None:
        self.seen: list[tuple[CallContext, dict[str, str]]] = []

    async def GetAgent(self, request: Any, context: Any) -> Any:
        call = current_call.get()
        assert call is not None
        md = {k: v for k, v in context.invocation_metadata() if not k.endswith("-bin")}
        self.seen.append((dataclasses.replace(call), md))
        agent = avatar_pb.Agent(agent_id=request.agent_id, name="Nova")
        return avatar_pb.GetAgentResponse(agent=agent)


@pytest.fixture
async def avatar(tmp_path: Path, start_server: StartServer) -> tuple[_Avatar, int]:
    servicer = _Avatar()

    def register(server: grpc.aio.Server) -> None:
        avatar_grpc.add_AvatarServiceServicer_to_server(servicer, server)

    spec = ServiceSpec(
        name="avatar", grpc_service="arconv.avatar.v1.AvatarService", register=register
    )
    return servicer, (await start_server(room_settings(tmp_path), spec)).port


def _line(capture: LogCapture, method: str) -> dict[str, Any]:
    (line,) = [x for x in capture.lines if x.get("method", "").endswith(method)]
    return line


async def test_request_id_and_trace_context_reach_the_avatar_service(
    start_rooms: StartRooms, avatar: tuple[_Avatar, int], rpc_log: LogCapture, user_md
) -> None:
    servicer, port = avatar
    rooms = await start_rooms(avatar_addr=f"127.0.0.1:{port}")
    md = (
        *user_md("alice"),
        ("x-request-id", "req-from-the-client"),
        ("traceparent", f"00-{TRACE_ID}-{CLIENT_SPAN}-01"),
        ("tracestate", "vendor=opaque"),
    )
    await rooms.stub.CreateRoom(pb.CreateRoomRequest(agent_id="nova"), metadata=md)

    ((call, headers),) = servicer.seen
    assert call.request_id == "req-from-the-client"
    assert call.trace_id == TRACE_ID and call.trace_flags == "01"
    assert call.tracestate == "vendor=opaque"
    # Avatar's parent is rooms' handling of the call, not the client's span.
    version, trace, parent, flags = headers["traceparent"].split("-")
    assert (version, trace, flags) == ("00", TRACE_ID, "01")
    assert parent not in (CLIENT_SPAN, call.span_id)

    created, asked = _line(rpc_log, "/CreateRoom"), _line(rpc_log, "/GetAgent")
    for line in (created, asked):
        assert line["request_id"] == "req-from-the-client" and line["trace_id"] == TRACE_ID


async def test_a_call_without_ids_starts_a_trace_that_the_avatar_call_continues(
    start_rooms: StartRooms, avatar: tuple[_Avatar, int], rpc_log: LogCapture, user_md
) -> None:
    servicer, port = avatar
    rooms = await start_rooms(avatar_addr=f"127.0.0.1:{port}")
    await rooms.stub.CreateRoom(pb.CreateRoomRequest(agent_id="nova"), metadata=user_md("bob"))

    ((call, headers),) = servicer.seen
    created = _line(rpc_log, "/CreateRoom")
    assert created["request_id"] == call.request_id and len(call.request_id) == 32
    assert created["trace_id"] == call.trace_id
    assert parse_traceparent(headers["traceparent"]) == (call.trace_id, "00")
    assert "tracestate" not in headers
    assert _line(rpc_log, "/GetAgent")["trace_id"] == call.trace_id


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero parent
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # 00 has no tail
        "garbage",
    ],
)
def test_invalid_traceparents_are_ignored(traceparent: str) -> None:
    assert parse_traceparent(traceparent) is None


def test_a_later_version_is_read_as_version_00() -> None:
    value = f"01-{TRACE_ID}-{CLIENT_SPAN}-01-whatever-comes-next"
    assert parse_traceparent(value) == (TRACE_ID, "01")
