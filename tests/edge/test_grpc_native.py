"""Native gRPC through the same Envoy port: grpcurl by reflection, Converse, internal services."""

from __future__ import annotations

import json

import grpc
import pytest
from arconv.avatar.v1 import avatar_service_pb2
from arconv.rooms.v1 import rooms_service_pb2
from arconv.stream.v1 import stream_service_pb2
from arconv.token.v1 import token_service_pb2
from arconv.voice.v1 import voice_service_pb2

from services.common.status import status_details
from tests.edge.mesh_fixtures import EdgeMesh, edge_mesh, json_documents, trailer_status

__all__ = ["edge_mesh"]
pytestmark = pytest.mark.envoy

SERVICES = {
    "arconv.rooms.v1.RoomService": ("CreateRoom", "GetRoom", "ListMessages"),
    "arconv.stream.v1.StreamService": ("Converse", "Subscribe", "SendMessage", "Interrupt"),
    "arconv.avatar.v1.AvatarService": ("ListAgents", "GenerateAvatar", "WatchAvatar"),
    "arconv.token.v1.TokenService": ("IssueProviderToken", "GetJwks"),
}


def _internal_methods() -> tuple[tuple[str, str], ...]:
    """(server name, "/pkg.Service/Method") of every method of every `*InternalService`."""
    out = []
    modules = (rooms_service_pb2, stream_service_pb2, avatar_service_pb2, token_service_pb2)
    for module in (*modules, voice_service_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            if service.name.endswith("InternalService"):
                server = service.full_name.split(".")[1]  # arconv.<server>.v1.X
                out += [(server, f"/{service.full_name}/{m.name}") for m in service.methods]
    return tuple(out)


INTERNAL = _internal_methods()


def test_every_internal_rpc_is_in_an_internal_service() -> None:
    assert sorted(m for _, m in INTERNAL) == [
        "/arconv.avatar.v1.AvatarInternalService/UpsertAgent",
        "/arconv.rooms.v1.RoomInternalService/AppendMessage",
        "/arconv.stream.v1.StreamInternalService/NotifyRoomState",
        "/arconv.token.v1.TokenInternalService/RefundProviderUsage",
        "/arconv.token.v1.TokenInternalService/RevokeRoomTokens",
        "/arconv.token.v1.TokenInternalService/VerifyProviderToken",
    ]


async def test_grpcurl_lists_and_describes_every_public_service(edge_mesh: EdgeMesh) -> None:
    listed = await edge_mesh.grpcurl(edge_mesh.target, "list")
    assert listed.returncode == 0, listed.stderr
    assert set(SERVICES) | {"grpc.health.v1.Health"} <= set(listed.stdout.split())
    # Reflection through the edge advertises the public services only.
    assert [s for s in listed.stdout.split() if s.endswith("InternalService")] == []
    for service, rpcs in SERVICES.items():
        desc = await edge_mesh.grpcurl(edge_mesh.target, "describe", service)
        assert desc.returncode == 0, desc.stderr
        assert f"service {service.rsplit('.', 1)[1]} {{" in desc.stdout
        for rpc in rpcs:
            assert f"rpc {rpc} (" in desc.stdout, (service, rpc)
    message = await edge_mesh.grpcurl(
        edge_mesh.target, "describe", "arconv.stream.v1.ConverseResponse"
    )
    assert "stream_chunk" in message.stdout and "event_id" in message.stdout


async def test_grpcurl_converse_exchange_through_envoy(edge_mesh: EdgeMesh) -> None:
    token = edge_mesh.token("alice")
    created = await edge_mesh.grpcurl(
        "-d", '{"agent_id": "willow"}', edge_mesh.target, "arconv.rooms.v1.RoomService/CreateRoom",
        token=token,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    room_id = json.loads(created.stdout)["room"]["room_id"]
    requests = "\n".join(
        json.dumps(r)
        for r in (
            {"join": {"room_id": room_id}},
            {"message": {"content": "Tell me a short story, Willow.", "client_message_id": "g1"}},
        )
    )
    # grpcurl sends both, half-closes, and the server ends the call once the reply has ended.
    out = await edge_mesh.grpcurl(
        "-d", "@", edge_mesh.target, "arconv.stream.v1.StreamService/Converse",
        token=token, stdin=requests,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    events = json_documents(out.stdout)
    kinds = [next(k for k in e if k != "event_id") for e in events]
    assert kinds[0] == "joined" and kinds[1] == "message_accepted"
    assert kinds.index("stream_started") < kinds.index("stream_chunk") < kinds.index("stream_ended")
    assert kinds[-1] == "stream_ended" and "speech_cue" in kinds
    accepted = events[1]["message_accepted"]
    started = next(e["stream_started"] for e in events if "stream_started" in e)
    assert started["message_id"] == accepted["message_id"]
    assert started["agent_id"] == "willow"
    chunks = [e["stream_chunk"] for e in events if "stream_chunk" in e]
    assert "[" not in "".join(c.get("text", "") for c in chunks)
    assert any(c.get("markers") for c in chunks)
    ended = events[-1]["stream_ended"]
    assert ended["reason"] == "STREAM_END_REASON_COMPLETED"
    assert ended["total_chunks"] == len(chunks) and ended["agent_message_id"]


async def test_internal_services_are_refused_at_the_edge_over_grpc(edge_mesh: EdgeMesh) -> None:
    svc = (("authorization", f"Bearer {edge_mesh.service_token()}"),)
    async with grpc.aio.insecure_channel(edge_mesh.target) as edge:
        for name, method in INTERNAL:
            for md in (svc, edge_mesh.md("alice"), ()):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await edge.unary_unary(method)(b"", metadata=md, timeout=10)
                assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, method
                info = [d for d in status_details(err.value) if type(d).__name__ == "ErrorInfo"]
                assert [(i.reason, i.domain) for i in info] == [("INTERNAL_METHOD", "arconv.dev")]
            # The same call with the same service token goes through to the service itself:
            # the refusal is the edge's, not the service's.
            async with grpc.aio.insecure_channel(f"127.0.0.1:{edge_mesh.ports[name]}") as direct:
                try:
                    await direct.unary_unary(method)(b"", metadata=svc, timeout=10)
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() not in (
                        grpc.StatusCode.PERMISSION_DENIED,
                        grpc.StatusCode.UNAUTHENTICATED,
                        grpc.StatusCode.UNIMPLEMENTED,
                    ), (method, exc)


async def test_internal_services_are_refused_at_the_edge_over_grpc_web(
    edge_mesh: EdgeMesh,
) -> None:
    for _, method in INTERNAL:
        for token in (edge_mesh.service_token(), edge_mesh.token("alice"), None):
            out = await edge_mesh.buf_curl(method.lstrip("/"), {}, token=token, args=["-v"])
            assert out.returncode != 0
            err = out.error()
            assert err["code"] == "permission_denied", (method, err)
            assert "internal RPC" in err["message"]
            assert "HTTP/1.1 200 OK" in out.stderr  # a gRPC status, not an HTTP error
            status = trailer_status(out.stderr)
            assert status.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
            assert [d.type_url for d in status.details] == [
                "type.googleapis.com/google.rpc.ErrorInfo"
            ]
