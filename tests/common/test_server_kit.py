"""The server kit through a real server: auth, internal services, errors, health, reflection."""

from __future__ import annotations

import asyncio
import contextlib
import time

import grpc
import jwt
import pytest
from arconv.rooms.v1 import rooms_service_pb2 as pb
from arconv.rooms.v1 import rooms_service_pb2_grpc as pb_grpc
from arconv.stream.v1 import stream_service_pb2 as spb
from arconv.stream.v1 import stream_service_pb2_grpc as spb_grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from services.common.config import Settings
from services.common.status import status_details
from tests.common.kit_servicer import kit_spec
from tests.conftest import StartServer, bearer, channel


@pytest.fixture
async def kit(settings: Settings, start_server: StartServer) -> pb_grpc.RoomServiceStub:
    srv = await start_server(settings, kit_spec())
    async with channel(srv.port) as ch:
        yield pb_grpc.RoomServiceStub(ch)


@pytest.fixture
async def kit_internal(
    settings: Settings, start_server: StartServer
) -> pb_grpc.RoomInternalServiceStub:
    srv = await start_server(settings, kit_spec())
    async with channel(srv.port) as ch:
        yield pb_grpc.RoomInternalServiceStub(ch)


def _claims(settings: Settings, **over: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": "alice",
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + 600,
    }
    claims.update(over)
    return claims


async def _code(stub: pb_grpc.RoomServiceStub, md: object, room: str = "r1") -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetRoom(pb.GetRoomRequest(room_id=room), metadata=md)
    return err.value.code()


async def test_valid_user_token_sets_the_principal(kit, user_md) -> None:
    r = await kit.GetRoom(pb.GetRoomRequest(room_id="r1"), metadata=user_md("alice"))
    assert r.room.user_id == "alice"


async def test_missing_token_is_unauthenticated(kit) -> None:
    assert await _code(kit, ()) == grpc.StatusCode.UNAUTHENTICATED


async def test_non_bearer_scheme_is_unauthenticated(kit) -> None:
    assert await _code(kit, (("authorization", "Basic YWxpY2U6eA=="),)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )


async def test_expired_token_is_unauthenticated(kit, settings: Settings) -> None:
    now = int(time.time())
    token = jwt.encode(
        _claims(settings, iat=now - 7200, exp=now - 3600), settings.jwt_secret, algorithm="HS256"
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await kit.GetRoom(pb.GetRoomRequest(room_id="r1"), metadata=bearer(token))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    infos = [d for d in status_details(err.value) if isinstance(d, error_details_pb2.ErrorInfo)]
    assert infos[0].reason == "TOKEN_EXPIRED"


async def test_wrong_signature_is_unauthenticated(kit, settings: Settings) -> None:
    token = jwt.encode(_claims(settings), "another-secret-of-sufficient-length!!", "HS256")
    assert await _code(kit, bearer(token)) == grpc.StatusCode.UNAUTHENTICATED


async def test_alg_none_is_unauthenticated(kit, settings: Settings) -> None:
    token = jwt.encode(_claims(settings), None, algorithm="none")  # type: ignore[arg-type]
    assert await _code(kit, bearer(token)) == grpc.StatusCode.UNAUTHENTICATED


async def test_wrong_audience_and_issuer_are_unauthenticated(kit, settings: Settings) -> None:
    for over in ({"aud": "someone-else"}, {"iss": "someone-else"}):
        token = jwt.encode(_claims(settings, **over), settings.jwt_secret, algorithm="HS256")
        assert await _code(kit, bearer(token)) == grpc.StatusCode.UNAUTHENTICATED


async def test_garbage_token_is_unauthenticated(kit) -> None:
    assert await _code(kit, bearer("not.a.jwt")) == grpc.StatusCode.UNAUTHENTICATED


async def test_internal_service_refuses_user_token(kit_internal, user_md) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await kit_internal.AppendMessage(
            pb.AppendMessageRequest(room_id="r1"), metadata=user_md("alice")
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    info = [d for d in status_details(err.value) if isinstance(d, error_details_pb2.ErrorInfo)]
    assert [i.reason for i in info] == ["INTERNAL_METHOD"]


async def test_internal_service_without_token_is_unauthenticated(kit_internal) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await kit_internal.AppendMessage(pb.AppendMessageRequest(room_id="r1"))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_internal_service_accepts_service_token_acting_for_user(
    kit_internal, service_md
) -> None:
    r = await kit_internal.AppendMessage(
        pb.AppendMessageRequest(room_id="r1"), metadata=service_md("bob")
    )
    assert r.message.sender_id == "bob"


async def test_user_token_cannot_act_for_another_user(kit, user_md) -> None:
    md = (*user_md("alice"), ("x-arconv-user", "bob"))
    r = await kit.GetRoom(pb.GetRoomRequest(room_id="r1"), metadata=md)
    assert r.room.user_id == "alice"


async def test_role_service_claim_signed_by_another_key_is_refused(kit_internal, settings) -> None:
    token = jwt.encode(
        _claims(settings, role="service", sub="service:x"), "x" * 40, algorithm="HS256"
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await kit_internal.AppendMessage(
            pb.AppendMessageRequest(room_id="r1"), metadata=bearer(token)
        )
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_domain_errors_map_to_status_with_details(kit, user_md) -> None:
    md = user_md("alice")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await kit.GetRoom(pb.GetRoomRequest(room_id="missing"), metadata=md)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    kinds = {type(d).__name__ for d in status_details(err.value)}
    assert {"ErrorInfo", "ResourceInfo"} <= kinds

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await kit.GetRoom(pb.GetRoomRequest(room_id=""), metadata=md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = [d for d in status_details(err.value) if isinstance(d, error_details_pb2.BadRequest)]
    assert bad[0].field_violations[0].field == "room_id"

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await kit.GetRoom(pb.GetRoomRequest(room_id="ended"), metadata=md)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = next(d for d in status_details(err.value) if isinstance(d, error_details_pb2.ErrorInfo))
    assert info.metadata["status"] == "ROOM_STATUS_ENDED"


async def test_unexpected_exception_is_internal_without_leaking(kit, user_md) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await kit.GetRoom(pb.GetRoomRequest(room_id="boom"), metadata=user_md("alice"))
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "unexpected bug" not in (err.value.details() or "")


async def test_unimplemented_method_answers_unimplemented(kit, user_md) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await kit.ListRooms(pb.ListRoomsRequest(), metadata=user_md("alice"))
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_streaming_handler_errors_after_items(settings, start_server, user_md) -> None:
    srv = await start_server(settings, kit_spec())
    async with channel(srv.port) as ch:
        stub = spb_grpc.StreamServiceStub(ch)
        call = stub.Subscribe(spb.SubscribeRequest(room_id="fail-late"), metadata=user_md("a"))
        got = []
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for item in call:
                got.append(item.event.event_id)
        assert got == [1, 2, 3]
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        no_auth = stub.Subscribe(spb.SubscribeRequest(room_id="x"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in no_auth:
                pass
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_metrics_count_rpcs_by_method_and_code(kit, user_md) -> None:
    def count(code: str) -> float:
        v = REGISTRY.get_sample_value(
            "arconv_rpc_total", {"service": "kit", "method": "GetRoom", "code": code}
        )
        return v or 0.0

    async def counted(code: str, expected: float) -> float:
        # An error status reaches the client before the server's logs-and-metrics layer has
        # finished the call (abort sends it at once), so its count may land a moment later.
        for _ in range(1000):  # at most 5 s
            if count(code) >= expected:
                break
            await asyncio.sleep(0.005)
        return count(code)

    ok, nf = count("OK"), count("NOT_FOUND")
    await kit.GetRoom(pb.GetRoomRequest(room_id="r"), metadata=user_md("alice"))
    with pytest.raises(grpc.aio.AioRpcError):
        await kit.GetRoom(pb.GetRoomRequest(room_id="missing"), metadata=user_md("alice"))
    assert await counted("OK", ok + 1) == ok + 1
    assert await counted("NOT_FOUND", nf + 1) == nf + 1
    hist = REGISTRY.get_sample_value(
        "arconv_rpc_duration_seconds_count", {"service": "kit", "method": "GetRoom"}
    )
    assert hist is not None and hist >= 2


async def test_health_needs_no_token_and_goes_not_serving_on_stop(settings, start_server) -> None:
    srv = await start_server(settings, kit_spec())
    async with channel(srv.port) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for name in ("", "arconv.rooms.v1.RoomService"):
            r = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert r.status == health_pb2.HealthCheckResponse.SERVING
        await srv.health.enter_graceful_shutdown()
        r = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert r.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_a_stopping_server_serves_calls_while_balancers_see_it_not_serving(
    settings, start_server, user_md
) -> None:
    srv = await start_server(settings, kit_spec())
    async with channel(srv.port) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        kit = pb_grpc.RoomServiceStub(ch)
        watch = health.Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.ensure_future(srv.stop(0.5, drain_delay_s=30))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
        # NOT_SERVING, and still answering: the balancer's checks have time to notice.
        r = await kit.GetRoom(pb.GetRoomRequest(room_id="r1"), metadata=user_md("alice"))
        assert r.room.user_id == "alice"
        assert not stopping.done()
        stopping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopping


async def test_reflection_lists_every_public_mesh_service(settings, start_server) -> None:
    srv = await start_server(settings, kit_spec())
    async with channel(srv.port) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        call = stub.ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        resp = await call.read()
        await call.done_writing()
        names = {s.name for s in resp.list_services_response.service}
    assert {
        "arconv.rooms.v1.RoomService",
        "arconv.stream.v1.StreamService",
        "arconv.avatar.v1.AvatarService",
        "arconv.token.v1.TokenService",
        "grpc.health.v1.Health",
    } <= names
    # Internal services are served but not advertised.
    assert not [n for n in names if n.endswith("InternalService")]


async def test_metrics_endpoint_serves_rpc_metrics(kit, user_md) -> None:
    import asyncio
    import urllib.request

    from services.common.metrics import serve_metrics

    await kit.GetRoom(pb.GetRoomRequest(room_id="r"), metadata=user_md("alice"))
    port = serve_metrics(0)
    assert port > 0
    assert serve_metrics(-1) == -1

    def fetch() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            return r.read().decode()

    body = await asyncio.to_thread(fetch)
    assert 'arconv_rpc_total{code="OK",method="GetRoom",service="kit"}' in body
    assert "arconv_rpc_duration_seconds_bucket" in body


def test_lost_database_connections_are_unavailable_and_bugs_are_not() -> None:
    import sqlite3

    from sqlalchemy import exc as sa_exc

    from services.common.errors import Unavailable
    from services.common.outage import unavailable_from

    locked = sa_exc.OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
    assert isinstance(unavailable_from(locked), Unavailable)
    missing = sa_exc.OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: x"))
    assert unavailable_from(missing) is None
    assert unavailable_from(ValueError("bug")) is None
    try:
        try:
            raise ConnectionRefusedError(111, "refused")
        except ConnectionRefusedError as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as wrapped:
        lost = unavailable_from(wrapped)
    assert lost is not None and lost.metadata["retryable"] == "true"


def test_error_details_stay_small_whatever_the_input() -> None:
    from google.rpc import error_details_pb2, status_pb2

    from services.common.errors import MAX_VIOLATIONS, InvalidArgument, NotFound
    from services.common.status import to_status

    long = "y" * 10_000  # one string for every violation: the same input, 10 KB not 1 GB
    many = InvalidArgument("x" * 100_000, violations=[(f"f[{i}]", long) for i in range(100_000)])
    status = to_status(many)
    assert len(status.details) <= 1000
    (key, raw) = next(md for md in status.trailing_metadata if md[0] == "grpc-status-details-bin")
    assert len(raw) < 8_000, (key, len(raw))
    st = status_pb2.Status.FromString(raw)
    bad = error_details_pb2.BadRequest()
    assert st.details[1].Unpack(bad)
    assert len(bad.field_violations) == MAX_VIOLATIONS
    assert (
        bad.field_violations[-1].description
        == f"and {100_000 - MAX_VIOLATIONS + 1} more violations not listed"
    )
    assert len(to_status(NotFound("room", "r" * 3_000_000)).trailing_metadata[0][1]) < 2_000


async def test_max_connection_age_ends_a_long_stream_after_the_grace(
    settings: Settings, start_server: StartServer
) -> None:
    aged = settings.model_copy(
        update={"max_connection_age_s": 0.25, "max_connection_age_grace_s": 0.25}
    )
    srv = await start_server(aged, kit_spec())
    async with channel(srv.port) as ch:
        watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest())
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await watch.read()
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - started < 10
        # The client reconnects for the next call.
        again = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
        assert again.status == health_pb2.HealthCheckResponse.SERVING


async def test_connections_live_for_ever_by_default(settings: Settings) -> None:
    from services.common.server import server_options

    assert not any(k.startswith("grpc.max_connection_age") for k, _ in server_options(settings))
