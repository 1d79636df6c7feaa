"""Long conversation streams through Envoy: nothing cuts an idle Subscribe.

The edge disables stream and route idle timeouts and pings both sides with HTTP/2 keepalive
(clients every 30 s, services every 10 s); the services' servers accept pings down to one per
5 s without data, so Envoy's pings never earn a GOAWAY too_many_pings. The slow test holds a
native gRPC Subscribe (HTTP/2) and a gRPC-web one (buf curl, HTTP/1.1) idle for five real
minutes, then checks a message sent with SendMessage still arrives on both.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from arconv.stream.v1 import stream_service_pb2 as pb
from arconv.stream.v1 import stream_service_pb2_grpc as pb_grpc

from services.common.config import Settings
from services.common.server import channel_options
from tests.edge.conftest import running_envoy
from tests.edge.mesh_fixtures import ROOT, BufStream, EdgeMesh, edge_mesh

__all__ = ["edge_mesh"]
pytestmark = pytest.mark.envoy

IDLE_S = 300
STREAM = "arconv.stream.v1.StreamService"


def _server_min_ping_interval_s() -> float:
    """The servers' grpc.http2.min_ping_interval_without_data_ms (services/common/server.py)."""
    source = (ROOT / "services" / "common" / "server.py").read_text()
    found = re.search(r'"grpc\.http2\.min_ping_interval_without_data_ms",\s*(\d+)', source)
    assert found, "the servers no longer set a minimum ping interval; check Envoy's keepalive"
    return int(found.group(1)) / 1000


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return str(resp.read().decode())


async def envoy_stats(mesh: EdgeMesh) -> dict[str, int]:
    text = await asyncio.to_thread(_get, mesh.edge.admin_port, "/stats?usedonly")
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            out[name] = int(value)
    return out


def _seconds(value: str) -> float:
    assert value.endswith("s"), value
    return float(value[:-1])


async def test_envoy_never_times_out_streams_and_pings_within_the_servers_limits(
    edge_mesh: EdgeMesh,
) -> None:
    dump = json.loads(await asyncio.to_thread(_get, edge_mesh.edge.admin_port, "/config_dump"))
    text = json.dumps(dump)
    listeners = next(c for c in dump["configs"] if "ListenersConfigDump" in c["@type"])
    hcm = listeners["static_listeners"][0]["listener"]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]
    # Unset or 0s: no limit on how long a stream, or a request, may stay open or idle.
    assert _seconds(hcm.get("stream_idle_timeout", "0s")) == 0
    assert _seconds(hcm.get("request_timeout", "0s")) == 0
    assert "max_stream_duration" not in text
    assert _seconds(hcm["http2_protocol_options"]["connection_keepalive"]["interval"]) >= 10
    # Every route but the JWKS document (a plain GET, answered in one response).
    routes = [
        r
        for vh in hcm["route_config"]["virtual_hosts"]
        for r in vh["routes"]
        if "route" in r and r["match"].get("path") != "/.well-known/jwks.json"
    ]
    assert routes
    for r in routes:
        assert _seconds(r["route"]["timeout"]) == 0, r
        assert _seconds(r["route"]["idle_timeout"]) == 0, r
    clusters = next(c for c in dump["configs"] if "ClustersConfigDump" in c["@type"])
    grpc_clusters = [
        c for c in clusters["static_clusters"] if "typed_extension_protocol_options" in c["cluster"]
    ]
    # Only the voice service's OpenAI-compatible HTTP/1.1 listener is not an HTTP/2 upstream.
    assert {c["cluster"]["name"] for c in clusters["static_clusters"]} - {
        c["cluster"]["name"] for c in grpc_clusters
    } == {"voice_http"}
    for c in grpc_clusters:
        opts = c["cluster"]["typed_extension_protocol_options"]
        http = next(iter(opts.values()))["explicit_http_config"]["http2_protocol_options"]
        keepalive = http["connection_keepalive"]
        # Envoy's pings to a service: far apart enough for the server's ping policy.
        assert _seconds(keepalive["interval"]) >= 2 * _server_min_ping_interval_s()
        assert _seconds(keepalive["timeout"]) > 0
    # And the clients' own keepalive stays within what the servers accept.
    assert Settings().keepalive_time_s >= _server_min_ping_interval_s()


def _timer_of_connection(port: int) -> str | None:
    """The kernel timer of the established TCP connection on local `port` (Linux), if any."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, timer = fields[1], fields[3], fields[5]
        if int(local.split(":")[1], 16) == port and state == "01":  # ESTABLISHED
            return timer.split(":")[0]  # 02: the keepalive timer
    return None


async def test_client_connections_get_tcp_keepalive(tmp_path: Path) -> None:
    ups = {name: 1 for name in ("rooms", "stream", "avatar", "token")}
    async with running_envoy(tmp_path, ups) as edge:
        with socket.create_connection(("127.0.0.1", edge.listen_port)):
            # Envoy accepts on its own thread; the kernel's table shows it soon after.
            for _ in range(200):
                timer = _timer_of_connection(edge.listen_port)
                if timer is not None:
                    break
                await asyncio.sleep(0.01)
            assert timer == "02", "no keepalive timer on the accepted connection"


async def _read_until_ended(call: Any, stream_id: str) -> list[pb.ConverseResponse]:
    events = []
    while True:
        res = await asyncio.wait_for(call.read(), 60)
        assert res is not grpc.aio.EOF, "the Subscribe stream ended"
        events.append(res.event)
        ended = res.event.stream_ended
        if res.event.HasField("stream_ended") and ended.stream_id == stream_id:
            return events


@pytest.mark.slow
@pytest.mark.timeout(IDLE_S + 300)
async def test_idle_subscribe_stays_open_for_five_minutes(edge_mesh: EdgeMesh) -> None:
    token = edge_mesh.token("alice")
    created = await edge_mesh.buf_curl(
        "arconv.rooms.v1.RoomService/CreateRoom", {"agent_id": "nova"}, token=token
    )
    room_id = created.messages()[0]["room"]["roomId"]
    options = channel_options(Settings())
    async with grpc.aio.insecure_channel(edge_mesh.target, options=options) as ch:
        native = pb_grpc.StreamServiceStub(ch).Subscribe(
            pb.SubscribeRequest(room_id=room_id), metadata=edge_mesh.md("alice")
        )
        web = await BufStream.start(
            edge_mesh.url, f"{STREAM}/Subscribe", {"room_id": room_id}, token=token
        )
        try:
            first = await asyncio.wait_for(native.read(), 30)
            assert first.event.HasField("joined")
            assert "joined" in (await web.next())["event"]
            before = await envoy_stats(edge_mesh)

            # Nothing flows on either stream for five minutes: the idle time is the test.
            await asyncio.sleep(IDLE_S)

            sent = await edge_mesh.buf_curl(
                f"{STREAM}/SendMessage",
                {"room_id": room_id, "content": "Still there, Nova?", "client_message_id": "late"},
                token=token,
            )
            assert sent.returncode == 0, sent.stderr
            stream_id = sent.messages()[0]["streamId"]
            native_events = await _read_until_ended(native, stream_id)
            web_events = await web.until("streamEnded", wait_s=60)
            after = await envoy_stats(edge_mesh)
        finally:
            native.cancel()
            await web.close()

    assert native_events[-1].stream_ended.reason == pb.STREAM_END_REASON_COMPLETED
    assert web_events[-1]["streamEnded"]["reason"] == "STREAM_END_REASON_COMPLETED"
    native_text = "".join(e.stream_chunk.text for e in native_events if e.HasField("stream_chunk"))
    web_text = "".join(e["streamChunk"].get("text", "") for e in web_events if "streamChunk" in e)
    assert native_text and native_text == web_text

    def grew(name: str) -> int:
        return after.get(name, 0) - before.get(name, 0)

    # Nothing was cut or reconnected while idle: no timeouts, resets or closed connections
    # with requests on them, no keepalive failure, no new connection to the stream service.
    for name in (
        "http.edge.downstream_rq_idle_timeout",
        "http.edge.downstream_cx_idle_timeout",
        "http.edge.downstream_cx_destroy_remote_active_rq",
        "http.edge.downstream_cx_destroy_local_active_rq",
        "http.edge.downstream_rq_rx_reset",
        "http.edge.downstream_rq_tx_reset",
        "cluster.stream.upstream_rq_timeout",
        "cluster.stream.upstream_rq_per_try_idle_timeout",
        "cluster.stream.upstream_rq_rx_reset",
        "cluster.stream.upstream_rq_tx_reset",
        "cluster.stream.upstream_cx_destroy_remote_with_active_rq",
        "cluster.stream.upstream_cx_destroy_local_with_active_rq",
        "cluster.stream.upstream_cx_idle_timeout",
        "cluster.stream.upstream_cx_destroy",  # a GOAWAY (too_many_pings) closes it
        "cluster.stream.http2.keepalive_timeout",
        "cluster.stream.http2.rx_reset",
        "cluster.stream.http2.tx_reset",
        "http2.keepalive_timeout",
        "http2.rx_reset",
        "http2.tx_reset",
    ):
        assert grew(name) == 0, (name, before.get(name), after.get(name))
    # (No check on upstream_cx_total: each Envoy worker keeps its own upstream pool, so the
    # late SendMessage may open a connection on another worker without anything being cut.)
    assert after.get("cluster.stream.upstream_cx_active", 0) >= 1
