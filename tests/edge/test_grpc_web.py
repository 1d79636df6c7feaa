"""gRPC-web through Envoy with a real third-party client: `buf curl --protocol grpcweb`.

buf curl speaks gRPC-web over HTTP/1.1 to an http:// URL, as browsers do, with the schema
taken from protos/. The services behind Envoy are the real four, on SQLite.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request
import uuid

import jwt
import pytest

from tests.edge.mesh_fixtures import BufStream, EdgeMesh, edge_mesh, trailer_status

__all__ = ["edge_mesh"]
pytestmark = pytest.mark.envoy

AGENTS = "arconv.avatar.v1.AvatarService"
ROOMS = "arconv.rooms.v1.RoomService"
STREAM = "arconv.stream.v1.StreamService"
TOKEN = "arconv.token.v1.TokenService"
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"


async def _room(mesh: EdgeMesh, token: str, agent_id: str = "nova") -> str:
    out = await mesh.buf_curl(f"{ROOMS}/CreateRoom", {"agent_id": agent_id}, token=token)
    assert out.returncode == 0, out.stderr
    return str(out.messages()[0]["room"]["roomId"])


async def test_unary_calls_over_grpc_web(edge_mesh: EdgeMesh) -> None:
    token = edge_mesh.token("alice")
    agents = await edge_mesh.buf_curl(f"{AGENTS}/ListAgents", {}, token=token)
    assert agents.returncode == 0, agents.stderr
    listed = agents.messages()[0]["agents"]
    assert {a["agentId"] for a in listed} == {"nova", "atlas", "willow"}
    assert {a["name"] for a in listed} == {"Nova", "Atlas", "Willow"}

    created = await edge_mesh.buf_curl(f"{ROOMS}/CreateRoom", {"agent_id": "nova"}, token=token)
    assert created.returncode == 0, created.stderr
    room = created.messages()[0]["room"]
    assert room["userId"] == "alice" and room["agentId"] == "nova"
    assert room["status"] == "ROOM_STATUS_ACTIVE"
    again = await edge_mesh.buf_curl(f"{ROOMS}/CreateRoom", {"agent_id": "nova"}, token=token)
    assert again.messages()[0] == {"room": again.messages()[0]["room"], "resumed": True}
    assert again.messages()[0]["room"]["roomId"] == room["roomId"]

    got = await edge_mesh.buf_curl(f"{ROOMS}/GetRoom", {"room_id": room["roomId"]}, token=token)
    assert got.returncode == 0, got.stderr
    assert got.messages()[0]["room"]["agent"]["name"] == "Nova"

    sent = await edge_mesh.buf_curl(
        f"{STREAM}/SendMessage",
        {"room_id": room["roomId"], "content": "Hello Nova!", "client_message_id": "w1"},
        token=token,
    )
    assert sent.returncode == 0, sent.stderr
    reply = sent.messages()[0]
    assert reply["messageId"] and reply["streamId"]
    # Another user sees nothing of alice's room.
    other = await edge_mesh.buf_curl(
        f"{ROOMS}/GetRoom", {"room_id": room["roomId"]}, token=edge_mesh.token("mallory")
    )
    assert other.returncode != 0
    assert other.error()["code"] == "not_found"


async def test_subscribe_streams_the_reply_to_send_message(edge_mesh: EdgeMesh) -> None:
    token = edge_mesh.token("alice")
    room_id = await _room(edge_mesh, token)
    sub = await BufStream.start(
        edge_mesh.url, f"{STREAM}/Subscribe", {"room_id": room_id}, token=token
    )
    try:
        first = (await sub.next())["event"]
        assert first["joined"]["roomId"] == room_id
        sent = await edge_mesh.buf_curl(
            f"{STREAM}/SendMessage",
            {"room_id": room_id, "content": "Wave hello, Nova!", "client_message_id": "w1"},
            token=token,
        )
        assert sent.returncode == 0, sent.stderr
        stream_id = sent.messages()[0]["streamId"]
        events = await sub.until("streamEnded")
    finally:
        await sub.close()
    kinds = [next(k for k in e if k != "eventId") for e in events]
    assert "streamStarted" in kinds
    assert kinds.index("streamStarted") < kinds.index("streamChunk")
    started = next(e["streamStarted"] for e in events if "streamStarted" in e)
    assert started["streamId"] == stream_id and started["agentId"] == "nova"
    chunks = [e["streamChunk"] for e in events if "streamChunk" in e]
    assert [c.get("chunkIndex", 0) for c in chunks] == list(range(len(chunks)))
    text = "".join(c.get("text", "") for c in chunks)
    assert text.strip() and "[" not in text
    markers = [m for c in chunks for m in c.get("markers", [])]
    assert markers, "the persona reply carries markers"
    assert all(m["type"].startswith("MARKER_TYPE_") and m["value"] for m in markers)
    ended = events[-1]["streamEnded"]
    assert ended["streamId"] == stream_id
    assert ended["reason"] == "STREAM_END_REASON_COMPLETED"
    assert ended["totalChunks"] == len(chunks)
    ids = [int(e["eventId"]) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


async def test_watch_avatar_after_generate_over_grpc_web(edge_mesh: EdgeMesh) -> None:
    token = edge_mesh.token("alice")
    gen = await edge_mesh.buf_curl(f"{AGENTS}/GenerateAvatar", {"agent_id": "atlas"}, token=token)
    assert gen.returncode == 0, gen.stderr
    assert gen.messages()[0]["avatar"]["agentId"] == "atlas"
    watch = await BufStream.start(
        edge_mesh.url, f"{AGENTS}/WatchAvatar", {"agent_id": "atlas"}, token=token
    )
    try:
        rc, err = await watch.finish(wait_s=120)
    finally:
        await watch.close()
    assert rc == 0, err
    statuses = [m["avatar"]["status"] for m in watch.seen]
    assert statuses and statuses[-1] == "AVATAR_STATUS_READY"
    final = watch.seen[-1]["avatar"]
    assert [lod.get("level", 0) for lod in final["lods"]] == [0, 1, 2]


async def test_errors_come_back_as_grpc_web_status_with_details(edge_mesh: EdgeMesh) -> None:
    token = edge_mesh.token("alice")
    bad = await edge_mesh.buf_curl(
        f"{ROOMS}/GetRoom", {"room_id": "not-a-room"}, token=token, args=["-v"]
    )
    assert bad.returncode != 0
    err = bad.error()
    assert err["code"] == "invalid_argument" and "room_id" in err["message"]
    assert {d["type"] for d in err["details"]} == {"google.rpc.ErrorInfo", "google.rpc.BadRequest"}
    status = trailer_status(bad.stderr)
    assert status.code == 3 and status.message == err["message"]
    assert [d.type_url for d in status.details] == [
        ERROR_INFO,
        "type.googleapis.com/google.rpc.BadRequest",
    ]

    missing = await edge_mesh.buf_curl(
        f"{ROOMS}/GetRoom", {"room_id": str(uuid.uuid4())}, token=token, args=["-v"]
    )
    assert missing.error()["code"] == "not_found"
    assert "type.googleapis.com/google.rpc.ResourceInfo" in [
        d.type_url for d in trailer_status(missing.stderr).details
    ]

    anonymous = await edge_mesh.buf_curl(f"{AGENTS}/ListAgents", {})
    assert anonymous.error()["code"] == "unauthenticated"

    room_id = await _room(edge_mesh, token)
    empty = await edge_mesh.buf_curl(
        f"{STREAM}/SendMessage",
        {"room_id": room_id, "content": "", "client_message_id": "e1"},
        token=token,
        args=["-v"],
    )
    assert empty.error()["code"] == "invalid_argument"
    assert trailer_status(empty.stderr).code == 3

    # A streaming call refused: the status arrives in the gRPC-web trailers of the stream.
    sub = await edge_mesh.buf_curl(
        f"{STREAM}/Subscribe", {"room_id": str(uuid.uuid4())}, token=token, args=["-v"]
    )
    assert sub.error()["code"] == "not_found"
    assert trailer_status(sub.stderr).code == 5


async def test_buf_curl_error_details_decode_as_the_readme_shows(edge_mesh: EdgeMesh) -> None:
    """buf curl prints each detail as a type and base64 (its schema has no google.rpc types);
    the README pipes that into `python -m services.cli details`, which prints the fields."""
    bad = await edge_mesh.buf_curl(
        f"{ROOMS}/GetRoom", {"room_id": "nope"}, token=edge_mesh.token("alice")
    )
    raw = bad.error()["details"]
    assert [set(d) for d in raw] == [{"type", "value"}, {"type", "value"}]
    decoded = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli", "details"],
        input=bad.stderr,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert decoded.returncode == 0, decoded.stderr
    error = json.loads(decoded.stdout)
    assert error["code"] == "invalid_argument"
    details = {d["@type"].rsplit("/", 1)[1]: d for d in error["details"]}
    assert details["google.rpc.ErrorInfo"]["domain"] == "arconv.dev"
    assert details["google.rpc.ErrorInfo"]["reason"]
    assert [v["field"] for v in details["google.rpc.BadRequest"]["fieldViolations"]] == ["room_id"]


async def test_jwks_is_served_where_verifiers_look_and_verifies_a_fresh_token(
    edge_mesh: EdgeMesh,
) -> None:
    """GET /.well-known/jwks.json on the edge: no authorization, cacheable, the keys of GetJwks;
    PyJWT's PyJWKClient verifies a provider token just issued through the edge with it."""
    url = f"{edge_mesh.url}/.well-known/jwks.json"
    response = await asyncio.to_thread(urllib.request.urlopen, url, timeout=30)
    assert response.status == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "public, max-age=300"
    jwks = json.loads(response.read())
    listed = await edge_mesh.buf_curl(f"{TOKEN}/GetJwks", {})
    assert [k["kid"] for k in jwks["keys"]] == [k["kid"] for k in listed.messages()[0]["keys"]]
    assert {k["kty"] for k in jwks["keys"]} == {"OKP"}

    token = edge_mesh.token("alice")
    room_id = await _room(edge_mesh, token)
    issued = await edge_mesh.buf_curl(
        f"{TOKEN}/IssueProviderToken",
        {"room_id": room_id, "operations": ["tts.synthesize"]},
        token=token,
    )
    assert issued.returncode == 0, issued.stderr
    provider_token = issued.messages()[0]["token"]
    client = jwt.PyJWKClient(url)
    key = await asyncio.to_thread(client.get_signing_key_from_jwt, provider_token)
    claims = jwt.decode(
        provider_token, key, algorithms=["EdDSA"], audience="arconv-tts", issuer="arconv-token"
    )
    assert claims["sub"] == "alice"
    # Only GET: a POST to the same path is not an RPC of any kind.
    post = urllib.request.Request(url, data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        await asyncio.to_thread(urllib.request.urlopen, post, timeout=30)
    assert refused.value.code == 404
