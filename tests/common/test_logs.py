"""Structured logs carry the request id of the RPC being handled."""

from __future__ import annotations

import contextlib
import logging

import grpc
from arconv.rooms.v1 import rooms_service_pb2 as pb
from arconv.rooms.v1 import rooms_service_pb2_grpc as pb_grpc

from services.common.context import new_request_id
from tests.common.kit_servicer import kit_spec
from tests.common.log_capture import LogCapture
from tests.conftest import channel


async def test_each_rpc_logs_one_json_line_with_its_request_id(
    settings, start_server, user_md
) -> None:
    capture = LogCapture()
    logger = logging.getLogger("arconv.rpc")
    logger.addHandler(capture)
    logger.setLevel(logging.INFO)
    try:
        srv = await start_server(settings, kit_spec())
        async with channel(srv.port) as ch:
            stub = pb_grpc.RoomServiceStub(ch)
            md = (*user_md("alice"), ("x-request-id", "req-123"))
            await stub.GetRoom(pb.GetRoomRequest(room_id="r"), metadata=md)
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.GetRoom(pb.GetRoomRequest(room_id="missing"), metadata=user_md("a"))
    finally:
        logger.removeHandler(capture)
    ok, failed = capture.lines[-2:]
    assert ok["request_id"] == "req-123"
    assert ok["method"] == "/arconv.rooms.v1.RoomService/GetRoom" and ok["code"] == "OK"
    assert ok["service"] == "kit" and ok["level"] == "info" and isinstance(ok["ms"], float)
    assert failed["code"] == "NOT_FOUND" and failed["request_id"] != "req-123"
    assert len(str(failed["request_id"])) == 32


def test_generated_request_ids_are_distinct_and_32_hex_characters() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
