"""The edge through a real Envoy: routing, reflection, CORS, gRPC-web, internal RPCs refused."""

from __future__ import annotations

import asyncio
import http.client
import struct
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from arconv.rooms.v1 import rooms_service_pb2 as pb
from arconv.rooms.v1 import rooms_service_pb2_grpc as pb_grpc

from services.common.config import Settings
from services.common.status import status_details
from tests.common.kit_servicer import kit_spec
from tests.conftest import StartServer
from tests.edge.conftest import running_envoy

pytestmark = pytest.mark.envoy
GRPCURL = str(Path(sys.executable).parent / "grpcurl")


@pytest.fixture
async def edge(settings: Settings, start_server: StartServer, tmp_path: Path):
    srv = await start_server(settings, kit_spec())
    ups = {name: srv.port for name in ("rooms", "stream", "avatar", "token")}
    async with running_envoy(tmp_path / "envoy", ups) as cfg:
        yield cfg


def _grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRPCURL, *args], capture_output=True, text=True, timeout=60)


async def test_grpcurl_lists_every_service_through_envoy(edge) -> None:
    out = await asyncio.to_thread(_grpcurl, "-plaintext", f"127.0.0.1:{edge.listen_port}", "list")
    assert out.returncode == 0, out.stderr
    services = set(out.stdout.split())
    assert {
        "arconv.rooms.v1.RoomService",
        "arconv.stream.v1.StreamService",
        "arconv.avatar.v1.AvatarService",
        "arconv.token.v1.TokenService",
    } <= services
    desc = await asyncio.to_thread(
        _grpcurl,
        "-plaintext",
        f"127.0.0.1:{edge.listen_port}",
        "describe",
        "arconv.rooms.v1.RoomService",
    )
    assert "rpc CreateRoom" in desc.stdout


async def test_grpcurl_call_with_bearer_token_through_envoy(edge, authority) -> None:
    token = authority.mint("alice", ttl_s=60)
    out = await asyncio.to_thread(
        _grpcurl,
        "-plaintext",
        "-H",
        f"authorization: Bearer {token}",
        "-d",
        '{"room_id": "r42"}',
        f"127.0.0.1:{edge.listen_port}",
        "arconv.rooms.v1.RoomService/GetRoom",
    )
    assert out.returncode == 0, out.stderr
    assert '"user_id": "alice"' in out.stdout


async def test_native_grpc_through_envoy_keeps_status_and_details(edge, user_md) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.listen_port}") as ch:
        stub = pb_grpc.RoomServiceStub(ch)
        r = await stub.GetRoom(pb.GetRoomRequest(room_id="r1"), metadata=user_md("alice"))
        assert r.room.user_id == "alice"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetRoom(pb.GetRoomRequest(room_id="missing"), metadata=user_md("alice"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert any(type(d).__name__ == "ResourceInfo" for d in status_details(err.value))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetRoom(pb.GetRoomRequest(room_id="r1"))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_internal_rpc_is_refused_at_the_edge_whatever_the_token(edge, service_md) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.listen_port}") as ch:
        stub = pb_grpc.RoomInternalServiceStub(ch)
        # The upstream would accept this service token; the edge must not forward it.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.AppendMessage(
                pb.AppendMessageRequest(room_id="r1"), metadata=service_md("alice")
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_the_edge_strips_acting_for_user_headers(edge, service_md) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.listen_port}") as ch:
        stub = pb_grpc.RoomServiceStub(ch)
        r = await stub.GetRoom(pb.GetRoomRequest(room_id="r1"), metadata=service_md("victim"))
        assert r.room.user_id == ""


def _grpc_web_call(port: int, path: str, message: bytes, headers: dict[str, str]):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = b"\x00" + struct.pack(">I", len(message)) + message
    conn.request(
        "POST",
        path,
        body=body,
        headers={
            "content-type": "application/grpc-web+proto",
            "x-grpc-web": "1",
            "origin": "http://localhost:5173",
            **headers,
        },
    )
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    frames: list[tuple[int, bytes]] = []
    i = 0
    while i + 5 <= len(data):
        flag, length = data[i], struct.unpack(">I", data[i + 1 : i + 5])[0]
        frames.append((flag, data[i + 5 : i + 5 + length]))
        i += 5 + length
    trailers: dict[str, str] = {k.lower(): v for k, v in resp.getheaders()}
    for flag, payload in frames:
        if flag & 0x80:
            for line in payload.decode().split("\r\n"):
                if ":" in line:
                    k, v = line.split(":", 1)
                    trailers[k.strip().lower()] = v.strip()
    messages = [p for f, p in frames if not f & 0x80]
    return resp, messages, trailers


async def test_grpc_web_unary_call_through_envoy(edge, authority) -> None:
    token = authority.mint("alice", ttl_s=60)
    resp, messages, trailers = await asyncio.to_thread(
        _grpc_web_call,
        edge.listen_port,
        "/arconv.rooms.v1.RoomService/GetRoom",
        pb.GetRoomRequest(room_id="web1").SerializeToString(),
        {"authorization": f"Bearer {token}"},
    )
    assert resp.status == 200
    assert trailers.get("grpc-status") == "0"
    assert pb.GetRoomResponse.FromString(messages[0]).room.user_id == "alice"
    assert resp.getheader("access-control-allow-origin") == "http://localhost:5173"


async def test_grpc_web_errors_and_internal_refusal(edge, authority) -> None:
    token = authority.mint("alice", ttl_s=60)
    _, _, trailers = await asyncio.to_thread(
        _grpc_web_call,
        edge.listen_port,
        "/arconv.rooms.v1.RoomService/GetRoom",
        pb.GetRoomRequest(room_id="missing").SerializeToString(),
        {"authorization": f"Bearer {token}"},
    )
    assert trailers.get("grpc-status") == str(grpc.StatusCode.NOT_FOUND.value[0])
    assert "grpc-status-details-bin" in trailers
    svc = authority.mint("service:x", ttl_s=60, role="service")
    _, _, trailers = await asyncio.to_thread(
        _grpc_web_call,
        edge.listen_port,
        "/arconv.rooms.v1.RoomInternalService/AppendMessage",
        pb.AppendMessageRequest(room_id="r").SerializeToString(),
        {"authorization": f"Bearer {svc}"},
    )
    assert trailers.get("grpc-status") == str(grpc.StatusCode.PERMISSION_DENIED.value[0])


def _preflight(port: int, origin: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(
        "OPTIONS",
        "/arconv.rooms.v1.RoomService/GetRoom",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type,x-grpc-web",
        },
    )
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


async def test_cors_preflight_allows_local_origins_only(edge) -> None:
    for origin in ("http://localhost:5173", "http://127.0.0.1:8000", "http://localhost"):
        resp = await asyncio.to_thread(_preflight, edge.listen_port, origin)
        assert resp.getheader("access-control-allow-origin") == origin
        assert "POST" in (resp.getheader("access-control-allow-methods") or "")
        allowed = (resp.getheader("access-control-allow-headers") or "").lower()
        assert "authorization" in allowed and "x-grpc-web" in allowed
    for origin in ("https://evil.example", "http://localhost.evil.example"):
        resp = await asyncio.to_thread(_preflight, edge.listen_port, origin)
        assert resp.getheader("access-control-allow-origin") is None


async def test_cors_origins_are_configurable(settings, start_server, tmp_path) -> None:
    srv = await start_server(settings, kit_spec())
    ups = {name: srv.port for name in ("rooms", "stream", "avatar", "token")}
    async with running_envoy(tmp_path / "e2", ups, cors_origins=["https://app.example.com"]) as cfg:
        ok = await asyncio.to_thread(_preflight, cfg.listen_port, "https://app.example.com")
        assert ok.getheader("access-control-allow-origin") == "https://app.example.com"
        local = await asyncio.to_thread(_preflight, cfg.listen_port, "http://localhost:5173")
        assert local.getheader("access-control-allow-origin") is None
        resp, _, _ = await asyncio.to_thread(
            _grpc_web_call,
            cfg.listen_port,
            "/arconv.rooms.v1.RoomService/GetRoom",
            b"",
            {"origin": "https://app.example.com"},
        )
        assert resp.getheader("access-control-allow-origin") == "https://app.example.com"
        expose = (resp.getheader("access-control-expose-headers") or "").lower()
        for header in ("grpc-status", "grpc-message", "grpc-status-details-bin"):
            assert header in expose
