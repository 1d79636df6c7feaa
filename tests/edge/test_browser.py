"""A real browser: headless Chromium runs the web client (connect-web over gRPC-web) via Envoy.

The page in web/ is built from the protos with protoc-gen-es and bundled with esbuild
(`make web`); a static server on a free port serves it, and playwright-core drives Debian's
Chromium through web/e2e/run.mjs, which prints what the page shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import grpc
import pytest
from arconv.rooms.v1 import rooms_service_pb2 as rooms_pb
from arconv.rooms.v1 import rooms_service_pb2_grpc as rooms_grpc

from tests.conftest import REQUIRE_SERVICES
from tests.edge.mesh_fixtures import ROOT, EdgeMesh, edge_mesh

__all__ = ["edge_mesh"]
pytestmark = [pytest.mark.envoy, pytest.mark.browser]

# Debian's Chromium (`make browser-setup`); ARCONV_CHROMIUM points elsewhere.
CHROMIUM = Path(os.environ.get("ARCONV_CHROMIUM", "/usr/bin/chromium"))
WEB = ROOT / "web"
MARKER = re.compile(r"^(emotion|gesture|tone|pose):[a-z_]+$")


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        why = f"Chromium not found at {CHROMIUM}; run `make browser-setup` to install it"
        if REQUIRE_SERVICES:
            pytest.fail(f"{why} (ARCONV_REQUIRE_SERVICES=1 requires the browser test)")
        pytest.skip(why)
    return CHROMIUM


@pytest.fixture
async def bundle(chromium: Path) -> Path:
    """web/dist, built by `make web` (npm ci, buf generate, type check, esbuild) when stale."""
    if shutil.which("node") is None:
        pytest.fail("node is not installed; the browser test drives Chromium with playwright-core")
    built = await asyncio.to_thread(
        subprocess.run,
        ["make", "-s", "web"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return WEB / "dist"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def static_server(directory: Path) -> Iterator[str]:
    """Serves `directory` on a free port of 127.0.0.1; yields its origin."""
    handler = functools.partial(_Quiet, directory=str(directory))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _drive(
    url: str, user_data_dir: Path, message: str, screenshot: Path | None = None
) -> dict[str, object]:
    env = {"CHROMIUM": str(CHROMIUM), "PATH": "/usr/bin:/bin"}
    if screenshot is not None:
        env["ARCONV_BROWSER_SCREENSHOT"] = str(screenshot)
    out = subprocess.run(
        ["node", "e2e/run.mjs", url, str(user_data_dir), message, "nova"],
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


async def test_browser_talks_to_an_agent_over_grpc_web(
    bundle: Path, edge_mesh: EdgeMesh, tmp_path: Path
) -> None:
    token = edge_mesh.token("alice")
    with static_server(bundle) as origin:
        url = f"{origin}/index.html?" + urlencode({"edge": edge_mesh.url, "token": token})
        page = await asyncio.to_thread(
            _drive,
            url,
            tmp_path / "chromium-profile",
            "Hello Nova, wave at me!",
            tmp_path / "page.png",
        )

    assert page["error"] == "", page
    assert not [line for line in page["console"] if line.startswith(("error", "pageerror"))]
    assert "HeadlessChrome" in str(page["userAgent"]) or "Chrome" in str(page["userAgent"])
    agents = page["agents"]
    assert isinstance(agents, list)
    assert {a["name"] for a in agents} == {"Nova", "Atlas", "Willow"}
    assert page["roomStatus"] == "ACTIVE" and page["subscription"] == "subscribed"
    assert page["streamStatus"] == "ended: COMPLETED"
    reply = str(page["reply"])
    assert reply.strip() and "[" not in reply and "]" not in reply
    markers = page["markers"]
    assert isinstance(markers, list) and markers
    assert all(MARKER.match(m) for m in markers), markers
    # Every call went through Envoy as gRPC-web, from the page's own origin.
    requests = page["requests"]
    assert isinstance(requests, list) and requests
    for req in requests:
        assert req["url"].startswith(edge_mesh.url + "/arconv."), req
        assert req["type"] == "application/grpc-web+proto", req
    assert {r["url"].rsplit("/", 1)[1] for r in requests} >= {
        "ListAgents",
        "CreateRoom",
        "Subscribe",
        "SendMessage",
    }

    # What the page shows is what the mesh stored: the reply's text without its markers, and
    # each marker in the content as generated.
    async with grpc.aio.insecure_channel(edge_mesh.target) as ch:
        stored = await rooms_grpc.RoomServiceStub(ch).ListMessages(
            rooms_pb.ListMessagesRequest(room_id=str(page["roomId"]), page_size=50),
            metadata=edge_mesh.md("alice"),
        )
    agent_messages = [m for m in stored.messages if m.sender_type == rooms_pb.SENDER_TYPE_AGENT]
    assert len(agent_messages) == 1
    answer = agent_messages[0]
    assert answer.stream_id == page["streamId"]
    assert answer.status == rooms_pb.MESSAGE_STATUS_COMPLETE
    assert answer.text == reply
    for marker in markers:
        assert marker.split(":", 1)[1] in answer.content
    assert len(reply) > 0 and page["chunks"] >= 1
    assert (tmp_path / "page.png").stat().st_size > 0
